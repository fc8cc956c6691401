"""The ETGNN network (Section III of the paper) and its tensor heads (Section II, Eqs. 1-8), assembled from the
building blocks and paper equations of ``ase_etgnn.layers``.

One shared trunk (a DimeNet++-style edge network with ETGNN's extra triplet messages) produces invariant
edge messages ``m_kj``, triplet messages ``m_kji`` and node features ``h_j``. Generic heads, chosen by the
property registry (rank, per-atom or per-structure, symmetry), map them to invariant coefficients and
expand them on products of unit edge vectors, which makes every output O(3)-equivariant by construction.

Beyond the paper (each is a config option, documented in README):
* every edge and triplet contribution is multiplied by smooth envelopes, so outputs are continuous when
  atoms cross the cutoff or the (optional, smaller) triplet cutoff;
* rank-2 heads can add an isotropic term ``s_j I`` from node features (``isotropic=True``);
* ``zero_net_force`` symmetrises pair coefficients ``t_kj = t_jk`` so direct forces sum to zero exactly;
* ``bec_asr`` enforces the acoustic sum rule ``sum_a Z_a = 0`` per structure exactly.

Forces come in three modes (the ``forces`` argument of ``ETGNN.forward``), always under the key ``forces``:
``"direct"`` (the forces head, Eq. 3), ``"conservative"`` (``-dE/dr`` of the energy head by autograd) or
``"both"`` (direct ``forces`` plus ``forces_conservative = -dE/dr``). The model refuses a graph built with
other radii than its ``cutoff`` and ``effective_triplet_cutoff`` (``ETGNN.check_radii``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.utils.checkpoint
from ase.data import atomic_numbers, chemical_symbols
from torch import nn

from .basis import (
    bessel_rbf,
    envelope,
    spherical_basis_from_edges,
    spherical_bessel_norm,
    spherical_bessel_radial,
    spherical_bessel_zeros,
)
from .graph import GraphBatch, effective_triplet_cutoff
from .layers import (
    EdgeEmbedding,
    EdgeUpdate,
    NodeOutput,
    TensorHead,
    TripletEmbedding,
    TripletUpdate,
    eq1_crystal_average,
)
from .properties import FORCES_CONSERVATIVE, TENSOR_HEADS

__all__ = [
    "ETGNNConfig",
    "ETGNN",
    "FORCES_MODES",
    "Geometry",
    "HeadInputs",
    "build_model",
    "rebuild_heads",
    "TrunkState",
]

#: what the direct force head reads (``ETGNNConfig.force_head``)
FORCE_HEADS = ("edge", "pair")

#: ``ETGNNConfig`` settings that shape one head only, and that head: a fine-tune may change them when it
#: draws that head afresh (``rebuild_heads``, ``TrainConfig.reinit_heads``)
HEAD_SETTINGS = {"force_head": "forces"}

#: how ``ETGNN.forward`` gives forces: the forces head, ``-dE/dr`` of the energy head, or both
#: (``forces`` direct, ``forces_conservative`` = -dE/dr)
FORCES_MODES = ("direct", "conservative", "both")


@dataclass(frozen=True)
class ETGNNConfig:
    """Hyper-parameters of one ETGNN model (defaults: paper Sec. III and Table S3 where it gives them).

    Attributes:
        species: element symbols the model knows.
        heads: property names predicted (registry keys, see ``properties.py``).
        cutoff: edge cutoff r_c, A (paper: 6).
        triplet_cutoff: only edges shorter than this form triplets, A; ``None`` = ``cutoff`` (paper).
            Bounds the O(N k^2) triplet cost; default 4 A.
        hidden: edge message size nh (paper: 128).
        triplet_hidden: triplet message size ntri (paper: 128).
        n_blocks: edge/triplet update blocks (paper: 4).
        n_radial: radial Bessel functions nb (Eq. 11, paper: 8).
        n_spherical, n_sbf_radial: N_SHBF and N_SRBF of Eq. 14 (DimeNet++: 7 and 6).
        int_emb, basis_emb, out_emb: DimeNet++ interaction, basis and output embedding sizes.
        activation: "elu" (paper), "silu" or "swish".
        envelope: "cosine" (Eq. 12, paper) or "polynomial".
        isotropic: add ``s_j I`` to rank-2 atomic tensors (beyond the paper).
        zero_net_force: symmetrise force pair coefficients so that sum_j F_j = 0 exactly.
        force_head: what the force coefficients t_kj of Eq. 3 are read from: "edge" (the last edge message
            m_kj, paper) or "pair" (the edge messages of every block and the node features h_k, h_j of both
            atoms; beyond the paper, for direct heads that underfit: models/sio2_md.md, Limits).
        bec_asr: enforce sum_a Z_a = 0 per structure exactly.
    """

    species: Tuple[str, ...]
    heads: Tuple[str, ...] = ("forces", "born_effective_charges", "dielectric_tensor")
    cutoff: float = 6.0
    triplet_cutoff: Optional[float] = 4.0
    hidden: int = 128
    triplet_hidden: int = 128
    n_blocks: int = 4
    n_radial: int = 8
    n_spherical: int = 7
    n_sbf_radial: int = 6
    int_emb: int = 64
    basis_emb: int = 8
    out_emb: int = 256
    n_residual_before: int = 1
    n_residual_after: int = 2
    n_output_layers: int = 3
    activation: str = "elu"
    envelope: str = "cosine"
    isotropic: bool = True
    zero_net_force: bool = False
    force_head: str = "edge"
    bec_asr: bool = False

    def __post_init__(self) -> None:
        if not self.species:
            raise ValueError("species must name at least one element")
        for s in self.species:
            if s not in atomic_numbers:
                raise ValueError(f"unknown element symbol {s!r} in species")
        if len(set(self.species)) != len(self.species):
            raise ValueError(f"species contains duplicates: {self.species}")
        if not self.heads:
            raise ValueError("a model needs at least one head")
        for h in self.heads:
            if h not in TENSOR_HEADS:
                raise ValueError(f"no head can predict {h!r}; available heads: {list(TENSOR_HEADS)}")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")
        if self.triplet_cutoff is not None and not 0 < self.triplet_cutoff:
            raise ValueError(f"triplet_cutoff must be positive or None, got {self.triplet_cutoff}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; use one of {sorted(_ACTIVATIONS)}")
        if self.force_head not in FORCE_HEADS:
            raise ValueError(f"unknown force_head {self.force_head!r}; use one of {list(FORCE_HEADS)}")
        if self.envelope not in ("cosine", "polynomial"):
            raise ValueError(f"unknown envelope {self.envelope!r}; use 'cosine' or 'polynomial'")

    @property
    def effective_triplet_cutoff(self) -> float:
        """The triplet cutoff actually used, A (``triplet_cutoff`` capped at ``cutoff``; graphs are built with it)."""
        return effective_triplet_cutoff(self.cutoff, self.triplet_cutoff)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["species"] = list(self.species)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ETGNNConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        d["species"] = tuple(d["species"])
        d["heads"] = tuple(d.get("heads", cls.heads))
        return cls(**d)


_ACTIVATIONS = {"elu": nn.ELU, "silu": nn.SiLU, "swish": nn.SiLU}


# ----------------------------------------------------------------------------------------------------
# What the trunk hands on: geometry and head inputs
# ----------------------------------------------------------------------------------------------------


def _detach(x):
    """``x`` cut from the autograd graph (tensors only; None and floats as they are)."""
    return x.detach() if isinstance(x, torch.Tensor) else x


@dataclass(frozen=True)
class Geometry:
    """Edge and triplet geometry of a batch (``ETGNN.geometry``), differentiable in positions and cell.

    Attributes:
        unit: [n_edges, 3] unit vectors ``e_kj`` from src k to dst j.
        env: [n_edges] edge envelopes (Eq. 12).
        rbf: [n_edges, n_radial] enveloped radial basis ``e_RBF`` (Eq. 11).
        sbf: [n_triplets, n_spherical * n_sbf_radial] spherical basis ``a_SBF`` (Eq. 14).
        trip_w: [n_triplets] triplet envelopes (both edges inside the triplet cutoff).
        u_kj, u_ji: [n_triplets, 3] unit vectors of a triplet's incoming and outgoing edge.
        center: [n_triplets] central atom j of each triplet.
    """

    unit: torch.Tensor
    env: torch.Tensor
    rbf: torch.Tensor
    sbf: torch.Tensor
    trip_w: torch.Tensor
    u_kj: torch.Tensor
    u_ji: torch.Tensor
    center: torch.Tensor

    def detached(self) -> "Geometry":
        """A copy cut from the autograd graph."""
        return Geometry(**{f.name: _detach(getattr(self, f.name)) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class HeadInputs:
    """What the heads read (``ETGNN.predict`` builds it from a ``TrunkState``).

    Attributes:
        geo: edge and triplet geometry.
        species: [n_atoms] model species index.  batch: [n_atoms] structure of each atom.
        n_atoms: [n_structures] atoms per structure.
        dst: [n_edges] atom j of each edge k -> j.  src: [n_edges] atom k.  edge_reverse: [n_edges] index of
            the reverse edge.
        m: [n_edges, hidden] edge messages of the last edge block.
        m_blocks: the edge messages of every block, each [n_edges, hidden] (the "pair" force head).
        mt: [n_triplets, triplet_hidden] triplet messages, or None when no requested head needs them.
        h: [n_atoms, out_emb] node features, or None when no requested head needs them.
    """

    geo: Geometry
    species: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    dst: torch.Tensor
    src: torch.Tensor
    edge_reverse: torch.Tensor
    m: torch.Tensor
    m_blocks: Tuple[torch.Tensor, ...] = ()
    mt: Optional[torch.Tensor] = None
    h: Optional[torch.Tensor] = None


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------


class ModelView:
    """What callers use of a model (an ``ETGNN`` or a ``composed.ComposedModel``): species, heads and ``forward``
    over the model's ``trunk``, ``predict`` and ``conservative``."""

    config: "ETGNNConfig"

    @property
    def species(self) -> Tuple[str, ...]:
        return self.config.species

    @property
    def heads(self) -> Tuple[str, ...]:
        """The properties it predicts (registry names)."""
        return self.config.heads

    def forward(
        self, batch: GraphBatch, heads: Optional[Sequence[str]] = None, forces: str = "direct", stress: bool = False
    ) -> Dict[str, torch.Tensor]:
        """Predict the heads ``heads`` (default: all); keys are registry property names (see the module
        docstring for shapes). Only the trunk parts those heads need are computed.

        ``forces``: ``"direct"`` (the forces head, if run); ``"conservative"`` (``forces`` = -dE/dr of the
        energy head; the forces head is not run) or ``"both"`` (the forces head's ``forces`` plus
        ``forces_conservative`` = -dE/dr): the last two run the energy head and autograd (``conservative``).
        ``stress``: add ``stress`` (eV/A^3, ASE sign; needs ``"conservative"`` or ``"both"``).
        """
        _check_forces_mode(forces)
        if forces == "direct":
            if stress:
                raise ValueError("stress is the strain derivative of the energy: use forces='conservative' or 'both'")
            return self.predict(self.trunk(batch), heads)
        return self.conservative(batch, stress=stress, heads=heads, forces=forces)[0]


class ETGNN(ModelView, nn.Module):
    """ETGNN: shared edge/triplet trunk plus one generic head per property in ``config.heads``."""

    def __init__(self, config: ETGNNConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        act = _ACTIVATIONS[cfg.activation]()
        self.embedding = nn.Embedding(len(cfg.species), cfg.hidden)  # g(Z)
        z_to_index = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        for i, s in enumerate(cfg.species):
            z_to_index[atomic_numbers[s]] = i
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        self.register_buffer(
            "sbf_zeros", torch.as_tensor(spherical_bessel_zeros(cfg.n_spherical, cfg.n_sbf_radial)), persistent=False
        )
        # Eq. 14 normalisation from the float64 zeros, cast with the model (not in the state dict)
        self.register_buffer(
            "sbf_norm", torch.as_tensor(spherical_bessel_norm(self.sbf_zeros.numpy(), cfg.cutoff)), persistent=False
        )
        self.edge_embedding = EdgeEmbedding(cfg, act)
        self.edge_blocks = nn.ModuleList([EdgeUpdate(cfg, act) for _ in range(cfg.n_blocks)])
        self.heads_ = nn.ModuleDict({name: TensorHead(name, cfg, act) for name in cfg.heads})
        self.needs_triplet_messages = any(h.uses_triplets for h in self.heads_.values())
        self.needs_nodes = any(h.uses_nodes for h in self.heads_.values())
        if self.needs_triplet_messages:
            self.triplet_embedding = TripletEmbedding(cfg, act)
            self.triplet_blocks = nn.ModuleList([TripletUpdate(cfg, act) for _ in range(cfg.n_blocks)])
        if self.needs_nodes:
            self.node_output = NodeOutput(cfg, act)

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers to model species indices; ``ValueError`` naming unknown elements.

        The check reads values back to the host, so it runs for CPU tensors only: on a GPU it would stall
        the forward pass (a host sync); there the caller has checked the numbers (the calculator and the
        data set do, on the host), and an index out of range stops with a device-side error.
        """
        if numbers.device.type != "cpu":
            return self.z_to_index[numbers]
        if numbers.numel() and (numbers.min() < 0 or numbers.max() >= len(self.z_to_index)):
            raise ValueError(f"invalid atomic numbers in input: {sorted(set(numbers.tolist()))}")
        idx = self.z_to_index[numbers]
        if numbers.numel() and bool((idx < 0).any()):
            bad = sorted({chemical_symbols[int(z)] for z in numbers[idx < 0].tolist()})
            raise ValueError(f"element(s) {bad} not known to this model; it was built for {list(self.species)}")
        return idx

    def set_normalization(self, name: str, scale: float, reference=None) -> None:
        """Set the target normalisation of head ``name``: output = scale * raw + reference term.

        ``reference``: per-species tensor [n_species] (energy eV/atom; rank-2 isotropic value), or a scalar
        used for every species (e.g. the mean dielectric constant). Heads of rank 1 and 3 take no reference.
        """
        if name not in self.heads_:
            raise KeyError(f"model has no head {name!r}; heads: {list(self.heads)}")
        head = self.heads_[name]
        with torch.no_grad():
            head.scale.fill_(float(scale))
            if reference is not None:
                if head.rank not in (0, 2):
                    raise ValueError(f"head {name!r} (rank {head.rank}) takes no reference value")
                ref = torch.as_tensor(reference, dtype=head.reference.dtype, device=head.reference.device)
                head.reference.copy_(ref.expand_as(head.reference))

    def check_radii(self, batch: GraphBatch) -> None:
        """``ValueError`` unless ``batch`` was built with this model's ``cutoff`` and effective triplet cutoff.

        A graph built with smaller radii misses neighbours and silently gives wrong numbers; one built with
        larger radii gives the same numbers at a higher cost (what lies beyond the radii contributes zero).
        Both are refused, so that every caller builds graphs one way. The radii are floats in the batch
        (``collate_graphs``): no host sync.
        """
        cfg = self.config
        if "cutoff" not in batch or "triplet_cutoff" not in batch:
            raise ValueError("the graph does not say which radii it was built with (no 'cutoff' / 'triplet_cutoff' "
                             "entries): batch graphs with ase_etgnn.graph.collate_graphs")
        got = (float(batch["cutoff"]), float(batch["triplet_cutoff"]))
        want = (float(cfg.cutoff), float(cfg.effective_triplet_cutoff))
        if got != want:
            raise ValueError(
                f"the graph was built with cutoff {got[0]} A and triplet cutoff {got[1]} A, but this model needs "
                f"cutoff {want[0]} A and triplet cutoff {want[1]} A (config.cutoff, "
                f"config.effective_triplet_cutoff): build it with atoms_to_graph(atoms, model.config.cutoff, "
                f"model.config.effective_triplet_cutoff)"
            )

    def geometry(self, batch: GraphBatch) -> Geometry:
        """Edge vectors, bases and envelopes from a collated batch (differentiable in positions/cell)."""
        cfg = self.config
        pos, cell = batch["positions"], batch["cell"]
        src, dst = batch["edge_src"], batch["edge_dst"]
        shift = batch["edge_shift"].to(pos.dtype)  # [n_edges, 3]
        vec = pos[dst] - pos[src] + torch.einsum("ea,eab->eb", shift, cell[batch["edge_batch"]])  # [n_edges, 3]
        length = torch.linalg.vector_norm(vec, dim=-1).clamp(min=1e-9)  # [n_edges]
        unit = vec / length.unsqueeze(-1)  # [n_edges, 3], e_kj from src k to dst j
        env = envelope(length, cfg.cutoff, cfg.envelope)  # [n_edges]
        rbf = bessel_rbf(length, cfg.cutoff, cfg.n_radial) * env.unsqueeze(-1)  # e_RBF, [n_edges, n_radial]
        t_in, t_out = batch["trip_in"], batch["trip_out"]
        env_t = envelope(length, cfg.effective_triplet_cutoff, cfg.envelope)  # [n_edges]
        u_kj, u_ji = unit[t_in], unit[t_out]  # [n_triplets, 3] each
        # cosine of the bond angle at j between j->k and j->i (no atan2: smooth gradient when collinear)
        cos_t = -(u_kj * u_ji).sum(-1)  # [n_triplets]
        env_ti = env_t[t_out]  # [n_triplets]
        trip_w = env_t[t_in] * env_ti  # [n_triplets], smooth at the triplet cutoff
        # Eq. 14 radial part (with the kj-edge envelopes) once per edge in the model dtype, then gathered
        radial = spherical_bessel_radial(length, self.sbf_zeros, self.sbf_norm, cfg.cutoff)  # [E, n_sph, n_rad]
        radial = radial * (env * env_t).view(-1, 1, 1)
        sbf = spherical_basis_from_edges(radial, t_in, cos_t, env_ti)  # a_SBF, [n_triplets, n_sph * n_rad]
        return Geometry(unit=unit, env=env, rbf=rbf, sbf=sbf, trip_w=trip_w, u_kj=u_kj, u_ji=u_ji, center=dst[t_in])

    # ------------------------------------------------------------------------------------------------
    # trunk once, heads on demand
    # ------------------------------------------------------------------------------------------------
    def trunk(self, batch: GraphBatch, recompute: bool = False) -> "TrunkState":
        """Geometry, embeddings and the edge blocks (what every head needs); triplet messages and node
        features are computed later, when a head asks for them (``predict``). Checks the graph's radii first
        (``check_radii``).

        ``recompute``: under autograd, keep only the inputs of the geometry (angles, bases) and of each edge
        block and recompute their [n_triplets, *] intermediates during the backward pass (activation
        checkpointing): the same numbers and gradients for about one extra trunk forward, and a peak memory
        of about one block instead of all of them (conservative forces of large cells).
        """
        self.check_radii(batch)
        species = self.species_index(batch["numbers"])  # [n_atoms]
        checkpointed = recompute and torch.is_grad_enabled()
        if checkpointed:  # the per-triplet angle and basis intermediates are recomputed in the backward pass
            geo = torch.utils.checkpoint.checkpoint(self.geometry, batch, use_reentrant=False)
        else:
            geo = self.geometry(batch)
        g = self.embedding(species)  # [n_atoms, hidden]
        m = self.edge_embedding(g, geo.rbf, batch["edge_src"], batch["edge_dst"])  # [n_edges, hidden]
        m_blocks = []
        args = (geo.rbf, geo.sbf, batch["trip_in"], batch["trip_out"])
        for block in self.edge_blocks:
            if checkpointed:
                m = torch.utils.checkpoint.checkpoint(block, m, *args, use_reentrant=False)  # [n_edges, hidden]
            else:
                m = block(m, *args)  # [n_edges, hidden]
            m_blocks.append(m)
        return TrunkState(batch=batch, geo=geo, species=species, g=g, m_blocks=m_blocks)

    def _triplet_messages(self, state: "TrunkState") -> torch.Tensor:
        """Triplet messages ``m_kji`` (Eqs. 15-16) from the stored edge messages of each block; cached."""
        if state.mt is None:
            b, geo = state.batch, state.geo
            src, dst, t_in, t_out = b["edge_src"], b["edge_dst"], b["trip_in"], b["trip_out"]
            # triplet k->j->i: k = src of edge kj, j = its dst, i = dst of edge ji
            mt = self.triplet_embedding(state.g, geo.rbf, geo.sbf, src[t_in], dst[t_in], dst[t_out], t_out)
            for m, block in zip(state.m_blocks, self.triplet_blocks):
                mt = block(mt, m, geo.rbf, geo.sbf, t_in, t_out)  # [n_triplets, t_hidden]
            state.mt = mt
        return state.mt

    def _node_features(self, state: "TrunkState") -> torch.Tensor:
        """Node features ``h_j`` of the node output block; cached."""
        if state.h is None:
            state.h = self.node_output(state.m_blocks[-1], state.geo.rbf, state.g, state.batch["edge_dst"])
        return state.h  # [n_atoms, out_emb]

    def predict(self, state: "TrunkState", heads: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """Run the heads ``heads`` (default: all) on a trunk state, computing only the trunk parts they need
        (triplet messages for non-symmetric rank-2 and rank-3 heads, node features for energy, the
        isotropic rank-2 term and the pair force head). Asking again for other heads reuses what the state already holds."""
        names = list(self.heads) if heads is None else list(heads)
        for name in names:
            if name not in self.heads_:
                raise KeyError(f"model has no head {name!r}; heads: {list(self.heads)}")
        b = state.batch
        inp = HeadInputs(
            geo=state.geo, species=state.species, batch=b["batch"], n_atoms=b["n_atoms"], dst=b["edge_dst"],
            src=b["edge_src"], edge_reverse=b["edge_reverse"], m=state.m_blocks[-1], m_blocks=tuple(state.m_blocks),
            mt=self._triplet_messages(state) if any(self.heads_[n].uses_triplets for n in names) else None,
            h=self._node_features(state) if any(self.heads_[n].uses_nodes for n in names) else None,
        )
        out = {name: self.heads_[name](inp, self.config.zero_net_force) for name in names}
        if self.config.bec_asr and "born_effective_charges" in out:
            z = out["born_effective_charges"]  # [n_atoms, 3, 3]
            mean = eq1_crystal_average(z, b["batch"], b["n_atoms"])  # [B, 3, 3]
            out["born_effective_charges"] = z - mean[b["batch"]]
        return out

    def conservative(
        self, batch: GraphBatch, stress: bool = True, heads: Optional[Sequence[str]] = None, recompute: bool = False,
        forces: str = "both",
    ) -> Tuple[Dict[str, torch.Tensor], "TrunkState"]:
        """Heads ``heads`` (default: all; ``energy`` is always run) plus ``-dE/dr`` (eV/A) and, if ``stress``,
        ``stress = (1/V) dE/d(strain)`` (eV/A^3, ASE sign) by autograd.

        ``forces``: ``"conservative"``: ``-dE/dr`` is ``forces`` and the forces head is not run; ``"both"``:
        ``-dE/dr`` is ``forces_conservative`` and ``forces`` is the forces head's (when it is run).
        Returns the outputs and the trunk state (detached unless training), so that other heads can be run
        later on the same geometry with ``predict``. ``recompute``: see ``trunk``. Needs an energy head.
        """
        _check_forces_mode(forces)
        if forces == "direct":
            raise ValueError("conservative() computes -dE/dr: forces must be 'conservative' or 'both'")
        if "energy" not in self.heads_:
            raise ValueError("conservative forces need a model with an 'energy' head")
        names = list(self.heads) if heads is None else list(dict.fromkeys(["energy", *heads]))
        if forces == "conservative":
            names = [n for n in names if n != "forces"]
        batch = dict(batch)
        pos = batch["positions"].detach().requires_grad_(True)
        n_struct = batch["cell"].shape[0]
        strain = torch.zeros(n_struct, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
        sym = 0.5 * (strain + strain.transpose(1, 2))  # [B, 3, 3]
        batch["positions"] = pos + torch.einsum("na,nab->nb", pos, sym[batch["batch"]])
        batch["cell"] = batch["cell"] + torch.bmm(batch["cell"], sym)
        state = self.trunk(batch, recompute=recompute)
        out = self.predict(state, names)
        wrt = [pos, strain] if stress else [pos]
        grads = torch.autograd.grad(out["energy"].sum(), wrt, create_graph=self.training)
        out["forces" if forces == "conservative" else FORCES_CONSERVATIVE] = -grads[0]
        if stress:
            vol = torch.linalg.det(batch["cell"]).abs()  # [B]
            out["stress"] = grads[1] / vol.view(-1, 1, 1)
        if not self.training:
            out = {k: v.detach() for k, v in out.items()}
            state = state.detached()
        return out, state


def _check_forces_mode(forces: str) -> None:
    if forces not in FORCES_MODES:
        raise ValueError(f"forces must be one of {list(FORCES_MODES)}, got {forces!r}")


@dataclass
class TrunkState:
    """What ``ETGNN.trunk`` computed for one batch; ``predict`` fills ``mt`` and ``h`` when a head needs them.

    Attributes:
        batch: the collated batch (``graph.GraphBatch``).
        geo: ``ETGNN.geometry`` output (unit vectors, envelopes, radial and spherical bases).
        species: model species index per atom [n_atoms].  g: atom embeddings [n_atoms, hidden].
        m_blocks: edge messages after each edge block, each [n_edges, hidden].
        mt: triplet messages [n_triplets, triplet_hidden] or None.  h: node features [n_atoms, out_emb] or None.
    """

    batch: GraphBatch
    geo: Geometry
    species: torch.Tensor
    g: torch.Tensor
    m_blocks: list
    mt: Optional[torch.Tensor] = None
    h: Optional[torch.Tensor] = None

    def detached(self) -> "TrunkState":
        """A copy cut from the autograd graph (for heads run later without gradients)."""
        return TrunkState(
            batch={k: _detach(v) for k, v in self.batch.items()}, geo=self.geo.detached(), species=self.species,
            g=_detach(self.g), m_blocks=[_detach(m) for m in self.m_blocks], mt=_detach(self.mt), h=_detach(self.h),
        )


def _init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Deterministic initialisation of ``module`` (a model or one head) from an explicit generator (no
    global RNG is touched).

    Linear weights ~ N(0, 1/fan_in) (variance-preserving), biases 0, embeddings ~ U(-sqrt3, sqrt3);
    the heads' last layers are scaled by 0.02 so untrained outputs are of order one.  Buffers (the heads'
    normalisation) are left as they are.
    """
    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, nn.Linear):
                w = torch.randn(mod.weight.shape, generator=generator, dtype=torch.float64)
                mod.weight.copy_(w / math.sqrt(mod.in_features))
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.Embedding):
                w = torch.rand(mod.weight.shape, generator=generator, dtype=torch.float64)
                mod.weight.copy_((2 * w - 1) * math.sqrt(3.0))
        # small last layers in the heads: an untrained model's edge sums (~70 terms) stay of order one
        for head in (m for m in module.modules() if isinstance(m, TensorHead)):
            for mlp in (head.edge_mlp, head.triplet_mlp, head.node_mlp):
                if mlp is not None:
                    mlp[-1].weight.mul_(0.02)


def reinitialize_heads(model: ETGNN, names: Sequence[str], seed: int) -> None:
    """Draw the weights of the heads ``names`` afresh from ``seed``, keeping the trunk and every head's
    normalisation (committee members that share a trunk, ``TrainConfig.reinit_heads``)."""
    unknown = [n for n in names if n not in model.heads_]
    if unknown:
        raise KeyError(f"model has no head {unknown[0]!r}; heads: {list(model.heads)}")
    gen = torch.Generator().manual_seed(int(seed))
    for name in names:
        _init_weights(model.heads_[name], gen)


def rebuild_heads(model: ETGNN, changes: Mapping[str, Any], seed: int) -> ETGNN:
    """A copy of ``model`` with head-only settings (``HEAD_SETTINGS``) changed, e.g. ``{"force_head": "pair"}``.

    The trunk, every other head and every head's normalisation are copied; the changed heads, and any trunk
    part only they read (the node output block a pair force head adds), are drawn from ``seed``.  Same
    device, dtype and metadata as ``model``.
    """
    other = sorted(set(changes) - set(HEAD_SETTINGS))
    if other:
        raise ValueError(f"{other} shape the trunk, not one head; only {sorted(HEAD_SETTINGS)} can be changed")
    heads = sorted({HEAD_SETTINGS[k] for k in changes})
    absent = [h for h in heads if h not in model.heads_]
    if absent:
        raise KeyError(f"model has no head {absent[0]!r}; heads: {list(model.heads)}")
    ref = next(model.parameters())
    new = construct(dataclasses.replace(model.config, **changes)).to(device=ref.device, dtype=ref.dtype)
    drop = {f"heads_.{h}.{n}" for h in heads for n, _ in model.heads_[h].named_parameters()}
    missing, unexpected = new.load_state_dict(
        {k: v for k, v in model.state_dict().items() if k not in drop}, strict=False)
    if unexpected:  # every kept weight must have a place in the new model
        raise RuntimeError(f"rebuild_heads: weights without a place in the new model: {unexpected}")
    gen = torch.Generator().manual_seed(int(seed))
    for h in heads:
        _init_weights(new.heads_[h], gen)
    owners = sorted({k.rsplit(".", 1)[0] for k in missing if not k.startswith("heads_.")})
    for owner in owners:  # trunk layers the new heads read and the old model did not have
        _init_weights(new.get_submodule(owner), gen)
    new.metadata = dict(getattr(model, "metadata", {}))
    return new.train(model.training)


def construct(config: ETGNNConfig) -> ETGNN:
    """``ETGNN(config)`` without touching the global torch RNG (torch's default init draws from it);
    weights are then set by ``_init_weights`` or a state dict."""
    with torch.random.fork_rng(devices=[]):
        return ETGNN(config)


def build_model(
    species: Sequence[str],
    heads: Sequence[str] = ("forces", "born_effective_charges", "dielectric_tensor"),
    cutoff: float = 6.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    **hyper,
) -> ETGNN:
    """Build an ETGNN with random weights drawn from ``seed`` (see ``ETGNNConfig`` for ``hyper``)."""
    config = ETGNNConfig(species=tuple(species), heads=tuple(heads), cutoff=cutoff, **hyper)
    model = construct(config)
    gen = torch.Generator().manual_seed(int(seed))
    _init_weights(model, gen)
    return model.to(device=device, dtype=dtype)
