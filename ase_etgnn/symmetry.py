"""Crystal symmetry for ETGNN predictions: projection onto the symmetric subspace, irreducible
(spherical-harmonic) decompositions, and the GMTNet symmetry-success metrics.

Everything here is numpy float64 and side-effect free: inputs are never modified, results are new arrays.

Conventions
-----------
* ASE cell rows are lattice vectors, so Cartesian ``r = A x`` with ``A = cell.T`` and fractional ``x``.
  spglib returns space-group operations ``(W, t)`` acting on fractional column vectors,
  ``x' = W x + t``; the Cartesian point operation is ``R = A W A^-1`` (orthogonal; ``det R = +-1``).
* Operation ``g`` sends atom ``a`` onto atom ``perm[g, a]`` (positions wrapped periodically). Symmetric
  per-atom data therefore obey ``F[perm[g, a]] = R_g F[a]`` (vectors, e.g. forces) and
  ``Z[perm[g, a]] = R_g Z[a] R_g^T`` (rank-2 per atom, e.g. Born effective charges), and crystal tensors
  obey ``T = R_g . T`` (``R`` applied to every index).
* The projections are group averages (Reynolds operators), orthogonal projections for the Frobenius
  inner product:  ``T_sym = 1/|G| sum_g R_g . T``,  ``F_sym[a] = 1/|G| sum_g R_g^T F[perm[g, a]]``,
  ``Z_sym[a] = 1/|G| sum_g R_g^T Z[perm[g, a]] R_g``.  They also enforce the intrinsic index symmetry
  of the property registry (``symmetric``: ``T = T^T``; ``symmetric_last2``: ``e_ijk = e_ikj``).
  Born effective charges then get the acoustic sum rule by subtracting the mean over atoms; this
  commutes with the group average (it removes a point-group invariant tensor from every atom), so the
  result is still symmetric.  The BEC average is the one of phonopy's
  ``symmetrize_borns_and_epsilon`` (same index convention ``Z[a, i, j]``, ``i`` = field/polarisation,
  ``j`` = displacement, as its non-analytic correction contracts ``q_i Z[a, i, j]``; the average is
  invariant under transposing all ``Z`` anyway).
* Non-periodic structures (``pbc`` not all True) get the trivial group (identity only): molecules are
  not symmetrised.  For the identity-only group the group average is skipped, so ``symmetrize`` returns
  exact copies (up to intrinsic symmetrisation ``(T + T^T)/2``, itself exact for symmetric input, and the
  BEC acoustic sum rule when ``asr=True``).

Irreducible decompositions (Heilman, Schlesinger & Yan; Itin & Reches)
---------------------------------------------------------------------
``kind="rank2"``: ``T = l0 + l1 + l2`` (isotropic, antisymmetric, symmetric traceless).
``kind="piezo"`` (``e_ijk = e_ikj``): totally symmetric part ``S`` = ``S_l1 + S_l3`` and mixed-symmetry
part ``A = e - S`` = ``A_l1 + A_l2``.  ``kind="elastic"`` (full Voigt symmetry): ``S_l0 + S_l2 + S_l4``
plus ``A_l0 + A_l2``.  Parts are mutually orthogonal and sum to the input.  Spherical components are
real-spherical-harmonic coefficients (``m = -l..l``, Condon-Shortley phase, real combination of the
paper's Appendix C, for ``l = 1`` the order ``(y, z, x)`` as in e3nn), orthonormal: ``|c| = |part|``,
and ``c(R . T) = D^l(R) c(T)`` for proper rotations (``(-1)^rank D^l(-R)`` for improper ones); the overall
sign of each part's basis is a fixed convention.

GMTNet metrics (Yan et al., GMTNet, ICML 2024, Sec. 5.2-5.3, Tables 2, 3, 5)
-------------------------------------------------------------------------
Symmetry-required zeros / equalities are read off the projector matrix ``P`` (flattened tensor):
element ``p`` is required to vanish when row ``P[p]`` is zero, elements ``p, q`` are required equal
when rows ``P[p] == P[q]`` (non-zero), excluding equalities already implied by the intrinsic index
symmetry (``eps_xy = eps_yx``), i.e. counting only independent (canonical) elements.  A crystal's
prediction has *zero success* when every required zero has ``|x| < 1e-5`` and *equality success* when
every required equal pair differs by ``< 1e-4`` (absolute, in the property's units).  Crystals without
any required zero (equality) are not counted for that metric.  Per-site BEC constraints use the per-atom
projector (site symmetry, orbit relations and ASR) and compare elements within one atom's tensor.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from .conventions import CRYSTAL_SYSTEMS, VOIGT_PAIRS, crystal_system_from_number
from .properties import PROPERTIES

__all__ = [
    "CrystalSymmetry",
    "symmetrize_results",
    "crystal_system_from_number",
    "rotate_tensor",
    "intrinsic_projector",
    # irreducible decompositions
    "PART_DEGREES",
    "irreducible_parts",
    "spherical_components",
    "from_spherical_components",
    "part_irreps",
    "wigner_d",
    "elastic_voigt_to_tensor",
    "elastic_tensor_to_voigt",
    # GMTNet metrics
    "SymmetryConstraints",
    "symmetry_constraints",
    "zero_success",
    "equality_success",
    "symmetry_success",
    "success_rates",
    "format_success_table",
]

ArrayLike = Union[np.ndarray, Sequence]

#: intrinsic index symmetry of the tensors handled here (registry names + elastic).
_INTRINSIC: Dict[str, Tuple[int, str]] = {
    name: (spec.rank, spec.symmetry) for name, spec in PROPERTIES.items() if not spec.per_atom
}
_INTRINSIC["elastic_tensor"] = (4, "voigt")
_PER_ATOM_PROPS = {name for name, spec in PROPERTIES.items() if spec.per_atom}

def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # own copy
    a.setflags(write=False)
    return a


def rotate_tensor(T: ArrayLike, R: ArrayLike) -> np.ndarray:
    """``R`` applied to every index of a Cartesian tensor: ``T'_{i..} = R_ia ... T_{a..}``.

    Args:
        T: one tensor of shape ``(3,) * rank`` (no batch axes).
        R: 3x3 (orthogonal) matrix.
    """
    T = np.asarray(T, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"R must have shape (3, 3), got {R.shape}")
    if any(s != 3 for s in T.shape):
        raise ValueError(f"T must have shape (3,)*rank, got {T.shape}")
    out = T
    for axis in range(T.ndim):
        out = np.moveaxis(np.tensordot(R, out, axes=([1], [axis])), 0, axis)
    return np.array(out)


# --------------------------------------------------------------------------------------------------
# intrinsic index symmetry
# --------------------------------------------------------------------------------------------------
def _perm_matrix(rank: int, perm: Tuple[int, ...]) -> np.ndarray:
    """Matrix of the slot permutation ``T'_{i_0..i_n} = T_{i_perm[0] ... }`` on flattened tensors."""
    n = 3 ** rank
    idx = np.arange(n).reshape((3,) * rank)
    src = np.transpose(idx, perm).reshape(-1)
    M = np.zeros((n, n))
    M[np.arange(n), src] = 1.0
    return M


@lru_cache(maxsize=None)
def _intrinsic_projector_cached(rank: int, symmetry: str) -> np.ndarray:
    if symmetry == "none":
        perms = [tuple(range(rank))]
    elif symmetry == "symmetric":
        if rank != 2:
            raise ValueError(f"'symmetric' needs rank 2, got {rank}")
        perms = [(0, 1), (1, 0)]
    elif symmetry == "symmetric_last2":
        if rank != 3:
            raise ValueError(f"'symmetric_last2' needs rank 3, got {rank}")
        perms = [(0, 1, 2), (0, 2, 1)]
    elif symmetry == "voigt":
        if rank != 4:
            raise ValueError(f"'voigt' needs rank 4, got {rank}")
        perms = [(0, 1, 2, 3), (1, 0, 2, 3), (0, 1, 3, 2), (1, 0, 3, 2),
                 (2, 3, 0, 1), (3, 2, 0, 1), (2, 3, 1, 0), (3, 2, 1, 0)]
    elif symmetry == "full":
        perms = list(itertools.permutations(range(rank)))
    else:
        raise ValueError(f"unknown intrinsic symmetry {symmetry!r}; expected 'none', 'symmetric', "
                         "'symmetric_last2', 'voigt' or 'full'")
    P = sum(_perm_matrix(rank, p) for p in perms) / len(perms)
    return _readonly(P)


def intrinsic_projector(rank: int, symmetry: str) -> np.ndarray:
    """Orthogonal projector ``[3^rank, 3^rank]`` onto tensors with the given index symmetry.

    ``symmetry``: ``"none"``, ``"symmetric"`` (rank 2), ``"symmetric_last2"`` (rank 3),
    ``"voigt"`` (rank 4, ``C_ijkl = C_jikl = C_ijlk = C_klij``) or ``"full"`` (all permutations).
    """
    return _intrinsic_projector_cached(int(rank), str(symmetry))


def _apply_flat(P: np.ndarray, T: np.ndarray) -> np.ndarray:
    return (P @ T.reshape(-1)).reshape(T.shape)


def _symmetrize_intrinsic(T: np.ndarray, symmetry: str) -> np.ndarray:
    """Exact for already-symmetric input: ``(a + a) / 2 == a`` in floating point."""
    if symmetry == "none":
        return T.copy()
    if symmetry == "symmetric":
        return 0.5 * (T + T.T)
    if symmetry == "symmetric_last2":
        return 0.5 * (T + np.swapaxes(T, 1, 2))
    return _apply_flat(intrinsic_projector(T.ndim, symmetry), T)


# --------------------------------------------------------------------------------------------------
# CrystalSymmetry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CrystalSymmetry:
    """Space-group symmetry of one structure, as needed to symmetrise predictions.

    Build with :meth:`from_atoms`.  Arrays are read-only.

    Attributes:
        n_atoms: number of atoms N.
        spacegroup_number: ITA number (1 for the trivial group).
        spacegroup_symbol: international short symbol, e.g. ``"P3_221"``.
        point_group: Hermann-Mauguin point-group symbol, e.g. ``"32"``.
        crystal_system: ``"triclinic"`` ... ``"cubic"``.
        rotations: ``[n_ops, 3, 3]`` Cartesian point parts ``R_g`` of all space-group operations of the
            given cell (pure translations of a supercell included), orthogonal.
        permutations: ``[n_ops, N]`` int, operation ``g`` sends atom ``a`` onto ``permutations[g, a]``.
        frac_rotations: ``[n_ops, 3, 3]`` int spglib rotations ``W`` (fractional coordinates).
        frac_translations: ``[n_ops, 3]`` spglib translations ``t`` (fractional).
        point_rotations: ``[n_point, 3, 3]`` the distinct ``R_g`` (the point group, order ``n_point``).
        symprec: spglib distance tolerance (Angstrom) used.
        periodic: False when built for a non-periodic structure (identity-only group).
    """

    n_atoms: int
    spacegroup_number: int
    spacegroup_symbol: str
    point_group: str
    crystal_system: str
    rotations: np.ndarray
    permutations: np.ndarray
    frac_rotations: np.ndarray
    frac_translations: np.ndarray
    point_rotations: np.ndarray
    symprec: float = 1e-5
    periodic: bool = True
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ---------------------------------------------------------------- construction
    @classmethod
    def trivial(cls, n_atoms: int, periodic: bool = True, symprec: float = 1e-5) -> "CrystalSymmetry":
        """Identity-only group for ``n_atoms`` atoms (symmetrisation is then a no-op)."""
        if n_atoms < 1:
            raise ValueError(f"n_atoms must be >= 1, got {n_atoms}")
        eye = np.eye(3)[None]
        return cls(
            n_atoms=int(n_atoms), spacegroup_number=1, spacegroup_symbol="P1", point_group="1",
            crystal_system="triclinic", rotations=_readonly(eye),
            permutations=_readonly(np.arange(n_atoms)[None]),
            frac_rotations=_readonly(np.eye(3, dtype=np.int64)[None]),
            frac_translations=_readonly(np.zeros((1, 3))), point_rotations=_readonly(eye),
            symprec=float(symprec), periodic=bool(periodic),
        )

    @classmethod
    def from_atoms(cls, atoms, symprec: float = 1e-5, angle_tolerance: float = -1.0) -> "CrystalSymmetry":
        """Find the space group of ``atoms`` with spglib (elements distinguished by atomic number).

        Args:
            atoms: ``ase.Atoms``. Non-periodic structures (``pbc`` not all True) get the trivial group.
            symprec: spglib Cartesian distance tolerance in Angstrom.
            angle_tolerance: spglib angle tolerance in degrees (-1: spglib's default).

        Falls back to the identity-only group, with a ``RuntimeWarning``, when spglib fails or its
        operations do not map the atoms onto each other within ``3 * symprec``.

        Raises:
            ValueError: empty structure, singular cell or non-positive ``symprec``.
        """
        import spglib

        n = len(atoms)
        if n == 0:
            raise ValueError("cannot determine the symmetry of an empty structure")
        if not symprec > 0:
            raise ValueError(f"symprec must be > 0, got {symprec}")
        if not np.all(atoms.pbc):
            return cls.trivial(n, periodic=False, symprec=symprec)
        cell = np.array(atoms.cell[:], dtype=np.float64)  # rows = lattice vectors
        if abs(np.linalg.det(cell)) < 1e-10:
            raise ValueError("periodic structure with a singular cell: set atoms.cell or atoms.pbc=False")
        frac = np.array(atoms.get_scaled_positions(wrap=True), dtype=np.float64)
        numbers = np.array(atoms.numbers, dtype=np.int64)
        try:
            with warnings.catch_warnings():  # spglib 2.x: DeprecationWarning about OLD_ERROR_HANDLING
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = spglib.get_symmetry_dataset((cell, frac, numbers), symprec=symprec,
                                                 angle_tolerance=angle_tolerance)
                err = (spglib.get_error_message() or "no dataset returned") if ds is None else ""
        except Exception as exc:  # spglib >= 2.5 may raise SpglibError instead of returning None
            ds, err = None, str(exc)
        if ds is None:
            warnings.warn(f"spglib could not determine the symmetry ({err}); using the identity only",
                          RuntimeWarning, stacklevel=2)
            return cls.trivial(n, periodic=True, symprec=symprec)

        W = np.array(ds.rotations, dtype=np.int64)  # [n_ops, 3, 3]
        t = np.array(ds.translations, dtype=np.float64)  # [n_ops, 3]
        A = cell.T  # columns = lattice vectors
        # Idealised lattice in the input orientation, so that every R = A W A^-1 is orthogonal even when
        # the lattice is only symmetric within symprec: (a b c) = R_std^T (a_s b_s c_s)_ideal P.
        A_ideal = (np.asarray(ds.std_rotation_matrix).T @ np.asarray(ds.std_lattice).T
                   @ np.asarray(ds.transformation_matrix))
        if not np.allclose(A_ideal, A, atol=max(10 * symprec, 1e-6) * max(1.0, np.abs(A).max()),
                           rtol=0):
            A_ideal = A  # should not happen; fall back to the actual lattice
        R = np.einsum("ij,gjk,kl->gil", A_ideal, W, np.linalg.inv(A_ideal))
        dev = np.abs(np.einsum("gji,gjk->gik", R, R) - np.eye(3)).max()
        if dev > 1e-3:
            raise RuntimeError(f"spglib operations are not orthogonal in Cartesian space (deviation {dev:.2e})")
        U, _, Vt = np.linalg.svd(R)  # remove rounding: nearest orthogonal matrices
        R = U @ Vt

        try:
            perms = _atom_permutations(cell, frac, numbers, W, t, tol=3.0 * symprec + 1e-10)
        except RuntimeError as exc:
            warnings.warn(f"{exc}; using the identity only", RuntimeWarning, stacklevel=2)
            return cls.trivial(n, periodic=True, symprec=symprec)
        keys = [tuple(w.reshape(-1)) for w in W]
        first = sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values())
        number = int(ds.number)
        return cls(
            n_atoms=n, spacegroup_number=number, spacegroup_symbol=str(ds.international),
            point_group=str(ds.pointgroup), crystal_system=crystal_system_from_number(number),
            rotations=_readonly(R), permutations=_readonly(perms), frac_rotations=_readonly(W),
            frac_translations=_readonly(t), point_rotations=_readonly(R[first]), symprec=float(symprec),
            periodic=True,
        )

    # ---------------------------------------------------------------- basic properties
    @property
    def n_operations(self) -> int:
        """Number of space-group operations of the cell (``len(rotations)``)."""
        return int(self.rotations.shape[0])

    @property
    def order(self) -> int:
        """Order of the point group."""
        return int(self.point_rotations.shape[0])

    @property
    def is_trivial(self) -> bool:
        """True when the only operation is the identity."""
        return self.n_operations == 1

    def site_symmetry(self, atom: int) -> np.ndarray:
        """``[n, 3, 3]`` distinct Cartesian rotations of the operations that leave atom ``atom`` in place."""
        if not 0 <= atom < self.n_atoms:
            raise ValueError(f"atom index {atom} out of range for {self.n_atoms} atoms")
        sel = self.rotations[self.permutations[:, atom] == atom]
        _, idx = np.unique(np.round(sel, 8).reshape(len(sel), -1), axis=0, return_index=True)
        return sel[np.sort(idx)]

    def __repr__(self) -> str:
        return (f"CrystalSymmetry({self.spacegroup_symbol} (#{self.spacegroup_number}), point group "
                f"{self.point_group}, {self.crystal_system}, {self.n_operations} operations, "
                f"{self.n_atoms} atoms)")

    # ---------------------------------------------------------------- projectors
    def tensor_projector(self, rank: int, symmetry: str = "none") -> np.ndarray:
        """Projector ``[3^rank, 3^rank]`` of the point-group average times the intrinsic projector.

        Acts on C-order flattened tensors; ``kron(R, R, ...)`` represents ``R . T``.
        """
        key = f"tensor:{rank}:{symmetry}"
        if key not in self._cache:
            n = 3 ** rank
            P = np.zeros((n, n))
            for R in self.point_rotations:
                K = np.ones((1, 1))
                for _ in range(rank):
                    K = np.kron(K, R)
                P += K
            P /= self.order
            self._cache[key] = _readonly(P @ intrinsic_projector(rank, symmetry))
        return self._cache[key]

    def per_atom_projector_rows(self, atom: int, rank: int, asr: bool = False) -> np.ndarray:
        """Rows ``[3^rank, N*3^rank]`` of :meth:`per_atom_projector` belonging to atom ``atom``
        (memory O(N), for constraints of large cells)."""
        if not 0 <= atom < self.n_atoms:
            raise ValueError(f"atom index {atom} out of range for {self.n_atoms} atoms")
        N, d = self.n_atoms, 3 ** rank
        key = f"kron_t:{rank}"
        if key not in self._cache:  # [n_ops, d, d]: R^T (x) ... (x) R^T
            K = np.ones((self.n_operations, 1, 1))
            for _ in range(rank):
                K = np.einsum("gab,gji->gaibj", K, self.rotations).reshape(
                    self.n_operations, K.shape[1] * 3, K.shape[2] * 3)
            self._cache[key] = _readonly(K)
        K = self._cache[key]
        rows = np.zeros((N, d, d))
        np.add.at(rows, self.permutations[:, atom], K)  # output atom a reads input atom g(a)
        rows /= self.n_operations
        if asr:  # minus the mean over output atoms: every column block gets the point-group average / N
            rows -= K.sum(axis=0) / (self.n_operations * N)
        return rows.transpose(1, 0, 2).reshape(d, N * d)

    def per_atom_projector(self, rank: int, asr: bool = False) -> np.ndarray:
        """Dense projector ``[N*3^rank, N*3^rank]`` of the per-atom average (atom-major flattening).

        ``asr=True`` includes the acoustic sum rule (mean over atoms removed).  O(N^2) memory: meant
        for small cells and tests; see :meth:`per_atom_projector_rows`.
        """
        key = f"atom:{rank}:{asr}"
        if key not in self._cache:
            P = np.concatenate([self.per_atom_projector_rows(a, rank, asr) for a in range(self.n_atoms)])
            self._cache[key] = _readonly(P)
        return self._cache[key]

    # ---------------------------------------------------------------- symmetrisation
    def symmetrize_tensor(self, T: ArrayLike, symmetry: str = "none") -> np.ndarray:
        """Point-group average of a crystal tensor of rank 0-4: ``1/|G| sum_g R_g . T``.

        Args:
            T: ``(3,) * rank``.
            symmetry: intrinsic index symmetry to impose as well (see :func:`intrinsic_projector`).
        Returns:
            new float64 array of the same shape.
        """
        T = np.asarray(T, dtype=np.float64)
        if T.ndim > 4 or any(s != 3 for s in T.shape):
            raise ValueError(f"crystal tensor must have shape (3,)*rank with rank <= 4, got {T.shape}")
        T = _symmetrize_intrinsic(T, symmetry)
        if self.is_trivial or T.ndim == 0:
            return T
        out = np.zeros_like(T)
        for R in self.point_rotations:
            out += rotate_tensor(T, R)
        # again, so that rounding in the average cannot break the index symmetry
        return _symmetrize_intrinsic(out / self.order, symmetry)

    def symmetrize_vectors(self, F: ArrayLike) -> np.ndarray:
        """Symmetrise per-atom vectors ``[N, 3]`` (e.g. forces, eV/A): ``1/|G| sum_g R_g^T F[g(a)]``."""
        F = np.asarray(F, dtype=np.float64)
        if F.shape != (self.n_atoms, 3):
            raise ValueError(f"per-atom vectors must have shape ({self.n_atoms}, 3), got {F.shape}")
        if self.is_trivial:
            return F.copy()
        Fg = F[self.permutations]  # [n_ops, N, 3]: F[g(a)]
        return np.einsum("gji,gaj->ai", self.rotations, Fg) / self.n_operations

    def symmetrize_atom_tensors(self, Z: ArrayLike, asr: bool = False) -> np.ndarray:
        """Symmetrise per-atom rank-2 tensors ``[N, 3, 3]`` (e.g. BEC, e): ``1/|G| sum R^T Z[g(a)] R``.

        ``asr=True`` then subtracts the mean over atoms (acoustic sum rule ``sum_a Z[a] = 0``).
        """
        Z = np.asarray(Z, dtype=np.float64)
        if Z.shape != (self.n_atoms, 3, 3):
            raise ValueError(f"per-atom tensors must have shape ({self.n_atoms}, 3, 3), got {Z.shape}")
        if self.is_trivial:
            out = Z.copy()
        else:
            Zg = Z[self.permutations]  # [n_ops, N, 3, 3]
            out = np.einsum("gki,gakl,glj->aij", self.rotations, Zg, self.rotations) / self.n_operations
        if asr:
            out = out - out.mean(axis=0, keepdims=True)
        return out

    def symmetrize(self, results: Mapping[str, Any], asr: bool = True) -> Dict[str, Any]:
        """Project every registry property present in ``results`` onto its symmetric subspace.

        ``energy`` and keys unknown to the registry are copied unchanged; ``forces`` ``[N, 3]``;
        ``stress`` ``(3, 3)`` or ASE Voigt ``(6,)`` (kept in the same layout); ``born_effective_charges``
        ``[N, 3, 3]`` (plus the acoustic sum rule when ``asr``); ``dielectric_tensor`` ``(3, 3)``;
        ``piezoelectric_tensor`` ``(3, 3, 3)``; ``elastic_tensor`` ``(3, 3, 3, 3)`` or Voigt ``(6, 6)``.
        Returns a new dict of new float64 arrays; ``results`` is not modified.
        """
        out: Dict[str, Any] = {}
        for key, value in results.items():
            try:
                out[key] = self._symmetrize_one(key, value, asr)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        return out

    def _symmetrize_one(self, key: str, value: Any, asr: bool) -> Any:
        """Symmetrise one entry of a results dict (see :meth:`symmetrize`)."""
        if key == "forces":
            return self.symmetrize_vectors(value)
        if key == "born_effective_charges":
            return self.symmetrize_atom_tensors(value, asr=asr)
        if key == "stress" and np.shape(value) == (6,):
            s3 = voigt_6_to_full_3x3_stress(np.asarray(value, dtype=np.float64))
            return full_3x3_to_voigt_6_stress(self.symmetrize_tensor(s3, "symmetric"))
        if key == "elastic_tensor" and np.shape(value) == (6, 6):
            return elastic_tensor_to_voigt(self.symmetrize_tensor(elastic_voigt_to_tensor(value), "voigt"))
        if key in _INTRINSIC and _INTRINSIC[key][0] > 0:
            rank, sym = _INTRINSIC[key]
            if np.shape(value) != (3,) * rank:
                raise ValueError(f"must have shape {(3,) * rank}, got {np.shape(value)}")
            return self.symmetrize_tensor(value, sym)
        # energy, free_energy, anything else: untouched
        return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def symmetrize_results(atoms, results: Mapping[str, Any], symprec: float = 1e-5,
                       asr: bool = True) -> Dict[str, Any]:
    """``CrystalSymmetry.from_atoms(atoms, symprec).symmetrize(results, asr)`` (see there)."""
    return CrystalSymmetry.from_atoms(atoms, symprec=symprec).symmetrize(results, asr=asr)


def _atom_permutations(cell: np.ndarray, frac: np.ndarray, numbers: np.ndarray, W: np.ndarray,
                       t: np.ndarray, tol: float) -> np.ndarray:
    """``[n_ops, N]``: operation ``(W, t)`` sends atom ``a`` onto atom ``perm[g, a]`` (periodic images).

    Uses a periodic k-d tree in fractional coordinates and checks the Cartesian distance (<= ``tol`` A)
    and the species of every match.
    """
    from scipy.spatial import cKDTree

    def wrap(x: np.ndarray) -> np.ndarray:
        x = x - np.floor(x)
        x[x >= 1.0] = 0.0
        return x

    tree = cKDTree(wrap(frac.copy()), boxsize=1.0)
    N = len(frac)
    perms = np.empty((len(W), N), dtype=np.int64)
    for g, (w, tt) in enumerate(zip(W, t)):
        xp = wrap(frac @ w.T + tt)
        _, j = tree.query(xp, k=1)
        d = xp - frac[j]
        d -= np.round(d)
        dist = np.linalg.norm(d @ cell, axis=1)
        if dist.max() > tol or np.any(numbers[j] != numbers) or len(np.unique(j)) != N:
            raise RuntimeError(
                f"space-group operation {g} does not map the structure onto itself within {tol:.2e} A "
                f"(max distance {dist.max():.2e} A); try a different symprec")
        perms[g] = j
    return perms


def elastic_voigt_to_tensor(C6: ArrayLike) -> np.ndarray:
    """Voigt ``(6, 6)`` elastic matrix (order xx, yy, zz, yz, xz, xy) -> ``(3, 3, 3, 3)`` tensor."""
    C6 = np.asarray(C6, dtype=np.float64)
    if C6.shape != (6, 6):
        raise ValueError(f"Voigt elastic matrix must have shape (6, 6), got {C6.shape}")
    C = np.zeros((3, 3, 3, 3))
    for a, (i, j) in enumerate(VOIGT_PAIRS):
        for b, (k, l) in enumerate(VOIGT_PAIRS):
            for p, q in {(i, j), (j, i)}:
                for r, s in {(k, l), (l, k)}:
                    C[p, q, r, s] = C6[a, b]
    return C


def elastic_tensor_to_voigt(C: ArrayLike) -> np.ndarray:
    """``(3, 3, 3, 3)`` elastic tensor -> Voigt ``(6, 6)`` (no factors; order xx, yy, zz, yz, xz, xy)."""
    C = np.asarray(C, dtype=np.float64)
    if C.shape != (3, 3, 3, 3):
        raise ValueError(f"elastic tensor must have shape (3, 3, 3, 3), got {C.shape}")
    return np.array([[C[i, j, k, l] for (k, l) in VOIGT_PAIRS] for (i, j) in VOIGT_PAIRS])


# --------------------------------------------------------------------------------------------------
# irreducible (spherical-harmonic) decompositions
# --------------------------------------------------------------------------------------------------
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
    return _readonly(G.real)


def wigner_d(l: int, R: ArrayLike) -> np.ndarray:
    """Real Wigner-D matrix ``[2l+1, 2l+1]`` of a proper rotation ``R`` for the real-SH basis used here.

    ``D^1(R) = P R P^T`` with ``P`` the reordering ``(x, y, z) -> (y, z, x)``; spherical components
    transform as ``c(R . T) = D^l(R) c(T)``.
    """
    from scipy.linalg import expm
    from scipy.spatial.transform import Rotation

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
        bases[name] = _readonly(Q)
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


# --------------------------------------------------------------------------------------------------
# GMTNet symmetry-success metrics
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SymmetryConstraints:
    """Symmetry-required zeros and equalities of one property for one structure.

    Attributes:
        property: property name (registry name or ``"elastic_tensor"``).
        shape: shape of the property's value.
        zero: ``[n_zero]`` flat (C-order) indices of elements required to vanish.
        equal: ``[n_pairs, 2]`` flat index pairs required to be equal.
        opposite: ``[n_pairs', 2]`` flat index pairs required to be opposite (``x_p = -x_q``);
            not part of the GMTNet equality metric.
        crystal_system: crystal system of the structure.
    """

    property: str
    shape: Tuple[int, ...]
    zero: np.ndarray
    equal: np.ndarray
    opposite: np.ndarray
    crystal_system: str


def _row_constraints(P: np.ndarray, rows: np.ndarray, atol: float, P_int: Optional[np.ndarray]
                     ) -> Tuple[List[int], List[Tuple[int, int]], List[Tuple[int, int]]]:
    """Zero rows, equal and opposite row pairs of ``P`` among ``rows`` (canonical elements)."""
    zero, equal, opposite = [], [], []
    nz = []
    for p in rows:
        if np.abs(P[p]).max() < atol:
            if P_int is None or np.abs(P_int[p]).max() >= atol:
                zero.append(int(p))
        else:
            nz.append(int(p))
    for p, q in itertools.combinations(nz, 2):
        if np.abs(P[p] - P[q]).max() < atol:
            equal.append((p, q))
        elif np.abs(P[p] + P[q]).max() < atol:
            opposite.append((p, q))
    return zero, equal, opposite


def _canonical_rows(P_int: np.ndarray, atol: float) -> np.ndarray:
    """First element of each orbit of the intrinsic index permutations (independent elements)."""
    keep, seen = [], set()
    for p in range(P_int.shape[0]):
        if p in seen:
            continue
        orbit = np.nonzero(np.abs(P_int[p]) > atol)[0]
        seen.update(int(q) for q in orbit)
        keep.append(p)
    return np.array(keep, dtype=np.int64)


def symmetry_constraints(reference, property: str, asr: bool = True, symprec: float = 1e-5,
                         atol: float = 1e-8) -> SymmetryConstraints:
    """Symmetry-required zeros / equalities of ``property`` derived from the projector.

    Args:
        reference: ``ase.Atoms`` or :class:`CrystalSymmetry`.
        property: ``"dielectric_tensor"``, ``"piezoelectric_tensor"``, ``"elastic_tensor"``,
            ``"stress"`` or ``"born_effective_charges"`` (per site; ``asr`` includes the sum rule).
        atol: tolerance on projector rows (the projector entries are O(1)).
    """
    sym = reference if isinstance(reference, CrystalSymmetry) else CrystalSymmetry.from_atoms(
        reference, symprec=symprec)
    if property in _INTRINSIC and _INTRINSIC[property][0] >= 2:
        rank, s = _INTRINSIC[property]
        P_int = intrinsic_projector(rank, s)
        P = sym.tensor_projector(rank, s)
        zero, equal, opposite = _row_constraints(P, _canonical_rows(P_int, atol), atol, P_int)
        shape = (3,) * rank
    elif property == "born_effective_charges":
        zero, equal, opposite = [], [], []
        for a in range(sym.n_atoms):
            z, e, o = _row_constraints(sym.per_atom_projector_rows(a, 2, asr=asr), np.arange(9), atol, None)
            zero += [9 * a + p for p in z]
            equal += [(9 * a + p, 9 * a + q) for p, q in e]
            opposite += [(9 * a + p, 9 * a + q) for p, q in o]
        shape = (sym.n_atoms, 3, 3)
    else:
        raise ValueError(f"no symmetry constraints for property {property!r}; expected one of "
                         "'dielectric_tensor', 'piezoelectric_tensor', 'elastic_tensor', 'stress', "
                         "'born_effective_charges'")
    return SymmetryConstraints(
        property=property, shape=shape, zero=_readonly(np.array(zero, dtype=np.int64)),
        equal=_readonly(np.array(equal, dtype=np.int64).reshape(-1, 2)),
        opposite=_readonly(np.array(opposite, dtype=np.int64).reshape(-1, 2)),
        crystal_system=sym.crystal_system)


def _as_constraints(reference, property: Optional[str], symprec: float, asr: bool) -> SymmetryConstraints:
    if isinstance(reference, SymmetryConstraints):
        return reference
    if property is None:
        raise ValueError("property is required unless reference is a SymmetryConstraints")
    return symmetry_constraints(reference, property, asr=asr, symprec=symprec)


def _flat_pred(pred: ArrayLike, c: SymmetryConstraints) -> np.ndarray:
    x = np.asarray(pred, dtype=np.float64)
    if c.property == "elastic_tensor" and x.shape == (6, 6):
        x = elastic_voigt_to_tensor(x)
    if x.shape != c.shape:
        raise ValueError(f"prediction for {c.property} must have shape {c.shape}, got {x.shape}")
    return x.reshape(-1)


def zero_success(pred: ArrayLike, reference, property: Optional[str] = None, tol: float = 1e-5,
                 symprec: float = 1e-5, asr: bool = True) -> Optional[bool]:
    """GMTNet zero success: every symmetry-required zero has ``|x| < tol``; None if there is none.

    ``reference``: ``ase.Atoms``, :class:`CrystalSymmetry` or :class:`SymmetryConstraints`.
    """
    c = _as_constraints(reference, property, symprec, asr)
    if len(c.zero) == 0:
        return None
    return bool(np.all(np.abs(_flat_pred(pred, c)[c.zero]) < tol))


def equality_success(pred: ArrayLike, reference, property: Optional[str] = None, tol: float = 1e-4,
                     symprec: float = 1e-5, asr: bool = True) -> Optional[bool]:
    """GMTNet equality success: every symmetry-required equal pair differs by ``< tol``; None if none."""
    c = _as_constraints(reference, property, symprec, asr)
    if len(c.equal) == 0:
        return None
    x = _flat_pred(pred, c)
    return bool(np.all(np.abs(x[c.equal[:, 0]] - x[c.equal[:, 1]]) < tol))


def symmetry_success(pred: ArrayLike, reference, property: Optional[str] = None,
                     zero_tol: float = 1e-5, equal_tol: float = 1e-4, symprec: float = 1e-5,
                     asr: bool = True) -> Dict[str, Any]:
    """Both GMTNet metrics for one prediction, with diagnostics.

    Returns:
        dict: ``zero`` / ``equality`` (bool or None), ``n_zero``, ``n_equal``, ``max_zero_error``,
        ``max_equality_error`` (nan when not applicable), ``zero_error_ratio`` (GMTNet Table 8:
        ``sum |x_zero| / sum |x_nonzero|``), ``crystal_system``.
    """
    c = _as_constraints(reference, property, symprec, asr)
    x = _flat_pred(pred, c)
    zmask = np.zeros(x.size, dtype=bool)
    zmask[c.zero] = True
    zerr = np.abs(x[c.zero]).max() if len(c.zero) else float("nan")
    eerr = (np.abs(x[c.equal[:, 0]] - x[c.equal[:, 1]]).max() if len(c.equal) else float("nan"))
    denom = np.abs(x[~zmask]).sum()
    return {
        "zero": None if len(c.zero) == 0 else bool(zerr < zero_tol),
        "equality": None if len(c.equal) == 0 else bool(eerr < equal_tol),
        "n_zero": int(len(c.zero)), "n_equal": int(len(c.equal)),
        "max_zero_error": float(zerr), "max_equality_error": float(eerr),
        "zero_error_ratio": float(np.abs(x[zmask]).sum() / denom) if denom > 0 else float("nan"),
        "crystal_system": c.crystal_system,
    }


def success_rates(items: Iterable[Tuple[Any, Any]], property: str, zero_tol: float = 1e-5,
                  equal_tol: float = 1e-4, symprec: float = 1e-5, asr: bool = True
                  ) -> Dict[str, Dict[str, Any]]:
    """GMTNet success rates per crystal system (Tables 2, 3) over ``(reference, prediction)`` pairs.

    Args:
        items: pairs of (``ase.Atoms`` or :class:`CrystalSymmetry`, prediction); the prediction is the
            property's array or a results dict containing ``property``.
    Returns:
        ``{crystal_system: {"n", "n_zero", "zero_rate", "n_equal", "equality_rate"}}`` for the systems
        present (in the order triclinic ... cubic) plus ``"all"``; rates in [0, 1], nan when no crystal
        of the system has a required zero (equality); ``n_zero`` / ``n_equal`` count those crystals.
    """
    counts: Dict[str, List[int]] = {}
    for ref, pred in items:
        if isinstance(pred, Mapping):
            if property not in pred:
                raise ValueError(f"prediction dict has no {property!r}; keys: {sorted(pred)}")
            pred = pred[property]
        r = symmetry_success(pred, ref, property, zero_tol, equal_tol, symprec, asr)
        for key in (r["crystal_system"], "all"):
            c = counts.setdefault(key, [0, 0, 0, 0, 0])
            c[0] += 1
            if r["zero"] is not None:
                c[1] += 1
                c[2] += int(r["zero"])
            if r["equality"] is not None:
                c[3] += 1
                c[4] += int(r["equality"])
    order = [s for s in CRYSTAL_SYSTEMS if s in counts] + (["all"] if "all" in counts else [])
    return {k: {"n": counts[k][0], "n_zero": counts[k][1],
                "zero_rate": counts[k][2] / counts[k][1] if counts[k][1] else float("nan"),
                "n_equal": counts[k][3],
                "equality_rate": counts[k][4] / counts[k][3] if counts[k][3] else float("nan")}
            for k in order}


def format_success_table(rates: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Plain-text table of :func:`success_rates` output (percentages; '-' where not applicable)."""
    def pct(x: float) -> str:
        return "-" if x != x else f"{100 * x:.1f}%"

    lines = [title] if title else []
    lines.append(f"{'crystal system':<14} {'n':>3} {'zero (n)':>14} {'equality (n)':>16}")
    for k, r in rates.items():
        lines.append(f"{k:<14} {r['n']:>3} {pct(r['zero_rate']):>8} ({r['n_zero']:>3}) "
                     f"{pct(r['equality_rate']):>9} ({r['n_equal']:>3})")
    return "\n".join(lines)
