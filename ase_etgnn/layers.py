"""The building blocks of the ETGNN network and the paper's equations (Sections II-III, Eqs. 1-16).

Paper equations as functions: the edge and triplet expansions of atomic tensors (Eqs. 2-3, 5-8), the
crystal average (Eq. 1) and the float64 total energy.  Trunk blocks (DimeNet++-style, Fig. 2): the edge
embedding (Eq. 13), edge update blocks, the triplet embedding and update blocks (Eqs. 15-16) and the node
output block.  ``TensorHead``: one generic head per registry property, invariant coefficients times
products of unit edge vectors.  ``ase_etgnn.model`` assembles them into ``ETGNN``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .properties import get_property_spec

if TYPE_CHECKING:  # annotations only: model.py imports this module
    from .model import ETGNNConfig, HeadInputs

__all__ = [
    "EdgeEmbedding",
    "EdgeUpdate",
    "NodeOutput",
    "ResidualLayer",
    "TensorHead",
    "TripletEmbedding",
    "TripletUpdate",
    "eq1_crystal_average",
    "eq2_edge_expansion",
    "eq3_forces",
    "eq6_triplet_expansion",
    "total_energy",
]


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
        self.pair = spec.rank == 1 and cfg.force_head == "pair"
        self.uses_nodes = spec.rank == 0 or (spec.rank == 2 and cfg.isotropic) or self.pair  # needs h
        if self.pair:  # [m_kj of every block, h_k + h_j, h_k * h_j] -> t_kj
            n_in = cfg.n_blocks * cfg.hidden + 2 * cfg.out_emb
            self.edge_mlp = nn.Sequential(nn.Linear(n_in, cfg.out_emb), act, nn.Linear(cfg.out_emb, cfg.out_emb), act,
                                          nn.Linear(cfg.out_emb, 1))
        else:
            self.edge_mlp = _mlp(cfg.hidden, 1, act) if self.uses_edges else None
        self.triplet_mlp = _mlp(cfg.triplet_hidden, 1, act) if self.uses_triplets else None
        self.node_term = spec.rank == 0 or (spec.rank == 2 and cfg.isotropic)  # s_j (energy) or s_j I (Eq. 2 + I)
        self.node_mlp = _mlp(cfg.out_emb, 1, act) if self.node_term else None
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("reference", torch.zeros(len(cfg.species)))

    def _edge_features(self, inp: HeadInputs) -> torch.Tensor:
        """What t_kj is read from: m_kj, or for the pair force head every block's m_kj and h_k, h_j [n_edges, *]."""
        if not self.pair:
            return inp.m  # [n_edges, hidden]
        h_dst = inp.h[inp.dst]  # [n_edges, out_emb] atom j
        h_src = inp.h[inp.src]  # [n_edges, out_emb] atom k
        return torch.cat([*inp.m_blocks, h_src + h_dst, h_src * h_dst], dim=-1)  # [n_edges, n_in]

    def atomic(self, inp: HeadInputs, zero_net_force: bool) -> torch.Tensor:
        """Atomic tensors T_j (Eq. 2, with Eqs. 3-8 as special cases); [n_atoms, 3, ...] or [n_atoms]."""
        geo = inp.geo
        n_atoms = inp.species.shape[0]
        if self.rank == 0:
            return self.node_mlp(inp.h).squeeze(-1)  # [n_atoms]
        t_e = self.edge_mlp(self._edge_features(inp)).squeeze(-1) * geo.env  # [n_edges]
        if self.rank == 1:
            if zero_net_force:  # t_kj = t_jk: pair forces cancel in the sum over atoms
                t_e = 0.5 * (t_e + t_e[inp.edge_reverse])
            return eq3_forces(t_e, geo.unit, inp.dst, n_atoms)
        out = eq2_edge_expansion(t_e, geo.unit, inp.dst, n_atoms, self.rank)
        if self.uses_triplets:
            t_t = self.triplet_mlp(inp.mt).squeeze(-1) * geo.trip_w  # [n_triplets]
            out = out + eq6_triplet_expansion(t_t, geo.u_kj, geo.u_ji, geo.center, n_atoms, self.rank)
        if self.node_term:
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
