"""Space-group projection of ETGNN predictions: :class:`CrystalSymmetry`, :func:`symmetrize_results`,
tensor rotation, intrinsic index-symmetry projectors and the elastic Voigt <-> tensor conversion.

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
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import numpy as np
import spglib
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress
from scipy.spatial import cKDTree

from ..conventions import VOIGT_PAIRS, crystal_system_from_number, spglib_quietly
from ..properties import PROPERTIES, loss_target

__all__ = [
    "CrystalSymmetry",
    "symmetrize_results",
    "rotate_tensor",
    "intrinsic_projector",
    "elastic_voigt_to_tensor",
    "elastic_tensor_to_voigt",
]

ArrayLike = Union[np.ndarray, Sequence]

#: rank and intrinsic index symmetry of the crystal tensors handled here (registry names + elastic).
INTRINSIC_SYMMETRY: Dict[str, Tuple[int, str]] = {
    name: (spec.rank, spec.symmetry) for name, spec in PROPERTIES.items() if not spec.per_atom
}
INTRINSIC_SYMMETRY["elastic_tensor"] = (4, "voigt")


def readonly(a: np.ndarray) -> np.ndarray:
    """Own copy of ``a`` with the write flag cleared."""
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
    return readonly(P)


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
# elastic Voigt (6, 6) <-> tensor (3, 3, 3, 3)
# --------------------------------------------------------------------------------------------------
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
# atom permutations of the space-group operations
# --------------------------------------------------------------------------------------------------
def _atom_permutations(cell: np.ndarray, frac: np.ndarray, numbers: np.ndarray, W: np.ndarray,
                       t: np.ndarray, tol: float) -> np.ndarray:
    """``[n_ops, N]``: operation ``(W, t)`` sends atom ``a`` onto atom ``perm[g, a]`` (periodic images).

    Uses a periodic k-d tree in fractional coordinates and checks the Cartesian distance (<= ``tol`` A)
    and the species of every match.
    """
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
            crystal_system="triclinic", rotations=readonly(eye),
            permutations=readonly(np.arange(n_atoms)[None]),
            frac_rotations=readonly(np.eye(3, dtype=np.int64)[None]),
            frac_translations=readonly(np.zeros((1, 3))), point_rotations=readonly(eye),
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
            with spglib_quietly():
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
            rotations=readonly(R), permutations=readonly(perms), frac_rotations=readonly(W),
            frac_translations=readonly(t), point_rotations=readonly(R[first]), symprec=float(symprec),
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
            self._cache[key] = readonly(P @ intrinsic_projector(rank, symmetry))
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
            self._cache[key] = readonly(K)
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
            self._cache[key] = readonly(P)
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
        """Symmetrise one entry of a results dict (see :meth:`symmetrize`); an output that is not a property
        (``forces_conservative``) is treated as the property it stands for (``properties.loss_target``)."""
        key = loss_target(key)
        if key == "forces":
            return self.symmetrize_vectors(value)
        if key == "born_effective_charges":
            return self.symmetrize_atom_tensors(value, asr=asr)
        if key == "stress" and np.shape(value) == (6,):
            s3 = voigt_6_to_full_3x3_stress(np.asarray(value, dtype=np.float64))
            return full_3x3_to_voigt_6_stress(self.symmetrize_tensor(s3, "symmetric"))
        if key == "elastic_tensor" and np.shape(value) == (6, 6):
            return elastic_tensor_to_voigt(self.symmetrize_tensor(elastic_voigt_to_tensor(value), "voigt"))
        if key in INTRINSIC_SYMMETRY and INTRINSIC_SYMMETRY[key][0] > 0:
            rank, sym = INTRINSIC_SYMMETRY[key]
            if np.shape(value) != (3,) * rank:
                raise ValueError(f"must have shape {(3,) * rank}, got {np.shape(value)}")
            return self.symmetrize_tensor(value, sym)
        # energy, free_energy, anything else: untouched
        return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def symmetrize_results(atoms, results: Mapping[str, Any], symprec: float = 1e-5,
                       asr: bool = True) -> Dict[str, Any]:
    """``CrystalSymmetry.from_atoms(atoms, symprec).symmetrize(results, asr)`` (see there)."""
    return CrystalSymmetry.from_atoms(atoms, symprec=symprec).symmetrize(results, asr=asr)
