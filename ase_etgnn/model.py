"""The ETGNN network (Section III of the paper) and its tensor heads (Section II, Eqs. 1-8).

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
from typing import Dict, Optional, Sequence, Tuple

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
from .properties import FORCES_CONSERVATIVE, TENSOR_HEADS, get_property_spec

__all__ = [
    "ETGNNConfig",
    "ETGNN",
    "FORCES_MODES",
    "Geometry",
    "HeadInputs",
    "build_model",
    "eq1_crystal_average",
    "eq2_edge_expansion",
    "eq3_forces",
    "eq6_triplet_expansion",
    "total_energy",
    "TrunkState",
]

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


def _scatter_sum(x: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``x`` into ``size`` bins given by ``index``; [size, ...]."""
    return x.new_zeros((size,) + tuple(x.shape[1:])).index_add_(0, index, x)


def _act_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``, overwriting ``x`` when autograd does not track it (same kernel, same numbers)."""
    if x.requires_grad:
        return act(x)
    if isinstance(act, nn.ELU):
        return nn.functional.elu(x, act.alpha, inplace=True)
    if isinstance(act, nn.SiLU):
        return nn.functional.silu(x, inplace=True)
    return act(x)


def _mul_(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x * y``, overwriting ``x`` (same shape as the result) when autograd tracks neither."""
    if x.requires_grad or y.requires_grad or x.shape != torch.broadcast_shapes(x.shape, y.shape):
        return x * y
    return x.mul_(y)


# ----------------------------------------------------------------------------------------------------
# Paper equations as functions
# ----------------------------------------------------------------------------------------------------


def _outer_power(u: torch.Tensor, rank: int) -> torch.Tensor:
    """``u (x) u (x) ... (x) u`` (rank times); [n, 3, ..., 3]."""
    out = u
    for _ in range(rank - 1):
        out = out.unsqueeze(-1) * u.view(u.shape[0], *([1] * (out.dim() - 1)), 3)
    return out


def eq2_edge_expansion(
    coeff: torch.Tensor, unit: torch.Tensor, dst: torch.Tensor, n_atoms: int, rank: int
) -> torch.Tensor:
    """Eq. 2 with one neighbour: ``T_j = sum_{k in N(j)} t_kj e_kj (x) ... (x) e_kj`` (rank factors).

    Rank 1 is Eq. 3 (forces), rank 2 Eq. 5 (symmetric BEC part) and Eq. 7 (dielectric), rank 3 the first
    term of Eq. 8 (piezoelectric). ``coeff`` [n_edges], ``unit`` [n_edges, 3] (from k to j), ``dst`` = j.
    Returns [n_atoms, 3, ...].
    """
    basis = _outer_power(unit, rank)  # [n_edges, 3^rank]
    return _scatter_sum(coeff.view(-1, *([1] * rank)) * basis, dst, n_atoms)


def eq3_forces(coeff: torch.Tensor, unit: torch.Tensor, dst: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """Eq. 3, direct forces ``F_j = sum_k t_kj e_kj``; [n_atoms, 3] (eV/A once scaled)."""
    return eq2_edge_expansion(coeff, unit, dst, n_atoms, 1)


def eq6_triplet_expansion(
    coeff: torch.Tensor, u_kj: torch.Tensor, u_ji: torch.Tensor, center: torch.Tensor, n_atoms: int, rank: int
) -> torch.Tensor:
    """Eq. 6 (rank 2, non-symmetric BEC part ``sum t_kji e_kj (x) e_ji``) and the second term of Eq. 8
    (rank 3, ``sum t_kji e_kj (x) e_ji (x) e_ji``). ``coeff`` [n_triplets]; returns [n_atoms, 3, ...]."""
    if rank == 2:
        basis = u_kj.unsqueeze(-1) * u_ji.unsqueeze(-2)  # [n_triplets, 3, 3]
    elif rank == 3:
        basis = u_kj.view(-1, 3, 1, 1) * (u_ji.unsqueeze(-1) * u_ji.unsqueeze(-2)).unsqueeze(1)  # [n_trip, 3, 3, 3]
    else:
        raise ValueError(f"triplet expansion is defined for rank 2 and 3, not {rank}")
    return _scatter_sum(coeff.view(-1, *([1] * rank)) * basis, center, n_atoms)


def total_energy(atomic: torch.Tensor, reference: torch.Tensor, batch: torch.Tensor, n_structures: int
                    ) -> torch.Tensor:
    """Total energy ``E = sum_j (eps_j + E_ref(Z_j))`` (eV), summed in float64 whatever the model dtype, so
    that a meV change is not lost to float32 rounding of a total of thousands of atoms; [n_structures].

    ``atomic`` [n_atoms]: the learned atomic energies (scaled); ``reference`` [n_atoms]: per-species energies.
    """
    per_atom = atomic.double() + reference.double()  # [n_atoms]
    return _scatter_sum(per_atom, batch, n_structures)


def eq1_crystal_average(atomic: torch.Tensor, batch: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """Eq. 1: crystal tensor = mean of the atomic tensors of its atoms; [n_structures, ...]."""
    total = _scatter_sum(atomic, batch, len(n_atoms))  # [B, ...]
    return total / n_atoms.to(atomic.dtype).view(-1, *([1] * (atomic.dim() - 1)))


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
        dst: [n_edges] atom j of each edge k -> j.  edge_reverse: [n_edges] index of the reverse edge.
        m: [n_edges, hidden] edge messages of the last edge block.
        mt: [n_triplets, triplet_hidden] triplet messages, or None when no requested head needs them.
        h: [n_atoms, out_emb] node features, or None when no requested head needs them.
    """

    geo: Geometry
    species: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    dst: torch.Tensor
    edge_reverse: torch.Tensor
    m: torch.Tensor
    mt: Optional[torch.Tensor] = None
    h: Optional[torch.Tensor] = None


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------


class ResidualLayer(nn.Module):
    """DimeNet residual layer ``x + act(W2 act(W1 x))``."""

    def __init__(self, width: int, act: nn.Module) -> None:
        super().__init__()
        self.lin1 = nn.Linear(width, width)
        self.lin2 = nn.Linear(width, width)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.lin2(self.act(self.lin1(x))))


class EdgeEmbedding(nn.Module):
    """Eq. 13: ``m_ji = act(W (g(Z_i) + g(Z_j) + phi_RBF(e_RBF)) + b)`` (concatenation as split weights)."""

    def __init__(self, cfg: ETGNNConfig, act: nn.Module) -> None:
        super().__init__()
        h = cfg.hidden
        self.lin_rbf = nn.Linear(cfg.n_radial, h, bias=False)  # varphi_RBF
        self.lin_dst = nn.Linear(h, h, bias=False)
        self.lin_src = nn.Linear(h, h, bias=False)
        self.lin_rbf_out = nn.Linear(h, h)
        self.act = act

    def forward(self, g: torch.Tensor, rbf: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        rbf_h = self.act(self.lin_rbf(rbf))  # [n_edges, hidden]
        x = self.lin_rbf_out(rbf_h)  # [n_edges, hidden]
        x = x + self.lin_dst(g).index_select(0, dst) + self.lin_src(g).index_select(0, src)  # [n_edges, hidden]
        return _act_(self.act, x)


class EdgeUpdate(nn.Module):
    """DimeNet++ interaction block used as ETGNN's edge update block (Fig. 2a).

    ``m_ji <- m_ji + f(m_ji, sum_k m_kj * rbf(kj) * sbf(kj, angle_kji))`` with down/up projections.
    """

    def __init__(self, cfg: ETGNNConfig, act: nn.Module) -> None:
        super().__init__()
        h, ie, be = cfg.hidden, cfg.int_emb, cfg.basis_emb
        n_sbf = cfg.n_spherical * cfg.n_sbf_radial
        self.lin_rbf1 = nn.Linear(cfg.n_radial, be, bias=False)
        self.lin_rbf2 = nn.Linear(be, h, bias=False)
        self.lin_sbf1 = nn.Linear(n_sbf, be, bias=False)
        self.lin_sbf2 = nn.Linear(be, ie, bias=False)
        self.lin_kj = nn.Linear(h, h)
        self.lin_ji = nn.Linear(h, h)
        self.lin_down = nn.Linear(h, ie, bias=False)
        self.lin_up = nn.Linear(ie, h, bias=False)
        self.before = nn.ModuleList([ResidualLayer(h, act) for _ in range(cfg.n_residual_before)])
        self.lin = nn.Linear(h, h)
        self.after = nn.ModuleList([ResidualLayer(h, act) for _ in range(cfg.n_residual_after)])
        self.act = act

    def forward(
        self, m: torch.Tensor, rbf: torch.Tensor, sbf: torch.Tensor, trip_in: torch.Tensor, trip_out: torch.Tensor
    ) -> torch.Tensor:
        x_ji = self.act(self.lin_ji(m))  # [n_edges, hidden]
        x_kj = self.act(self.lin_kj(m)) * self.lin_rbf2(self.lin_rbf1(rbf))  # [n_edges, hidden]
        x_kj = self.act(self.lin_down(x_kj))  # [n_edges, int_emb]
        s = self.lin_sbf2(self.lin_sbf1(sbf))  # [n_triplets, int_emb]
        x = _scatter_sum(_mul_(s, x_kj.index_select(0, trip_in)), trip_out, m.shape[0])  # [n_edges, int_emb]
        h = x_ji + self.act(self.lin_up(x))  # [n_edges, hidden]
        for layer in self.before:
            h = layer(h)
        h = self.act(self.lin(h)) + m
        for layer in self.after:
            h = layer(h)
        return h


class TripletEmbedding(nn.Module):
    """Eq. 15: ``m_kji = act(W (g(Z_i) + g(Z_j) + g(Z_k) + phi_SBF(a_SBF) + phi_RBF(e_RBF^ji)) + b)``."""

    def __init__(self, cfg: ETGNNConfig, act: nn.Module) -> None:
        super().__init__()
        h, t = cfg.hidden, cfg.triplet_hidden
        self.lin_i = nn.Linear(h, t, bias=False)
        self.lin_j = nn.Linear(h, t, bias=False)
        self.lin_k = nn.Linear(h, t, bias=False)
        self.lin_sbf = nn.Linear(cfg.n_spherical * cfg.n_sbf_radial, t, bias=False)  # varphi_SBF
        self.lin_rbf = nn.Linear(cfg.n_radial, t)  # varphi_RBF and the bias b
        self.act = act

    def forward(
        self, g: torch.Tensor, rbf: torch.Tensor, sbf: torch.Tensor, atom_k: torch.Tensor, atom_j: torch.Tensor,
        atom_i: torch.Tensor, trip_out: torch.Tensor,
    ) -> torch.Tensor:
        # the terms of atoms j and i and of e_RBF^ji belong to the edge j -> i: summed once per edge, then
        # gathered per triplet (one [n_triplets, t] gather instead of four). Atoms j, i of each edge that
        # has triplets, read back from the triplets (edges without triplets are never gathered).
        ji = torch.stack([atom_j, atom_i])  # [2, n_triplets]
        ends = ji.new_zeros(2, rbf.shape[0]).scatter_(1, trip_out.expand(2, -1), ji)  # [2, n_edges]
        p = self.lin_rbf(rbf) + self.lin_j(g).index_select(0, ends[0]) + self.lin_i(g).index_select(0, ends[1])
        x = p.index_select(0, trip_out).add_(self.lin_k(g).index_select(0, atom_k))  # [n_triplets, t_hidden]
        x = x.addmm_(sbf, self.lin_sbf.weight.t())  # + varphi_SBF(a_SBF)
        return _act_(self.act, x)  # [n_triplets, t_hidden]


class TripletUpdate(nn.Module):
    """Eq. 16: ``m_kji <- f_update(m_kji, f_int(m_kj, m_ji, e_RBF^kj, e_RBF^ji, a_SBF))`` (residual MLP)."""

    def __init__(self, cfg: ETGNNConfig, act: nn.Module) -> None:
        super().__init__()
        h, t, be = cfg.hidden, cfg.triplet_hidden, cfg.basis_emb
        self.lin_kj = nn.Linear(h, t)
        self.lin_ji = nn.Linear(h, t)
        self.lin_rbf_kj = nn.Linear(cfg.n_radial, t, bias=False)
        self.lin_rbf_ji = nn.Linear(cfg.n_radial, t, bias=False)
        self.lin_sbf1 = nn.Linear(cfg.n_spherical * cfg.n_sbf_radial, be, bias=False)
        self.lin_sbf2 = nn.Linear(be, t, bias=False)
        self.update1 = nn.Linear(2 * t, t)
        self.update2 = nn.Linear(t, t)
        self.act = act

    def forward(
        self, mt: torch.Tensor, m: torch.Tensor, rbf: torch.Tensor, sbf: torch.Tensor, trip_in: torch.Tensor,
        trip_out: torch.Tensor,
    ) -> torch.Tensor:
        a = self.act(self.lin_kj(m)) * self.lin_rbf_kj(rbf)  # [n_edges, t_hidden]
        b = self.act(self.lin_ji(m)) * self.lin_rbf_ji(rbf)  # [n_edges, t_hidden]
        x = a.index_select(0, trip_in).add_(b.index_select(0, trip_out))  # [n_triplets, t_hidden]
        x = _mul_(x, self.lin_sbf2(self.lin_sbf1(sbf)))  # f_int, [n_triplets, t_hidden]
        # f_update: update1 on cat([mt, x]) as two products with the halves of its weight (no copy)
        t = mt.shape[1]
        w1 = self.update1.weight  # [t_hidden, 2 t_hidden]
        h = torch.addmm(self.update1.bias, mt, w1[:, :t].t()).addmm_(x, w1[:, t:].t())  # [n_triplets, t_hidden]
        return self.update2(_act_(self.act, h)).add_(mt)  # [n_triplets, t_hidden]


class NodeOutput(nn.Module):
    """Node output block (Fig. 2d): enveloped edge messages summed on atoms, plus the atom embedding."""

    def __init__(self, cfg: ETGNNConfig, act: nn.Module) -> None:
        super().__init__()
        self.lin_rbf = nn.Linear(cfg.n_radial, cfg.hidden, bias=False)
        self.lin_up = nn.Linear(cfg.hidden, cfg.out_emb, bias=False)
        self.lin_z = nn.Linear(cfg.hidden, cfg.out_emb)
        self.layers = nn.ModuleList([nn.Linear(cfg.out_emb, cfg.out_emb) for _ in range(cfg.n_output_layers)])
        self.act = act

    def forward(self, m: torch.Tensor, rbf: torch.Tensor, g: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        x = _scatter_sum(self.lin_rbf(rbf) * m, dst, g.shape[0])  # [n_atoms, hidden]
        h = self.lin_up(x) + self.lin_z(g)  # [n_atoms, out_emb]
        for layer in self.layers:
            h = self.act(layer(h))
        return h


def _mlp(n_in: int, n_out: int, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, max(n_in // 2, 1)), act, nn.Linear(max(n_in // 2, 1), n_out))


class TensorHead(nn.Module):
    """Generic head for one registry property: invariant coefficients times edge-vector bases.

    ``scale`` and ``reference`` buffers hold the target normalisation: the output is
    ``scale * raw + reference`` where ``reference`` is per species (energy: eV/atom; rank-2: isotropic
    part times the identity) and, for per-structure properties, summed over the atoms (``extensive`` in the
    registry: energy) or averaged (Eq. 1: crystal tensors) like the atomic terms.
    """

    def __init__(self, name: str, cfg: ETGNNConfig, act: nn.Module) -> None:
        super().__init__()
        spec = get_property_spec(name)
        if spec.extensive and (spec.rank != 0 or spec.per_atom):
            raise ValueError(f"{name}: an extensive head must be a per-structure scalar (a sum of atomic terms)")
        self.name = name
        self.rank = spec.rank
        self.per_atom = spec.per_atom
        self.extensive = spec.extensive
        self.uses_edges = spec.rank >= 1
        self.uses_triplets = (spec.rank == 2 and spec.symmetry == "none") or spec.rank == 3
        self.uses_nodes = spec.rank == 0 or (spec.rank == 2 and cfg.isotropic)
        self.edge_mlp = _mlp(cfg.hidden, 1, act) if self.uses_edges else None
        self.triplet_mlp = _mlp(cfg.triplet_hidden, 1, act) if self.uses_triplets else None
        self.node_mlp = _mlp(cfg.out_emb, 1, act) if self.uses_nodes else None
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("reference", torch.zeros(len(cfg.species)))

    def atomic(self, inp: HeadInputs, zero_net_force: bool) -> torch.Tensor:
        """Atomic tensors T_j (Eq. 2, with Eqs. 3-8 as special cases); [n_atoms, 3, ...] or [n_atoms]."""
        geo = inp.geo
        n_atoms = inp.species.shape[0]
        if self.rank == 0:
            return self.node_mlp(inp.h).squeeze(-1)  # [n_atoms]
        t_e = self.edge_mlp(inp.m).squeeze(-1) * geo.env  # [n_edges]
        if self.rank == 1:
            if zero_net_force:  # t_kj = t_jk: pair forces cancel in the sum over atoms
                t_e = 0.5 * (t_e + t_e[inp.edge_reverse])
            return eq3_forces(t_e, geo.unit, inp.dst, n_atoms)
        out = eq2_edge_expansion(t_e, geo.unit, inp.dst, n_atoms, self.rank)
        if self.uses_triplets:
            t_t = self.triplet_mlp(inp.mt).squeeze(-1) * geo.trip_w  # [n_triplets]
            out = out + eq6_triplet_expansion(t_t, geo.u_kj, geo.u_ji, geo.center, n_atoms, self.rank)
        if self.uses_nodes:
            s = self.node_mlp(inp.h).squeeze(-1)  # [n_atoms]
            out = out + s.view(-1, 1, 1) * torch.eye(3, dtype=out.dtype, device=out.device)
        return out

    def forward(self, inp: HeadInputs, zero_net_force: bool = False) -> torch.Tensor:
        """The property: [n_atoms, 3, ...] per atom, [n_structures, 3, ...] per structure."""
        atomic = self.scale * self.atomic(inp, zero_net_force)
        ref = self.reference[inp.species]  # [n_atoms]
        if self.extensive:  # a per-structure scalar summed over atoms (energy), in float64
            return total_energy(atomic, ref, inp.batch, len(inp.n_atoms))
        if self.rank == 0:
            atomic = atomic + ref
        elif self.rank == 2:
            atomic = atomic + ref.view(-1, 1, 1) * torch.eye(3, dtype=atomic.dtype, device=atomic.device)
        if self.per_atom:
            return atomic
        return eq1_crystal_average(atomic, inp.batch, inp.n_atoms)


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------


class ETGNN(nn.Module):
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
    def species(self) -> Tuple[str, ...]:
        return self.config.species

    @property
    def heads(self) -> Tuple[str, ...]:
        return self.config.heads

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

        ``recompute``: under autograd, keep only each edge block's inputs and recompute the block's
        [n_triplets, *] intermediates during the backward pass (activation checkpointing): the same
        numbers and gradients for about one extra trunk forward, and a peak memory of about one block
        instead of all of them (conservative forces of large cells).
        """
        self.check_radii(batch)
        species = self.species_index(batch["numbers"])  # [n_atoms]
        geo = self.geometry(batch)
        g = self.embedding(species)  # [n_atoms, hidden]
        m = self.edge_embedding(g, geo.rbf, batch["edge_src"], batch["edge_dst"])  # [n_edges, hidden]
        m_blocks = []
        args = (geo.rbf, geo.sbf, batch["trip_in"], batch["trip_out"])
        for block in self.edge_blocks:
            if recompute and torch.is_grad_enabled():
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
        (triplet messages for non-symmetric rank-2 and rank-3 heads, node features for energy and the
        isotropic rank-2 term). Asking again for other heads reuses what the state already holds."""
        names = list(self.heads) if heads is None else list(heads)
        for name in names:
            if name not in self.heads_:
                raise KeyError(f"model has no head {name!r}; heads: {list(self.heads)}")
        b = state.batch
        inp = HeadInputs(
            geo=state.geo, species=state.species, batch=b["batch"], n_atoms=b["n_atoms"], dst=b["edge_dst"],
            edge_reverse=b["edge_reverse"], m=state.m_blocks[-1],
            mt=self._triplet_messages(state) if any(self.heads_[n].uses_triplets for n in names) else None,
            h=self._node_features(state) if any(self.heads_[n].uses_nodes for n in names) else None,
        )
        out = {name: self.heads_[name](inp, self.config.zero_net_force) for name in names}
        if self.config.bec_asr and "born_effective_charges" in out:
            z = out["born_effective_charges"]  # [n_atoms, 3, 3]
            mean = eq1_crystal_average(z, b["batch"], b["n_atoms"])  # [B, 3, 3]
            out["born_effective_charges"] = z - mean[b["batch"]]
        return out

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


def _init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Deterministic initialisation from an explicit generator (no global RNG is touched).

    Linear weights ~ N(0, 1/fan_in) (variance-preserving), biases 0, embeddings ~ U(-sqrt3, sqrt3);
    the heads' last layers are scaled by 0.02 so untrained outputs are of order one.
    """
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                w = torch.randn(mod.weight.shape, generator=generator, dtype=torch.float64)
                mod.weight.copy_(w / math.sqrt(mod.in_features))
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.Embedding):
                w = torch.rand(mod.weight.shape, generator=generator, dtype=torch.float64)
                mod.weight.copy_((2 * w - 1) * math.sqrt(3.0))
        # small last layers in the heads: an untrained model's edge sums (~70 terms) stay of order one
        for head in model.heads_.values():
            for mlp in (head.edge_mlp, head.triplet_mlp, head.node_mlp):
                if mlp is not None:
                    mlp[-1].weight.mul_(0.02)


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
