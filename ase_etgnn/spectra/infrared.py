"""Infrared response at Gamma from Born effective charges and Gamma-point normal modes.

Formulas (Gonze & Lee, PRB 55, 10355 (1997); Porezag & Pederson, PRB 54, 7830 (1996);
Phonopy-Spectroscopy docs, Skelton et al. PCCP 19, 12452 (2017)); Gaussian electrostatics with
``e^2 = e^2/(4 pi eps0) = 14.3996 eV*A`` (``units.COULOMB_EV_A``).

* Mode effective charge (``ase_etgnn`` convention ``Z[a, i, b] = Omega dP_i/du_b``)::

      Zt_s,i = sum_{a,b} Z_a[i, b] e_s,ab / sqrt(m_a)          [e / sqrt(amu)]

  which is the dipole derivative ``dmu_i/dQ_s`` (mu in e*A, Q in A sqrt(amu)).
* IR intensity ``I_s = sum_i |Zt_s,i|^2`` in e^2/amu; x 23.0708 -> (D/A)^2/amu (the unit of ASE's
  ``Infrared`` and QE ``dynmat.x``); x 974.88 -> km/mol (``A = N_A/(12 eps0 c^2) I``, Porezag's 42.255
  km/mol per (D/A)^2/amu).  See ``units``.
* Oscillator strength (dimensionless)  ``S_s = (4 pi e^2 / Omega) Zt_s Zt_s^T / omega_s^2``.
* ``eps_0 = eps_inf + sum_s S_s`` (sum over optical modes) and
  ``eps(w) = eps_inf + sum_s S_s w_s^2 / (w_s^2 - w^2 - i gamma_s w)``.
* Generalised Lyddane-Sachs-Teller relation (Cochran & Cowley, J. Phys. Chem. Solids 23, 447
  (1962))::

      prod_s w_LO,s(q)^2 / w_TO,s^2 = (q.eps_0.q) / (q.eps_inf.q)

  which reduces to ``prod w_LO^2/w_TO^2 = eps_0/eps_inf`` for a cubic diatomic crystal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Union

import numpy as np

from .phonons import GammaModes, frequencies_at_gamma
from .units import COULOMB_EV_A, E2_AMU_TO_D2_A2_AMU, E2_AMU_TO_KM_MOL

__all__ = [
    "IR_UNITS",
    "mode_effective_charges",
    "ir_intensities",
    "oscillator_strengths",
    "ionic_dielectric_tensor",
    "static_dielectric_tensor",
    "ir_dielectric_function",
    "LSTCheck",
    "lyddane_sachs_teller",
    "broaden",
]

#: supported intensity units and their factor from e^2/amu
IR_UNITS: Dict[str, float] = {
    "e^2/amu": 1.0,
    "(D/A)^2/amu": E2_AMU_TO_D2_A2_AMU,
    "km/mol": E2_AMU_TO_KM_MOL,
}


def _check_born(modes: GammaModes, born: np.ndarray) -> np.ndarray:
    born = np.asarray(born, dtype=np.float64)
    n = len(modes.masses)
    if born.shape != (n, 3, 3):
        raise ValueError(f"born has shape {born.shape}, expected {(n, 3, 3)} (primitive-cell order)")
    return born


def mode_effective_charges(modes: GammaModes, born: np.ndarray) -> np.ndarray:
    """Mode effective charges ``Zt_s,i = sum_{a,b} Z_a[i,b] e_s,ab / sqrt(m_a)`` in e/sqrt(amu).

    Args:
        modes: Gamma modes (:func:`~ase_etgnn.spectra.phonons.gamma_modes`).
        born: (N,3,3) Born charges in e, ``Z[a,i,b] = dF_b/dE_i``, primitive-cell order (use the
            ``'born'`` entry of ``nac_params``, which already satisfies the sum rule).

    Returns:
        (3N, 3) array; rows of acoustic modes are set to exactly zero.
    """
    born = _check_born(modes, born)
    patterns = modes.displacement_patterns()  # (3N, N, 3) amu^-1/2
    zt = np.einsum("aib,sab->si", born, patterns)
    zt[modes.acoustic] = 0.0
    return zt


def ir_intensities(modes: GammaModes, born: np.ndarray, unit: str = "km/mol") -> np.ndarray:
    """IR intensities ``|Zt_s|^2`` per mode (3N,), acoustic modes zero.

    Args:
        unit: "e^2/amu", "(D/A)^2/amu" (ASE ``Infrared``, QE ``dynmat.x``) or "km/mol"
            (integrated molar absorption coefficient, Porezag & Pederson 1996).
    """
    if unit not in IR_UNITS:
        raise ValueError(f"unknown IR unit {unit!r}; choose from {sorted(IR_UNITS)}")
    zt = mode_effective_charges(modes, born)
    return np.sum(zt**2, axis=1) * IR_UNITS[unit]


def oscillator_strengths(modes: GammaModes, born: np.ndarray, *, min_frequency_cm1: float = 1e-3
                         ) -> np.ndarray:
    """Dimensionless mode oscillator strength tensors ``S_s = 4 pi e^2 Zt Zt^T / (Omega omega_s^2)``.

    ``e^2 -> 14.3996 eV*A``, ``Zt`` in e/sqrt(amu), ``omega_s^2`` in eV/(A^2 amu), ``Omega`` in A^3.
    Acoustic modes and modes with |frequency| below ``min_frequency_cm1`` get zero (an unstable
    optical mode gives a negative strength, as the formula says).

    Returns:
        (3N, 3, 3).
    """
    zt = mode_effective_charges(modes, born)
    lam = modes.eigenvalues
    keep = modes.optical & (np.abs(modes.frequencies_cm1) >= min_frequency_cm1)
    out = np.zeros((len(lam), 3, 3))
    pref = 4.0 * math.pi * COULOMB_EV_A / modes.volume
    out[keep] = pref * np.einsum("si,sj->sij", zt[keep], zt[keep]) / lam[keep][:, None, None]
    return out


def ionic_dielectric_tensor(modes: GammaModes, born: np.ndarray) -> np.ndarray:
    """Ionic (lattice) contribution ``eps_0 - eps_inf = sum_s S_s`` (3,3)."""
    return oscillator_strengths(modes, born).sum(axis=0)


def static_dielectric_tensor(modes: GammaModes, born: np.ndarray, eps_inf: np.ndarray) -> np.ndarray:
    """Static (relaxed-ion) dielectric tensor ``eps_0 = eps_inf + sum_s S_s`` (3,3)."""
    return np.asarray(eps_inf, dtype=np.float64) + ionic_dielectric_tensor(modes, born)


def ir_dielectric_function(frequencies_cm1: Union[Sequence[float], np.ndarray], modes: GammaModes,
                           born: np.ndarray, eps_inf: np.ndarray,
                           linewidths_cm1: Union[float, Sequence[float], np.ndarray] = 5.0
                           ) -> np.ndarray:
    """Damped-oscillator dielectric function ``eps(w)`` (complex, (n, 3, 3)).

    ``eps(w) = eps_inf + sum_s S_s w_s^2 / (w_s^2 - w^2 - i gamma_s w)`` with w, w_s and the
    full width ``gamma_s`` in cm^-1 (Gonze & Lee 1997, with Lorentzian damping); the time
    convention ``exp(-i w t)`` gives Im eps >= 0 (absorption).

    Args:
        frequencies_cm1: grid of w (cm^-1).
        linewidths_cm1: one damping for all modes, or one per mode (3N,).
    """
    w = np.asarray(frequencies_cm1, dtype=np.float64)
    strengths = oscillator_strengths(modes, born)
    ws = modes.frequencies_cm1
    gam = np.broadcast_to(np.asarray(linewidths_cm1, dtype=np.float64), ws.shape)
    eps = np.zeros((len(w), 3, 3), dtype=np.complex128) + np.asarray(eps_inf, dtype=np.float64)
    for s in np.nonzero(np.any(strengths != 0.0, axis=(1, 2)))[0]:
        lor = ws[s] ** 2 / (ws[s] ** 2 - w**2 - 1j * gam[s] * w)
        eps += lor[:, None, None] * strengths[s][None]
    return eps


@dataclass
class LSTCheck:
    """Both sides of the generalised Lyddane-Sachs-Teller relation along one q direction.

    Attributes:
        q_direction: unit Cartesian direction.
        omega_to_cm1: optical TO frequencies used (cm^-1).
        omega_lo_cm1: optical LO frequencies along q (cm^-1).
        frequency_ratio: ``prod w_LO^2 / prod w_TO^2``.
        dielectric_ratio: ``q.eps_0.q / q.eps_inf.q``.
    """

    q_direction: np.ndarray
    omega_to_cm1: np.ndarray
    omega_lo_cm1: np.ndarray
    frequency_ratio: float
    dielectric_ratio: float

    @property
    def relative_error(self) -> float:
        return abs(self.frequency_ratio / self.dielectric_ratio - 1.0)


def lyddane_sachs_teller(phonon, modes: GammaModes, born: np.ndarray, eps_inf: np.ndarray,
                         q_direction: Sequence[float] = (0.0, 0.0, 1.0)) -> LSTCheck:
    """Evaluate the generalised LST relation (Cochran & Cowley 1962) along ``q_direction``.

    The LO frequencies come from phonopy's non-analytic correction (NAC parameters must be set on
    ``phonon``), the static dielectric tensor from :func:`static_dielectric_tensor`: the two sides
    are computed by independent routes.
    """
    if phonon.nac_params is None:
        raise ValueError("phonon has no nac_params; call set_nac(phonon, calc) first")
    q = np.asarray(q_direction, dtype=np.float64)
    q = q / np.linalg.norm(q)
    eps_inf = np.asarray(eps_inf, dtype=np.float64)
    eps0 = static_dielectric_tensor(modes, born, eps_inf)
    lo = frequencies_at_gamma(phonon, q)
    to = modes.frequencies_cm1
    n_ac = int(modes.acoustic.sum())
    lo_opt = np.sort(lo)[n_ac:]
    to_opt = np.sort(to[modes.optical])
    ratio = float(np.prod((lo_opt / to_opt) ** 2))
    return LSTCheck(q, to_opt, lo_opt, ratio, float(q @ eps0 @ q / (q @ eps_inf @ q)))


def broaden(frequencies_cm1: np.ndarray, intensities: np.ndarray, grid_cm1: np.ndarray,
            fwhm_cm1: Union[float, np.ndarray] = 10.0, shape: str = "lorentzian",
            mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Sum of area-normalised peaks: ``spectrum(x) = sum_s I_s g(x - w_s; fwhm)`` (units I per cm^-1).

    Args:
        shape: "lorentzian" or "gaussian".
        mask: optional boolean selection of modes (e.g. ``modes.optical``).
    """
    f = np.asarray(frequencies_cm1, dtype=np.float64)
    inten = np.asarray(intensities, dtype=np.float64)
    x = np.asarray(grid_cm1, dtype=np.float64)
    width = np.broadcast_to(np.asarray(fwhm_cm1, dtype=np.float64), f.shape)
    sel = np.ones(f.shape, bool) if mask is None else np.asarray(mask, bool)
    out = np.zeros_like(x)
    for w0, a, g in zip(f[sel], inten[sel], width[sel]):
        if shape == "lorentzian":
            hw = 0.5 * g
            out += a * hw / math.pi / ((x - w0) ** 2 + hw**2)
        elif shape == "gaussian":
            sig = g / (2.0 * math.sqrt(2.0 * math.log(2.0)))
            out += a * np.exp(-0.5 * ((x - w0) / sig) ** 2) / (sig * math.sqrt(2.0 * math.pi))
        else:
            raise ValueError(f"unknown peak shape {shape!r}")
    return out
