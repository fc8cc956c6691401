"""One-call Gamma-point IR + Raman workflow on top of phonopy and any ASE calculator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .infrared import ir_intensities, mode_effective_charges, static_dielectric_tensor
from .phonons import GammaModes, _cartesian_to_reduced_q, degenerate_groups, gamma_modes, set_nac
from .raman import RamanTensors, raman_tensors
from .units import THZ_TO_CM1

__all__ = ["GammaSpectra", "gamma_spectroscopy", "LOTOPair", "lo_to_pairs", "mode_groups", "mode_group_table",
           "relax_positions"]


def relax_positions(atoms: Atoms, calc: Calculator, fmax: float = 0.01, steps: int = 200) -> Atoms:
    """Relax the internal coordinates (cell fixed) keeping the space group (``FixSymmetry``, BFGS).

    Args:
        fmax: force threshold (eV/A).
    Returns:
        a new Atoms without calculator or constraint; ``atoms`` is left as it was.
    """
    from ase.constraints import FixSymmetry
    from ase.optimize import BFGS

    work = atoms.copy()
    work.calc = calc
    work.set_constraint(FixSymmetry(work))
    BFGS(work, logfile="-").run(fmax=fmax, steps=steps)
    out = work.copy()
    out.set_constraint()
    out.calc = None
    return out


@dataclass
class GammaSpectra:
    """IR and Raman data of the Gamma modes.

    Attributes:
        modes: the Gamma modes (TO, analytic dynamical matrix).
        born: (N,3,3) Born charges used (e, sum rule imposed, symmetrised), primitive order.
        eps_inf: (3,3) electronic dielectric tensor.
        eps_0: (3,3) static dielectric tensor ``eps_inf + ionic``.
        mode_charges: (3N,3) ``Zt_s`` in e/sqrt(amu).
        ir_km_mol: (3N,) IR intensities in km/mol.
        ir_d2a2amu: (3N,) IR intensities in (D/A)^2/amu.
        raman: Raman tensors (None when not computed).
    """

    modes: GammaModes
    born: np.ndarray
    eps_inf: np.ndarray
    eps_0: np.ndarray
    mode_charges: np.ndarray
    ir_km_mol: np.ndarray
    ir_d2a2amu: np.ndarray
    raman: Optional[RamanTensors] = None

    def table(self) -> List[Dict[str, Any]]:
        """One JSON-able dict per mode (acoustic modes included, flagged)."""
        rows = []
        act = None if self.raman is None else self.raman.activities
        rho = None if self.raman is None else self.raman.depolarization_ratios
        for s in range(self.modes.n_modes):
            row: Dict[str, Any] = {
                "index": s,
                "frequency_cm1": float(self.modes.frequencies_cm1[s]),
                "acoustic": bool(self.modes.acoustic[s]),
                "irrep": self.modes.irreps[s] if self.modes.irreps else None,
                "ir_intensity_km_mol": float(self.ir_km_mol[s]),
                "ir_intensity_D2_A2_amu": float(self.ir_d2a2amu[s]),
            }
            if act is not None:
                row["raman_activity_A4_amu"] = float(act[s])
                row["depolarization_ratio"] = None if not np.isfinite(rho[s]) else float(rho[s])
            rows.append(row)
        return rows


def gamma_spectroscopy(phonon, calc: Calculator, *, raman: bool = True, max_displacement: float = 0.01,
                       symprec: float = 1e-5, irreps: bool = True) -> GammaSpectra:
    """IR intensities, static dielectric tensor and (optionally) Raman tensors at Gamma.

    Sets phonopy NAC parameters on ``phonon`` (from ``calc``'s BEC and eps_inf on the primitive
    cell) if none are set, so that :func:`~ase_etgnn.spectra.phonons.frequencies_at_gamma` gives LO
    modes afterwards.  Raman needs 2 dielectric evaluations per optical mode.
    """
    if phonon.nac_params is None:
        set_nac(phonon, calc, symprec=symprec)
    params = phonon.nac_params
    born = np.asarray(params["born"], dtype=np.float64)
    eps_inf = np.asarray(params["dielectric"], dtype=np.float64)
    modes = gamma_modes(phonon, irreps=irreps)
    rt = raman_tensors(modes, calc, max_displacement=max_displacement) if raman else None
    return GammaSpectra(
        modes=modes,
        born=born,
        eps_inf=eps_inf,
        eps_0=static_dielectric_tensor(modes, born, eps_inf),
        mode_charges=mode_effective_charges(modes, born),
        ir_km_mol=ir_intensities(modes, born, "km/mol"),
        ir_d2a2amu=ir_intensities(modes, born, "(D/A)^2/amu"),
        raman=rt,
    )


@dataclass
class LOTOPair:
    """An LO mode at q -> 0 along a direction and the TO group (degenerate modes) it belongs to.

    Attributes:
        lo_cm1: LO frequency (cm^-1) along the direction.
        to_cm1: TO frequency of the group (cm^-1).
        to_indices: indices of the group's modes in ``GammaSpectra.modes`` (ascending frequency).
        irrep: the group's irrep label (phonopy; None when unavailable).
        overlap: ``|<u_g|e_LO>|^2``, the LO eigenvector on the group's polar combination ``u_g`` (a diagnostic:
            strongly coupled polar modes mix, and an LO can lie mostly on another group's TO mode).
        irrep_weight: weight of the LO eigenvector on all TO modes with the group's irrep (1 when the
            LO mode has that irrep; always exact by symmetry, reported as a check).
    """

    lo_cm1: float
    to_cm1: float
    to_indices: Tuple[int, ...]
    irrep: Optional[str]
    overlap: float
    irrep_weight: float


def mode_groups(modes: GammaModes, degeneracy_tol_cm1: float = 0.5) -> List[List[int]]:
    """Indices of degenerate modes of one irrep, ascending frequency (an accidental near-degeneracy of
    modes with different irrep labels, e.g. an A1 and an E within ``degeneracy_tol_cm1``, is split)."""
    labels = list(modes.irreps) if modes.irreps else [None] * modes.n_modes
    groups: List[List[int]] = []
    for g in degenerate_groups(modes.frequencies_cm1, tol=degeneracy_tol_cm1):
        for lab in dict.fromkeys(labels[s] for s in g):
            groups.append([s for s in g if labels[s] == lab])
    return groups


def lo_to_pairs(spectra: GammaSpectra, phonon, q_direction: Sequence[float], *, degeneracy_tol_cm1: float = 0.5,
                polar_tol: float = 1e-3) -> List[LOTOPair]:
    """Pair each LO mode along the Cartesian ``q_direction`` with its TO group: the i-th LO with the i-th polar TO.

    The non-analytic term is rank one, ``(q.Z_a)_i (q.Z_b)_j / sqrt(m_a m_b)``: it couples only the TO
    modes with a mode charge along q, ``q.Zt_s != 0`` ("polar along q"; in each degenerate group only the
    combination ``u_g ~ sum_s (q.Zt_s) e_s``).  A group without one (a non-polar mode such as quartz's
    A1, or an E mode for q along the c axis) has no LO partner and is left out.  A positive rank-one update
    interlaces the eigenvalues: with the polar TO groups in ascending order, ``TO_i <= LO_i <= TO_(i+1)``
    (the zeros and poles of ``q.eps(w).q`` alternate), so the LO modes (phonopy, NAC parameters set on
    ``phonon`` by :func:`gamma_spectroscopy`; the ``P`` modes living in ``span{u_g}``) are paired by order.
    This is the TO/LO pairing of measured reststrahlen bands; an eigenvector-overlap assignment puts an LO
    below its TO where strongly polar modes mix (quartz's two highest E modes).

    Returns:
        one :class:`LOTOPair` per polar group, ascending TO frequency.
    """
    if phonon.nac_params is None:
        raise ValueError("phonon has no NAC parameters: run gamma_spectroscopy (or set_nac) first")
    q = np.asarray(q_direction, dtype=np.float64).reshape(3)
    if not np.any(q):
        raise ValueError("q_direction must be non-zero")
    q = q / np.linalg.norm(q)
    modes = spectra.modes
    n_modes = modes.n_modes
    e_to = modes.eigenvectors.reshape(n_modes, -1)  # [3N modes, 3N] rows orthonormal
    v = spectra.mode_charges @ q  # [3N] q.Zt_s, e/sqrt(amu)
    labels = list(modes.irreps) if modes.irreps else [None] * n_modes
    groups = [g for g in mode_groups(modes, degeneracy_tol_cm1) if not np.any(modes.acoustic[g])]
    norms = np.array([np.linalg.norm(v[g]) for g in groups])
    polar = [g for g, nv in zip(groups, norms) if nv > polar_tol * max(norms.max(initial=0.0), 1e-300)]
    if not polar:
        return []
    u = np.stack([v[g] @ e_to[g] / np.linalg.norm(v[g]) for g in polar])  # [P, 3N] polar combinations
    qp = phonon.run_qpoints([[0.0, 0.0, 0.0]], with_eigenvectors=True,
                            nac_q_direction=_cartesian_to_reduced_q(phonon, q))
    f_lo = np.asarray(qp.frequencies[0], dtype=np.float64) * THZ_TO_CM1  # [3N] cm^-1
    e_lo = np.asarray(qp.eigenvectors[0])  # [3N, 3N], column k = LO-side eigenvector k
    ov = np.abs(u @ e_lo) ** 2  # [P, 3N] overlaps (u real)
    candidates = np.argsort(ov.sum(axis=0))[::-1][: len(polar)]  # the P modes living in span{u_g}
    to_order = np.argsort([np.mean(modes.frequencies_cm1[g]) for g in polar], kind="stable")
    lo_order = candidates[np.argsort(f_lo[candidates], kind="stable")]
    pairs = []
    for r, k in zip(to_order, lo_order):
        g, k = polar[r], int(k)
        lab = labels[g[0]]
        same = [s for s in range(n_modes) if lab is not None and labels[s] == lab]
        w_irrep = float(np.sum(np.abs(e_to[same] @ e_lo[:, k]) ** 2)) if same else float("nan")
        pairs.append(LOTOPair(lo_cm1=float(f_lo[k]), to_cm1=float(np.mean(modes.frequencies_cm1[g])),
                              to_indices=tuple(int(s) for s in g), irrep=lab, overlap=float(ov[r, k]),
                              irrep_weight=w_irrep))
    return sorted(pairs, key=lambda p: p.to_cm1)


def mode_group_table(spectra: GammaSpectra, pairs: Dict[str, List[LOTOPair]]) -> List[Dict[str, Any]]:
    """One row per irrep group of optical modes (degenerate partners summed), ascending frequency.

    Args:
        spectra: from :func:`gamma_spectroscopy` (with Raman for ``raman_activity_A4_amu``; 0 without).
        pairs: ``{name: lo_to_pairs(spectra, phonon, q)}`` per q direction.

    Returns:
        dicts with ``irrep``, ``modes`` (indices), ``to_cm1``, ``ir_intensity_km_mol``, ``raman_activity_A4_amu``
        and, per direction name, ``lo_<name>_cm1`` / ``lo_<name>_irrep`` (None: no LO partner along it).
    """
    rows = spectra.table()
    lo_of = {name: {p.to_indices: p for p in plist} for name, plist in pairs.items()}
    out = []
    for g in mode_groups(spectra.modes):
        if any(rows[s]["acoustic"] for s in g):
            continue
        row: Dict[str, Any] = {
            "irrep": rows[g[0]]["irrep"], "modes": list(g),
            "to_cm1": float(np.mean([rows[s]["frequency_cm1"] for s in g])),
            "ir_intensity_km_mol": float(sum(rows[s]["ir_intensity_km_mol"] for s in g)),
            "raman_activity_A4_amu": float(sum(rows[s].get("raman_activity_A4_amu", 0.0) for s in g))}
        for name in pairs:
            p = lo_of[name].get(tuple(g))
            row[f"lo_{name}_cm1"] = None if p is None else p.lo_cm1
            row[f"lo_{name}_irrep"] = None if p is None else p.irrep
        out.append(row)
    return out
