"""Non-resonant Raman at Gamma from the electronic dielectric tensor (Placzek approximation).

Definitions (Porezag & Pederson, PRB 54, 7830 (1996); D. A. Long, "The Raman Effect" (2002);
Lazzeri & Mauri, PRL 90, 036401 (2003) for crystals):

* Polarisability volume of the cell (Gaussian units; in A^3)::

      alpha = Omega (eps_inf - 1) / (4 pi)

* Raman tensor of mode ``s``: ``R_s = d alpha / dQ_s = (Omega / 4 pi) d eps_inf / dQ_s`` in
  A^3 / (A sqrt(amu)) = A^2 / sqrt(amu), by central finite differences along the normal coordinate
  ``Q_s`` (A sqrt(amu)), i.e. Cartesian displacements ``u_a = Q_s e_s,a / sqrt(m_a)``.
* Invariants ``a = tr(R)/3`` and ``gamma^2 = 1/2 [(Rxx-Ryy)^2 + (Ryy-Rzz)^2 + (Rzz-Rxx)^2] +
  3 (Rxy^2 + Ryz^2 + Rzx^2)`` (symmetric part); activity ``S = 45 a^2 + 7 gamma^2`` (A^4/amu,
  identical to ``ase.vibrations.placzek.PlaczekStatic.get_absolute_intensities``); depolarisation
  ratio for linearly polarised light ``rho = 3 gamma^2 / (45 a^2 + 4 gamma^2)``.

``DielectricPolarizability`` lets ASE's ``StaticRamanCalculator``/``PlaczekStatic`` use a dielectric
tensor: ASE's ``ase.calculators.polarizability.StaticPolarizabilityCalculator.__call__(atoms)`` must
return the polarisability in e^2 A^2 / eV, i.e. alpha[A^3] / (Bohr * Hartree) (ASE multiplies by
``Hartree * Bohr`` in ``PlaczekStatic.electronic_me_Qcc``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from ase import Atoms
from ase import units as ase_units
from ase.calculators.calculator import Calculator
from ase.calculators.polarizability import StaticPolarizabilityCalculator

from .phonons import GammaModes
from .units import CM1_TO_EV, KB_EV

__all__ = [
    "polarizability_from_dielectric",
    "RamanTensors",
    "raman_tensors",
    "raman_invariants",
    "raman_activities",
    "depolarization_ratios",
    "raman_intensities",
    "DielectricPolarizability",
]


def polarizability_from_dielectric(eps: np.ndarray, volume: float) -> np.ndarray:
    """Cell polarisability volume ``alpha = V (eps - 1) / (4 pi)`` in A^3 (eps (...,3,3), V in A^3)."""
    eps = np.asarray(eps, dtype=np.float64)
    return np.asarray(volume, dtype=np.float64)[..., None, None] * (eps - np.eye(3)) / (4.0 * math.pi)


def _dielectric(atoms: Atoms, calc: Calculator) -> np.ndarray:
    work = atoms.copy()
    work.calc = calc
    eps = np.array(calc.get_property("dielectric_tensor", work), dtype=np.float64)
    if eps.shape != (3, 3):
        raise ValueError(f"dielectric_tensor has shape {eps.shape}, expected (3, 3)")
    return eps


@dataclass
class RamanTensors:
    """Raman tensors of the Gamma modes.

    Attributes:
        tensors: (3N, 3, 3) ``d alpha/dQ_s`` in A^2/sqrt(amu) (symmetrised; acoustic modes zero).
        steps: (3N,) normal-coordinate step ``h_s`` used, in A sqrt(amu) (0 for acoustic modes).
    """

    tensors: np.ndarray
    steps: np.ndarray

    @property
    def activities(self) -> np.ndarray:
        """45 a^2 + 7 gamma^2 in A^4/amu."""
        return raman_activities(self.tensors)

    @property
    def depolarization_ratios(self) -> np.ndarray:
        return depolarization_ratios(self.tensors)


def raman_tensors(modes: GammaModes, calc: Calculator, *, max_displacement: float = 0.01,
                  mode_indices: Optional[np.ndarray] = None) -> RamanTensors:
    """Raman tensors by central differences of ``dielectric_tensor`` along each normal mode.

    For mode ``s`` the step ``h_s`` (A sqrt(amu)) is chosen so the largest Cartesian displacement is
    ``max_displacement`` (A): ``h_s = max_displacement / max_a |e_s,a / sqrt(m_a)|``, and
    ``R_s = (Omega / 4 pi) [eps(+h_s) - eps(-h_s)] / (2 h_s)``.  Two calculations per optical mode.

    Args:
        modes: Gamma modes of the primitive cell (``modes.atoms`` is displaced, not the user's Atoms).
        calc: calculator providing ``dielectric_tensor``.
        max_displacement: largest Cartesian displacement in A.
        mode_indices: optional subset of modes (default: all optical modes).
    """
    if max_displacement <= 0:
        raise ValueError("max_displacement must be positive")
    n_modes = modes.n_modes
    patterns = modes.displacement_patterns()
    volume = modes.volume
    tensors = np.zeros((n_modes, 3, 3))
    steps = np.zeros(n_modes)
    todo = np.nonzero(modes.optical)[0] if mode_indices is None else np.asarray(mode_indices, int)
    base = modes.atoms
    pos0 = base.get_positions()
    for s in todo:
        if modes.acoustic[s]:
            continue
        amp = np.linalg.norm(patterns[s], axis=1).max()
        h = max_displacement / amp
        eps_pm = []
        for sign in (1.0, -1.0):
            disp = base.copy()
            disp.set_positions(pos0 + sign * h * patterns[s])
            eps_pm.append(_dielectric(disp, calc))
        deps = (eps_pm[0] - eps_pm[1]) / (2.0 * h)
        tensors[s] = volume / (4.0 * math.pi) * 0.5 * (deps + deps.T)
        steps[s] = h
    return RamanTensors(tensors=tensors, steps=steps)


def raman_invariants(tensors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Isotropic ``a^2 = (tr R / 3)^2`` and anisotropic ``gamma^2`` invariants (Long 2002).

    ``gamma^2 = 1/2 [(xx-yy)^2 + (yy-zz)^2 + (zz-xx)^2] + 3/4 [(xy+yx)^2 + (yz+zy)^2 + (zx+xz)^2]``
    (ASE's ``_invariants`` form; equals the usual expression for a symmetric tensor).
    """
    r = np.asarray(tensors, dtype=np.float64)
    a2 = (np.trace(r, axis1=-2, axis2=-1) / 3.0) ** 2
    g2 = 0.5 * ((r[..., 0, 0] - r[..., 1, 1]) ** 2 + (r[..., 1, 1] - r[..., 2, 2]) ** 2
                + (r[..., 2, 2] - r[..., 0, 0]) ** 2)
    g2 = g2 + 0.75 * ((r[..., 0, 1] + r[..., 1, 0]) ** 2 + (r[..., 1, 2] + r[..., 2, 1]) ** 2
                      + (r[..., 2, 0] + r[..., 0, 2]) ** 2)
    return a2, g2


def raman_activities(tensors: np.ndarray) -> np.ndarray:
    """Raman activity ``45 a^2 + 7 gamma^2`` (A^4/amu for tensors in A^2/sqrt(amu))."""
    a2, g2 = raman_invariants(tensors)
    return 45.0 * a2 + 7.0 * g2


def depolarization_ratios(tensors: np.ndarray) -> np.ndarray:
    """Depolarisation ratio ``3 gamma^2 / (45 a^2 + 4 gamma^2)`` (NaN for inactive modes)."""
    a2, g2 = raman_invariants(tensors)
    den = 45.0 * a2 + 4.0 * g2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 3.0 * g2 / np.where(den > 0, den, 1.0), np.nan)


def raman_intensities(frequencies_cm1: np.ndarray, activities: np.ndarray, *,
                      laser_wavelength_nm: float = 532.0, temperature: float = 300.0) -> np.ndarray:
    """Relative Stokes intensities ``(nu0 - nu)^4 / nu * (n(nu) + 1) * S`` (Porezag & Pederson 1996).

    ``n = 1/(exp(h c nu / kT) - 1)``; modes with ``nu <= 0`` get zero.  Units: arbitrary (the
    returned numbers are in cm^-3 * A^4/amu, only ratios are meaningful).
    """
    nu = np.asarray(frequencies_cm1, dtype=np.float64)
    act = np.asarray(activities, dtype=np.float64)
    if laser_wavelength_nm <= 0:
        raise ValueError("laser_wavelength_nm must be positive")
    nu0 = 1e7 / laser_wavelength_nm
    out = np.zeros_like(nu)
    pos = nu > 0
    if temperature > 0:
        x = nu[pos] * CM1_TO_EV / (KB_EV * temperature)
        bose1 = 1.0 / -np.expm1(-x)  # n + 1
    else:
        bose1 = np.ones(int(pos.sum()))
    out[pos] = (nu0 - nu[pos]) ** 4 / nu[pos] * bose1 * act[pos]
    return out


class DielectricPolarizability(StaticPolarizabilityCalculator):
    """ASE static-polarisability adapter built on a calculator's ``dielectric_tensor``.

    ``__call__(atoms)`` returns ``alpha = V (eps - 1) / (4 pi)`` converted to ASE's unit
    e^2 A^2 / eV (divide A^3 by ``Bohr * Hartree``), as ASE's ``StaticPolarizabilityCalculator``
    contract requires.  Usage::

        from ase.vibrations.raman import StaticRamanCalculator
        from ase.vibrations.placzek import PlaczekStatic
        rm = StaticRamanCalculator(atoms, DielectricPolarizability, exkwargs={"calc": calc},
                                   name="raman", delta=0.01)
        rm.run()
        pz = PlaczekStatic(atoms, name="raman")
        pz.get_absolute_intensities()   # 45 a^2 + 7 gamma^2, A^4/amu

    Args:
        calc: calculator giving ``dielectric_tensor``; if None, the calculator attached to the
            Atoms passed to ``__call__`` is used.
    """

    def __init__(self, calc: Optional[Calculator] = None) -> None:
        self.calc = calc

    def __call__(self, atoms: Atoms, *args, **kwargs) -> np.ndarray:
        calc = self.calc if self.calc is not None else atoms.calc
        if calc is None:
            raise ValueError("DielectricPolarizability needs a calculator (calc= or atoms.calc)")
        eps = _dielectric(atoms, calc)
        alpha_a3 = polarizability_from_dielectric(eps, atoms.get_volume())
        return alpha_a3 / (ase_units.Bohr * ase_units.Hartree)
