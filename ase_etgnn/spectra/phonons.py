"""Harmonic phonons with phonopy, driven by any ASE calculator; NAC parameters; Gamma-point modes.

Conventions
-----------
* Born effective charges follow ``ase_etgnn.properties``: ``Z[a, i, j] = dF_j / dE_i =
  Omega dP_i / du_j`` (first index field/polarisation, second displacement).  This is also
  phonopy's layout: its non-analytic term builds ``(q.Z)_j = sum_i q_i Z[a, i, j]``
  (``phonopy.harmonic.dynamical_matrix``, ``np.dot(q, born)``), which is the Gonze & Lee form
  (PRB 55, 10355 (1997)) with ``Z_{i j} = Omega dP_i/du_j``.  Hence no transpose is needed;
  ``tests/test_spectroscopy.py`` checks this with a non-symmetric ``Z`` against an independent
  long-wavelength model.
* Frequencies are in cm^-1; imaginary frequencies are returned as negative numbers (phonopy style).
* Mode eigenvectors ``e_s`` are the orthonormal eigenvectors of the mass-weighted dynamical matrix
  ``D = Phi / sqrt(m_a m_b)`` (eV/(A^2 amu)); the Cartesian displacement pattern of a normal
  coordinate ``Q_s`` (A sqrt(amu)) is ``u_a = Q_s e_s,a / sqrt(m_a)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..conventions import apply_sum_rule
from ..symmetry import symmetrize_results
from .units import PHONOPY_NAC_FACTOR, THZ_TO_CM1, frequency_cm1_from_eigenvalue

__all__ = [
    "atoms_to_phonopy",
    "phonopy_to_atoms",
    "make_phonopy",
    "nac_params",
    "set_nac",
    "write_born_file",
    "read_born_file",
    "frequencies_at_gamma",
    "GammaModes",
    "gamma_modes",
    "degenerate_groups",
    "imaginary_qpoints",
    "band_path",
]

ArrayLike = Union[np.ndarray, Sequence]


def _require_phonopy():
    try:
        import phonopy  # noqa: F401
    except ImportError as exc:  # pragma: no cover - phonopy is a declared dependency
        raise ImportError("phonopy is required for the phonon workflows: pip install phonopy") from exc


def atoms_to_phonopy(atoms: Atoms):
    """Convert ``ase.Atoms`` to ``phonopy.structure.atoms.PhonopyAtoms`` (masses kept, in amu)."""
    _require_phonopy()
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=np.array(atoms.cell[:], dtype=np.float64),
        scaled_positions=atoms.get_scaled_positions(wrap=False),
        masses=atoms.get_masses(),
    )


def phonopy_to_atoms(patoms: Any) -> Atoms:
    """Convert a ``PhonopyAtoms`` (or phonopy ``Primitive``/``Supercell``) to a periodic ``ase.Atoms``."""
    atoms = Atoms(
        symbols=list(patoms.symbols),
        cell=np.array(patoms.cell, dtype=np.float64),
        scaled_positions=np.array(patoms.scaled_positions, dtype=np.float64),
        pbc=True,
    )
    if patoms.masses is not None:
        atoms.set_masses(np.array(patoms.masses, dtype=np.float64))
    return atoms


def _get_calc(atoms: Atoms, calc: Optional[Calculator]) -> Calculator:
    calc = calc if calc is not None else atoms.calc
    if calc is None:
        raise ValueError("no calculator: pass calc= or attach one to the Atoms")
    return calc


def _evaluate(atoms: Atoms, calc: Calculator, name: str) -> np.ndarray:
    """Evaluate property ``name`` of a private copy of ``atoms`` with ``calc`` (float64 copy)."""
    work = atoms.copy()
    work.calc = calc
    if name == "forces":
        value = work.get_forces()
    else:
        value = calc.get_property(name, work)
    if value is None:
        raise ValueError(f"calculator {type(calc).__name__} returned no {name!r}")
    return np.array(value, dtype=np.float64)


def make_phonopy(
    atoms: Atoms,
    calc: Optional[Calculator] = None,
    supercell_matrix: ArrayLike = (2, 2, 2),
    primitive_matrix: Union[str, ArrayLike, None] = None,
    displacement: float = 0.01,
    symmetrize: bool = True,
    *,
    symprec: float = 1e-5,
    is_plusminus: Union[str, bool] = "auto",
    subtract_residual_forces: bool = True,
    nac: bool = False,
    log_level: int = 0,
):
    """Build a ``phonopy.Phonopy`` object whose force constants come from ``calc``'s forces.

    The finite-displacement method (Togo & Tanaka, Scr. Mater. 108, 1 (2015)): phonopy generates
    symmetry-reduced displaced supercells, ``calc`` evaluates their forces (eV/A), and phonopy fits
    the second-order force constants (eV/A^2).

    Args:
        atoms: unit cell (not modified).  Its masses (amu) are used.
        calc: ASE calculator providing ``forces``; defaults to ``atoms.calc``.
        supercell_matrix: 3 integers (diagonal) or a 3x3 integer matrix, supercell of ``atoms``.
        primitive_matrix: phonopy's primitive matrix w.r.t. ``atoms``.  ``None`` (default) means the
            identity ("P"): the primitive cell is ``atoms`` itself, atoms in the same order.  Pass
            ``"auto"`` to let phonopy find the primitive cell.
        displacement: atomic displacement amplitude in A.
        symmetrize: symmetrise the force constants (translational invariance + index permutation,
            phonopy's ``symmetrize_force_constants``).
        symprec: symmetry tolerance in A passed to phonopy.
        is_plusminus: phonopy's choice of +/- displacements ("auto", True, False).
        subtract_residual_forces: subtract the forces of the undisplaced supercell (one extra
            calculation) from every displaced one; removes the effect of an imperfectly relaxed
            structure to first order.
        nac: also compute and set NAC parameters with :func:`nac_params` on the primitive cell (needs
            a calculator giving ``born_effective_charges`` and ``dielectric_tensor``).
        log_level: phonopy verbosity.

    Returns:
        ``phonopy.Phonopy`` with ``force_constants`` produced (and ``nac_params`` set if ``nac``).
    """
    _require_phonopy()
    from phonopy import Phonopy

    calc = _get_calc(atoms, calc)
    smat = np.array(supercell_matrix, dtype=int)
    if smat.shape == (3,):
        smat = np.diag(smat)
    if smat.shape != (3, 3):
        raise ValueError(f"supercell_matrix must be 3 integers or 3x3, got shape {smat.shape}")
    pmat: Union[str, np.ndarray]
    if primitive_matrix is None:
        pmat = "P"
    elif isinstance(primitive_matrix, str):
        pmat = primitive_matrix
    else:
        pmat = np.array(primitive_matrix, dtype=np.float64)
    if not np.all(atoms.pbc):
        raise ValueError("make_phonopy needs a fully periodic Atoms (pbc=True)")

    phonon = Phonopy(atoms_to_phonopy(atoms), supercell_matrix=smat, primitive_matrix=pmat,
                     symprec=symprec, log_level=log_level)
    phonon.generate_displacements(distance=displacement, is_plusminus=is_plusminus)
    supercells = phonon.supercells_with_displacements
    if supercells is None:  # pragma: no cover - phonopy always returns them after generate
        raise RuntimeError("phonopy produced no displaced supercells")
    residual = None
    if subtract_residual_forces:
        residual = _evaluate(phonopy_to_atoms(phonon.supercell), calc, "forces")
    forces = []
    for sc in supercells:
        f = _evaluate(phonopy_to_atoms(sc), calc, "forces")
        if residual is not None:
            f = f - residual
        forces.append(f)
    phonon.forces = np.array(forces, dtype=np.float64)
    phonon.produce_force_constants()
    if symmetrize:
        phonon.symmetrize_force_constants()
    if nac:
        set_nac(phonon, calc, symprec=symprec)
    return phonon


def nac_params(
    atoms_primitive: Atoms,
    calc: Optional[Calculator] = None,
    *,
    symmetrize: bool = True,
    asr: bool = True,
    symprec: float = 1e-5,
    factor: float = PHONOPY_NAC_FACTOR,
) -> Dict[str, Any]:
    """Phonopy NAC parameters ``{'born', 'dielectric', 'factor'}`` computed by ``calc``.

    Args:
        atoms_primitive: the phonopy primitive cell, atoms in phonopy's primitive order (use
            ``phonopy_to_atoms(phonon.primitive)``; with the default ``primitive_matrix=None`` of
            :func:`make_phonopy` that is the input unit cell).  Not modified.
        calc: calculator giving ``born_effective_charges`` (N,3,3, e, ``Z[a,i,j]=dF_j/dE_i``) and
            ``dielectric_tensor`` (3,3, eps_inf); defaults to ``atoms_primitive.calc``.
        symmetrize: project onto the crystal symmetry (``ase_etgnn.symmetry.symmetrize_results``, the
            same average as phonopy's ``symmetrize_borns_and_epsilon``).
        asr: impose the charge-neutrality sum rule ``sum_a Z_a = 0`` (mean subtracted).
        symprec: symmetry tolerance (A).
        factor: phonopy's unit factor e^2/(4 pi eps0) in eV*A (14.399652 for eV/A units).

    Returns:
        dict with ``born`` (N,3,3) float64 in phonopy's layout (identical to ours, see module
        docstring), ``dielectric`` (3,3) float64, ``factor`` float.
    """
    calc = _get_calc(atoms_primitive, calc)
    born = _evaluate(atoms_primitive, calc, "born_effective_charges")
    eps = _evaluate(atoms_primitive, calc, "dielectric_tensor")
    n = len(atoms_primitive)
    if born.shape != (n, 3, 3):
        raise ValueError(f"born_effective_charges has shape {born.shape}, expected {(n, 3, 3)}")
    if eps.shape != (3, 3):
        raise ValueError(f"dielectric_tensor has shape {eps.shape}, expected (3, 3)")
    eps = 0.5 * (eps + eps.T)
    if np.linalg.eigvalsh(eps).min() <= 0.0:
        raise ValueError(f"dielectric_tensor is not positive definite (eigenvalues "
                         f"{np.linalg.eigvalsh(eps)}); the non-analytic correction needs eps_inf > 0")
    if symmetrize:
        born, eps = _symmetrize_born_eps(atoms_primitive, born, eps, symprec=symprec, asr=asr)
    if asr:
        born = apply_sum_rule(born)
    return {
        "born": np.ascontiguousarray(born, dtype=np.float64),
        "dielectric": np.ascontiguousarray(eps, dtype=np.float64),
        "factor": float(factor),
    }


def _symmetrize_born_eps(atoms: Atoms, born: np.ndarray, eps: np.ndarray, *, symprec: float,
                         asr: bool) -> Tuple[np.ndarray, np.ndarray]:
    """(Z (N,3,3), eps (3,3)) projected onto the crystal symmetry (:func:`symmetrize_results`)."""
    out = symmetrize_results(atoms, {"born_effective_charges": born, "dielectric_tensor": eps},
                             symprec=symprec, asr=asr)
    return (np.array(out["born_effective_charges"], dtype=np.float64),
            np.array(out["dielectric_tensor"], dtype=np.float64))


def set_nac(phonon, calc: Calculator, **kwargs) -> Dict[str, Any]:
    """Compute :func:`nac_params` on ``phonon.primitive`` with ``calc`` and set them on ``phonon``."""
    params = nac_params(phonopy_to_atoms(phonon.primitive), calc, **kwargs)
    phonon.nac_params = params
    return params


def write_born_file(path: Union[str, Path], nac: Dict[str, Any], primitive: Any = None,
                    *, symprec: float = 1e-5) -> Path:
    """Write a phonopy ``BORN`` file.

    Format (phonopy docs, "BORN (optional)"): line 1 the unit factor, line 2 the 9 components of
    eps_inf (row-major), then one line of 9 components ``Z[i, j]`` (row-major, first index field)
    per atom.  When ``primitive`` (ase.Atoms or PhonopyAtoms) is given, only the
    symmetry-independent atoms are written, as phonopy's parser expects for a symmetric cell; without
    it every atom is written, which ``phonopy.file_IO.parse_BORN(..., is_symmetry=False)`` reads.

    Returns the path written.
    """
    path = Path(path)
    born = np.asarray(nac["born"], dtype=np.float64)
    eps = np.asarray(nac["dielectric"], dtype=np.float64)
    factor = float(nac.get("factor", PHONOPY_NAC_FACTOR))
    indices = np.arange(len(born))
    if primitive is not None:
        _require_phonopy()
        from phonopy.structure.symmetry import Symmetry

        patoms = atoms_to_phonopy(primitive) if isinstance(primitive, Atoms) else primitive
        if len(patoms) != len(born):
            raise ValueError(f"primitive has {len(patoms)} atoms, born has {len(born)}")
        indices = np.array(Symmetry(patoms, symprec=symprec).get_independent_atoms(), dtype=int)
    lines = [f"{factor:.8f}", " ".join(f"{x:.10f}" for x in eps.ravel())]
    for a in indices:
        lines.append(" ".join(f"{x:.10f}" for x in born[a].ravel()))
    path.write_text("\n".join(lines) + "\n")
    return path


def read_born_file(path: Union[str, Path], primitive: Union[Atoms, Any], *, symprec: float = 1e-5,
                   is_symmetry: bool = True) -> Dict[str, Any]:
    """Read a ``BORN`` file with phonopy's own parser (``phonopy.file_IO.parse_BORN``)."""
    _require_phonopy()
    from phonopy.file_IO import parse_BORN

    patoms = atoms_to_phonopy(primitive) if isinstance(primitive, Atoms) else primitive
    return dict(parse_BORN(patoms, symprec=symprec, is_symmetry=is_symmetry, filename=str(path)))


def _cartesian_to_reduced_q(phonon, q_cart: np.ndarray) -> np.ndarray:
    # phonopy: q_cart = inv(cell) @ q_red (rows of cell = lattice vectors), hence q_red = cell @ q_cart
    return np.array(phonon.primitive.cell, dtype=np.float64) @ q_cart


def frequencies_at_gamma(phonon, q_direction: Optional[ArrayLike] = None, *, cartesian: bool = True,
                         unit: str = "cm-1") -> np.ndarray:
    """Gamma-point frequencies, with LO-TO splitting for the limit q -> 0 along ``q_direction``.

    The non-analytic term (Cochran & Cowley 1962; Gonze & Lee 1997) is phonopy's, using the NAC
    parameters set on ``phonon`` (``set_nac``); without NAC parameters or without ``q_direction`` the
    analytic (TO-only) frequencies are returned.

    Args:
        phonon: phonopy object with force constants.
        q_direction: direction of q (only the direction matters).
        cartesian: ``q_direction`` is Cartesian (default) rather than reduced reciprocal coordinates.
        unit: "cm-1" (default) or "THz".

    Returns:
        (3N,) sorted frequencies; imaginary ones negative.
    """
    if phonon.force_constants is None:
        raise ValueError("phonon has no force constants")
    nac_dir = None
    if q_direction is not None:
        qd = np.array(q_direction, dtype=np.float64).reshape(3)
        if not np.any(qd):
            raise ValueError("q_direction must be non-zero")
        nac_dir = _cartesian_to_reduced_q(phonon, qd) if cartesian else qd
    qp = phonon.run_qpoints([[0.0, 0.0, 0.0]], nac_q_direction=nac_dir)
    freqs = np.array(qp.frequencies[0], dtype=np.float64)
    if unit.lower() in ("cm-1", "cm^-1", "cm1"):
        return freqs * THZ_TO_CM1
    if unit.lower() == "thz":
        return freqs
    raise ValueError(f"unknown unit {unit!r}; use 'cm-1' or 'THz'")


def imaginary_qpoints(phonon, qpoints: ArrayLike, threshold_cm1: float = -5.0) -> List[Dict[str, Any]]:
    """The q-points whose lowest phonon frequency is below ``threshold_cm1`` (imaginary, negative here).

    Args:
        phonon: phonopy object with force constants (NAC parameters used if set).
        qpoints: (n, 3) reduced coordinates of the primitive cell's reciprocal lattice.
        threshold_cm1: cm^-1; the default -5 ignores the numerical noise of acoustic modes near Gamma.

    Returns:
        ``[{"q": [3] reduced, "index": i, "frequency_cm1": lowest frequency}, ...]`` in input order.
    """
    q = np.asarray(qpoints, dtype=np.float64).reshape(-1, 3)  # [n, 3]
    if phonon.force_constants is None:
        raise ValueError("phonon has no force constants")
    freqs = np.asarray(phonon.run_qpoints(q).frequencies, dtype=np.float64) * THZ_TO_CM1  # [n, 3N] cm^-1
    return _imaginary(q, freqs, threshold_cm1)


def _imaginary(q: np.ndarray, freqs: np.ndarray, threshold_cm1: float) -> List[Dict[str, Any]]:
    """:func:`imaginary_qpoints` from frequencies already computed: ``q`` [n, 3], ``freqs`` [n, 3N] cm^-1."""
    low = freqs.min(axis=1)  # [n]
    return [{"q": q[i].tolist(), "index": int(i), "frequency_cm1": float(low[i])}
            for i in np.nonzero(low < threshold_cm1)[0]]


def band_path(phonon, path: Sequence[Tuple[str, Sequence[float]]], n_per_segment: int = 20,
              threshold_cm1: float = -5.0) -> Dict[str, Any]:
    """Frequencies along straight segments between labelled q-points, and the imaginary ones among them.

    Args:
        phonon: phonopy object with force constants (NAC parameters used if set).
        path: ``[(label, q), ...]``, q in reduced coordinates of the primitive cell's reciprocal lattice;
            consecutive points are joined by straight segments.
        n_per_segment: q-points per segment after its first.
        threshold_cm1: as for :func:`imaginary_qpoints`, whose entries ``"imaginary"`` lists, each with ``"segment"``.

    Returns:
        ``{"q": [n, 3] reduced, "distance": [n] 1/A (without 2 pi), "frequencies_cm1": [n, 3N],
        "ticks": [len(path)] distances of the labelled points, "labels", "imaginary"}``.
    """
    if len(path) < 2:
        raise ValueError("band_path needs at least two labelled q-points")
    rec = np.linalg.inv(np.asarray(phonon.primitive.cell, dtype=np.float64)).T  # [3, 3] rows: b_i / 2 pi
    qpts: List[np.ndarray] = []
    segment: List[str] = []
    dist: List[float] = []
    ticks = [0.0]
    x = 0.0
    for (n0, q0), (n1, q1) in zip(path[:-1], path[1:]):
        steps = np.linspace(0.0, 1.0, n_per_segment + 1)
        for t in steps[1:] if qpts else steps:
            q = (1.0 - t) * np.asarray(q0, dtype=np.float64) + t * np.asarray(q1, dtype=np.float64)  # [3]
            if qpts:
                x += float(np.linalg.norm((q - qpts[-1]) @ rec))
            qpts.append(q)
            segment.append(f"{n0}-{n1}")
            dist.append(x)
        ticks.append(x)
    q_all = np.array(qpts)  # [n, 3]
    freqs = np.asarray(phonon.run_qpoints(q_all).frequencies, dtype=np.float64) * THZ_TO_CM1  # [n, 3N]
    bad = _imaginary(q_all, freqs, threshold_cm1)  # the same frequencies, not a second phonopy run
    for b in bad:
        b["segment"] = segment[b["index"]]
    return {"q": q_all, "distance": np.array(dist), "frequencies_cm1": freqs, "ticks": ticks,
            "labels": [n for n, _ in path], "imaginary": bad}


def degenerate_groups(frequencies: ArrayLike, tol: float = 1e-2) -> List[List[int]]:
    """Group indices of sorted ``frequencies`` whose neighbours differ by less than ``tol``."""
    f = np.asarray(frequencies, dtype=np.float64)
    groups: List[List[int]] = []
    for i in range(len(f)):
        if groups and abs(f[i] - f[groups[-1][-1]]) < tol:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class GammaModes:
    """Gamma-point normal modes (analytic dynamical matrix, i.e. TO modes, no NAC).

    Attributes:
        atoms: primitive cell (ase.Atoms, phonopy primitive order), no calculator attached.
        eigenvalues: (3N,) omega^2 in eV/(A^2 amu), ascending.
        frequencies_cm1: (3N,) signed frequencies in cm^-1 (negative = imaginary).
        eigenvectors: (3N, N, 3) real orthonormal eigenvectors e_s of the mass-weighted dynamical
            matrix (dimensionless).
        masses: (N,) amu.
        acoustic: (3N,) bool, the three modes with the largest projection on rigid translations.
        irreps: per-mode irreducible-representation labels from phonopy (None when unavailable).
    """

    atoms: Atoms
    eigenvalues: np.ndarray
    frequencies_cm1: np.ndarray
    eigenvectors: np.ndarray
    masses: np.ndarray
    acoustic: np.ndarray
    irreps: List[Optional[str]] = field(default_factory=list)

    @property
    def volume(self) -> float:
        """Primitive-cell volume in A^3."""
        return float(abs(np.linalg.det(np.array(self.atoms.cell[:]))))

    @property
    def n_modes(self) -> int:
        return len(self.eigenvalues)

    def displacement_patterns(self) -> np.ndarray:
        """(3N, N, 3) Cartesian displacement per unit normal coordinate, ``e_s,a / sqrt(m_a)``
        in A / (A sqrt(amu)) = amu^-1/2."""
        return self.eigenvectors / np.sqrt(self.masses)[None, :, None]

    @property
    def optical(self) -> np.ndarray:
        return ~self.acoustic


def _acoustic_mask(eigvecs: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Mark the 3 modes with the largest weight on the mass-weighted rigid translations."""
    n_modes = eigvecs.shape[0]
    sq = np.sqrt(masses)
    trans = np.zeros((3, len(masses), 3))
    for k in range(3):
        trans[k, :, k] = sq
    trans = trans.reshape(3, -1) / np.sqrt(masses.sum())
    weight = np.sum((eigvecs.reshape(n_modes, -1) @ trans.T) ** 2, axis=1)
    mask = np.zeros(n_modes, dtype=bool)
    mask[np.argsort(weight)[-3:]] = True
    return mask


def gamma_modes(phonon, *, irreps: bool = True, degeneracy_tolerance: float = 1e-4) -> GammaModes:
    """Diagonalise phonopy's analytic dynamical matrix at Gamma (no NAC).

    The dynamical matrix ``D_{ai,bj} = sum_L Phi_{ai,bj}(L) / sqrt(m_a m_b)`` (eV/(A^2 amu)) is taken
    from phonopy with the non-analytic correction switched off (q = 0 exactly, no direction), so the
    polar modes are the transverse ones (the usual input of IR/Raman formulas).

    Args:
        phonon: phonopy object with force constants.
        irreps: try to label modes with phonopy's irreducible representations.
        degeneracy_tolerance: THz tolerance passed to phonopy's irreps.

    Returns:
        :class:`GammaModes`.
    """
    if phonon.force_constants is None:
        raise ValueError("phonon has no force constants")
    dm = phonon.dynamical_matrix
    if dm is None:  # pragma: no cover
        raise RuntimeError("phonopy has no dynamical matrix")
    dm.run(np.zeros(3))  # Gamma without a direction: phonopy adds no NAC term
    dmat = np.array(dm.dynamical_matrix)
    if np.abs(dmat.imag).max(initial=0.0) > 1e-8 * max(1.0, np.abs(dmat).max()):
        raise RuntimeError("dynamical matrix at Gamma is not real")
    dmat = 0.5 * (dmat.real + dmat.real.T)
    evals, evecs = np.linalg.eigh(dmat)
    n = len(phonon.primitive)
    eigvecs = evecs.T.reshape(3 * n, n, 3).copy()
    masses = np.array(phonon.primitive.masses, dtype=np.float64)
    atoms = phonopy_to_atoms(phonon.primitive)
    labels: List[Optional[str]] = [None] * (3 * n)
    if irreps:
        labels = _irrep_labels(phonon, 3 * n, degeneracy_tolerance)
    return GammaModes(
        atoms=atoms,
        eigenvalues=evals,
        frequencies_cm1=frequency_cm1_from_eigenvalue(evals),
        eigenvectors=eigvecs,
        masses=masses,
        acoustic=_acoustic_mask(eigvecs, masses),
        irreps=labels,
    )


def _irrep_labels(phonon, n_modes: int, tol: float) -> List[Optional[str]]:
    """Per-band irrep labels at Gamma from phonopy (None where phonopy cannot assign one)."""
    labels: List[Optional[str]] = [None] * n_modes
    try:
        # q = 0 without nac_q_direction: phonopy labels the analytic (TO) modes
        ir = phonon.run_irreps([0.0, 0.0, 0.0], degeneracy_tolerance=tol)
        ir_labels = getattr(ir, "_ir_labels", None)  # no public accessor in phonopy 4.x
        if ir_labels is None:
            return labels
        for bands, label in zip(ir.band_indices, ir_labels):
            for b in bands:
                labels[b] = label
    except Exception:  # irreps are a convenience; never fail the workflow on them
        pass
    return labels
