"""Irreducible (spherical-harmonic) decompositions of crystal tensors (Heilman, Schlesinger & Yan;
Itin & Reches).

``kind="rank2"``: ``T = l0 + l1 + l2`` (isotropic, antisymmetric, symmetric traceless).
``kind="piezo"`` (``e_ijk = e_ikj``): totally symmetric part ``S`` = ``S_l1 + S_l3`` and mixed-symmetry
part ``A = e - S`` = ``A_l1 + A_l2``.  ``kind="elastic"`` (full Voigt symmetry): ``S_l0 + S_l2 + S_l4``
plus ``A_l0 + A_l2``.  Parts are mutually orthogonal and sum to the input.  Spherical components are
real-spherical-harmonic coefficients (``m = -l..l``, Condon-Shortley phase, real combination of the
paper's Appendix C, for ``l = 1`` the order ``(y, z, x)`` as in e3nn), orthonormal: ``|c| = |part|``,
and ``c(R . T) = D^l(R) c(T)`` for proper rotations (``(-1)^rank D^l(-R)`` for improper ones); the overall
sign of each part's basis is a fixed convention.

numpy float64, side-effect free.
"""
from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
from scipy.linalg import expm
from scipy.spatial.transform import Rotation

from .projection import ArrayLike, elastic_voigt_to_tensor, intrinsic_projector, readonly

__all__ = [
    "PART_DEGREES",
    "irreducible_parts",
    "spherical_components",
    "from_spherical_components",
    "part_irreps",
    "wigner_d",
]

#: part name -> l for every decomposition kind (parts are listed in this order).
PART_DEGREES: Dict[str, Dict[str, int]] = {
    "rank2": {"l0": 0, "l1": 1, "l2": 2},
    "piezo": {"S_l1": 1, "S_l3": 3, "A_l1": 1, "A_l2": 2},
    "elastic": {"S_l0": 0, "S_l2": 2, "S_l4": 4, "A_l0": 0, "A_l2": 2},
}
_KIND_RANK = {"rank2": 2, "piezo": 3, "elastic": 4}
_KIND_SYMMETRY = {"rank2": "none", "piezo": "symmetric_last2", "elastic": "voigt"}


def _so3_generators() -> np.ndarray:
    """``[3, 3, 3]`` real antisymmetric generators ``(L_k)_ij = -eps_kij`` (``R = expm(theta n.L)``)."""
    L = np.zeros((3, 3, 3))
    for k, i, j in itertools.permutations(range(3)):
        sign = np.linalg.det(np.eye(3)[[k, i, j]])
        L[k, i, j] = -sign
    return L


def _tensor_generators(rank: int) -> np.ndarray:
    """``[3, 3^rank, 3^rank]`` generators of ``R . T`` on flattened rank-``rank`` tensors."""
    L = _so3_generators()
    n = 3 ** rank
    J = np.zeros((3, n, n))
    for k in range(3):
        for slot in range(rank):
            K = np.ones((1, 1))
            for s in range(rank):
                K = np.kron(K, L[k] if s == slot else np.eye(3))
            J[k] += K
    return J


@lru_cache(maxsize=None)
def _real_sh_generators(l: int) -> np.ndarray:
    """``[3, 2l+1, 2l+1]`` real generators of the real-spherical-harmonic coefficient representation."""
    m = np.arange(-l, l + 1)
    d = 2 * l + 1
    Jz = np.diag(m).astype(complex)
    Jp = np.zeros((d, d), dtype=complex)  # J+ |m> = sqrt(l(l+1) - m(m+1)) |m+1>
    for a in range(d - 1):
        Jp[a + 1, a] = math.sqrt(l * (l + 1) - m[a] * (m[a] + 1))
    Jm = Jp.conj().T
    Jx, Jy = (Jp + Jm) / 2, (Jp - Jm) / (2j)
    # real basis (columns) in terms of complex Y_l^m, Condon-Shortley phase (paper 004, Appendix C)
    B = np.zeros((d, d), dtype=complex)
    for r, mr in enumerate(m):
        mu = abs(mr)
        if mr == 0:
            B[l, r] = 1.0
        elif mr > 0:
            B[l - mu, r], B[l + mu, r] = 1 / math.sqrt(2), (-1) ** mu / math.sqrt(2)
        else:
            B[l - mu, r], B[l + mu, r] = 1j / math.sqrt(2), -1j * (-1) ** mu / math.sqrt(2)
    G = np.stack([B.conj().T @ (-1j * J) @ B for J in (Jx, Jy, Jz)])
    assert np.abs(G.imag).max() < 1e-12
    return readonly(G.real)


def wigner_d(l: int, R: ArrayLike) -> np.ndarray:
    """Real Wigner-D matrix ``[2l+1, 2l+1]`` of a proper rotation ``R`` for the real-SH basis used here.

    ``D^1(R) = P R P^T`` with ``P`` the reordering ``(x, y, z) -> (y, z, x)``; spherical components
    transform as ``c(R . T) = D^l(R) c(T)``.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or np.abs(R.T @ R - np.eye(3)).max() > 1e-6:
        raise ValueError("R must be a 3x3 orthogonal matrix")
    if np.linalg.det(R) < 0:
        raise ValueError("wigner_d needs a proper rotation (det R = +1); use -R and the part's parity")
    if l < 0:
        raise ValueError(f"l must be >= 0, got {l}")
    rotvec = Rotation.from_matrix(R).as_rotvec()
    return expm(np.einsum("k,kij->ij", rotvec, _real_sh_generators(int(l))))


@lru_cache(maxsize=None)
def _decomposition_bases(kind: str) -> Dict[str, np.ndarray]:
    """part name -> ``Q [2l+1, 3^rank]`` with orthonormal rows spanning the part, intertwining
    the tensor representation with the real-SH representation of degree l."""
    rank = _KIND_RANK[kind]
    n = 3 ** rank
    J = _tensor_generators(rank)
    C = -np.einsum("kij,kjl->il", J, J)  # Casimir, eigenvalue l(l+1) on degree-l content
    P_int = intrinsic_projector(rank, _KIND_SYMMETRY[kind])
    if kind == "rank2":
        splits = {"": np.eye(n)}
    else:
        P_S = intrinsic_projector(rank, "full")
        splits = {"S_": P_S, "A_": P_int - P_S}

    def casimir_projector(l: int) -> np.ndarray:
        P = np.eye(n)
        for lp in range(rank + 1):
            if lp != l:
                P = P @ (C - lp * (lp + 1) * np.eye(n)) / (l * (l + 1) - lp * (lp + 1))
        return P

    ref = np.sin(1.0 + 0.7 * np.arange(n))  # fixed generic tensor: sign convention of each basis
    bases: Dict[str, np.ndarray] = {}
    for name, l in PART_DEGREES[kind].items():
        prefix = name[:2] if kind != "rank2" else ""
        P = splits[prefix] @ casimir_projector(l)
        w, V = np.linalg.eigh(0.5 * (P + P.T))
        Bp = V[:, w > 0.5]  # [n, 2l+1] orthonormal basis of the part
        if Bp.shape[1] != 2 * l + 1:
            raise AssertionError(f"{kind}/{name}: dimension {Bp.shape[1]} != {2 * l + 1}")
        j = np.einsum("ai,kab,bj->kij", Bp, J, Bp)  # restricted generators
        G = _real_sh_generators(l)
        d = 2 * l + 1
        eye = np.eye(d)
        # M j_k = G_k M  for k = x, y, z   (row-major vec(M))
        A = np.concatenate([np.kron(eye, j[k].T) - np.kron(G[k], eye) for k in range(3)])
        _, s, Vt = np.linalg.svd(A)
        M = Vt[-1].reshape(d, d)
        if d > 1 and s[-2] < 1e-8:
            raise AssertionError(f"{kind}/{name}: intertwiner not unique")
        M /= math.sqrt(np.trace(M @ M.T) / d)
        Q = M @ Bp.T
        if np.sum(Q @ (P_int @ ref)) < 0:
            Q = -Q
        bases[name] = readonly(Q)
    return bases


def _infer_kind(T: np.ndarray, kind: Optional[str]) -> Tuple[np.ndarray, str]:
    if kind is None:
        kind = {2: "rank2", 3: "piezo", 4: "elastic"}.get(T.ndim)
        if T.shape == (6, 6):
            kind = "elastic"
        if kind is None:
            raise ValueError(f"cannot infer the decomposition kind from shape {T.shape}")
    if kind not in _KIND_RANK:
        raise ValueError(f"kind must be one of {sorted(_KIND_RANK)}, got {kind!r}")
    if kind == "elastic" and T.shape == (6, 6):
        T = elastic_voigt_to_tensor(T)
    rank = _KIND_RANK[kind]
    if T.shape != (3,) * rank:
        raise ValueError(f"kind {kind!r} needs shape {(3,) * rank}, got {T.shape}")
    if kind != "rank2":
        flat = T.reshape(-1)
        P = intrinsic_projector(rank, _KIND_SYMMETRY[kind])
        if np.abs(P @ flat - flat).max() > 1e-8 * max(1.0, np.abs(flat).max()):
            what = "e_ijk = e_ikj" if kind == "piezo" else "C_ijkl = C_jikl = C_ijlk = C_klij"
            raise ValueError(f"{kind} tensor lacks the index symmetry {what}")
    return T, kind


def irreducible_parts(T: ArrayLike, kind: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Cartesian irreducible parts of a tensor (same shape as ``T``); they sum to ``T`` and are
    mutually orthogonal.

    Args:
        T: rank-2 ``(3, 3)`` (any), piezo ``(3, 3, 3)`` (``e_ijk = e_ikj``) or elastic ``(3, 3, 3, 3)``
            / Voigt ``(6, 6)`` (full Voigt symmetry).
        kind: ``"rank2"``, ``"piezo"``, ``"elastic"`` or None (inferred from the shape).
    Returns:
        dict ``PART_DEGREES[kind]`` names -> parts (elastic parts as ``(3, 3, 3, 3)``).
    """
    T, kind = _infer_kind(np.asarray(T, dtype=np.float64), kind)
    flat = T.reshape(-1)
    return {name: (Q.T @ (Q @ flat)).reshape(T.shape) for name, Q in _decomposition_bases(kind).items()}


def spherical_components(T: ArrayLike, kind: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Real-spherical-harmonic components (``2l+1`` numbers, ``m = -l..l``) of each irreducible part.

    Orthonormal: ``norm(components[name]) == norm(irreducible_parts(T)[name])``.
    """
    T, kind = _infer_kind(np.asarray(T, dtype=np.float64), kind)
    flat = T.reshape(-1)
    return {name: Q @ flat for name, Q in _decomposition_bases(kind).items()}


def from_spherical_components(components: Mapping[str, ArrayLike], kind: str) -> np.ndarray:
    """Inverse of :func:`spherical_components`: Cartesian tensor from (a subset of) the components."""
    if kind not in _KIND_RANK:
        raise ValueError(f"kind must be one of {sorted(_KIND_RANK)}, got {kind!r}")
    bases = _decomposition_bases(kind)
    flat = np.zeros(3 ** _KIND_RANK[kind])
    for name, c in components.items():
        if name not in bases:
            raise ValueError(f"unknown part {name!r} for kind {kind!r}; expected {list(bases)}")
        c = np.asarray(c, dtype=np.float64)
        if c.shape != (bases[name].shape[0],):
            raise ValueError(f"part {name!r} needs {bases[name].shape[0]} components, got {c.shape}")
        flat = flat + bases[name].T @ c
    return flat.reshape((3,) * _KIND_RANK[kind])


def part_irreps(kind: str) -> Dict[str, str]:
    """O(3) irreps of the parts in e3nn notation, e.g. ``{"l0": "0e", "l1": "1e", "l2": "2e"}``.

    Parity is ``(-1)^rank``: the antisymmetric part of a rank-2 tensor is a pseudovector (``1e``),
    the mixed ``l = 2`` part of a piezo tensor a pseudotensor (``2o``).
    """
    if kind not in _KIND_RANK:
        raise ValueError(f"kind must be one of {sorted(_KIND_RANK)}, got {kind!r}")
    p = "e" if _KIND_RANK[kind] % 2 == 0 else "o"
    return {name: f"{l}{p}" for name, l in PART_DEGREES[kind].items()}
