"""Unit conversions used by the spectroscopy workflows, derived from CODATA constants.

Every factor is computed here from :mod:`scipy.constants` (CODATA 2018) so that the derivation is
explicit and testable; ``tests/test_spectroscopy.py`` re-derives them from :mod:`ase.units`.

Internal units (the ASE units): energy eV, length Angstrom (A), mass amu, charge e.  A dynamical
matrix eigenvalue ``lambda = omega^2`` is therefore in eV / (A^2 amu).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import constants as _c

__all__ = [
    "EV_A2_AMU_TO_RAD_S2",
    "OMEGA2_TO_CM1",
    "THZ_TO_CM1",
    "CM1_TO_THZ",
    "CM1_TO_EV",
    "COULOMB_EV_A",
    "PHONOPY_NAC_FACTOR",
    "E_ANGSTROM_IN_DEBYE",
    "E2_AMU_TO_D2_A2_AMU",
    "D2_A2_AMU_TO_KM_MOL",
    "E2_AMU_TO_KM_MOL",
    "PER_FS_TO_CM1",
    "KB_EV",
    "HBAR_EV_S",
    "frequency_cm1_from_eigenvalue",
]

#: 1 eV / (A^2 amu) in s^-2 (SI): omega^2 [rad^2/s^2] = lambda [eV/(A^2 amu)] * this.
EV_A2_AMU_TO_RAD_S2: float = _c.e / (1e-20 * _c.atomic_mass)

#: nu~ [cm^-1] = sqrt(lambda [eV/(A^2 amu)]) * OMEGA2_TO_CM1  (nu~ = omega / (2 pi c), c in cm/s).
#: Value ~521.47 cm^-1.
OMEGA2_TO_CM1: float = math.sqrt(EV_A2_AMU_TO_RAD_S2) / (2.0 * math.pi * _c.c * 100.0)

#: 1 THz in cm^-1 (1e12 / c[cm/s] = 33.356).
THZ_TO_CM1: float = 1e12 / (_c.c * 100.0)
CM1_TO_THZ: float = 1.0 / THZ_TO_CM1

#: Photon energy of 1 cm^-1 in eV (h c * 100 / e = 1.2398e-4 eV).
CM1_TO_EV: float = _c.h * _c.c * 100.0 / _c.e

#: e^2 / (4 pi eps0) in eV*A (14.399645).  Converts Gaussian-unit electrostatic formulas
#: ("4 pi e^2 / Omega") into eV and A.
COULOMB_EV_A: float = _c.e / (4.0 * math.pi * _c.epsilon_0 * 1e-10)

#: phonopy's own NAC factor for eV/A calculators (its Hartree * Bohr, 14.399652); kept separately
#: because phonopy uses slightly older constants.  Used only in ``nac_params()['factor']``.
PHONOPY_NAC_FACTOR: float = 14.399652

#: 1 e*A expressed in Debye (1 D = 1e-21 / c C m): 4.80320 D.
E_ANGSTROM_IN_DEBYE: float = _c.e * 1e-10 * _c.c / 1e-21

#: IR intensity |dmu/dQ|^2: 1 e^2/amu = 23.0707 (D/A)^2/amu.
E2_AMU_TO_D2_A2_AMU: float = E_ANGSTROM_IN_DEBYE**2

#: Integrated molar absorption coefficient of one mode, A = N_A / (12 eps0 c^2) |dmu/dQ|^2 (SI, m/mol;
#: Porezag & Pederson, PRB 54, 7830 (1996); Wilson, Decius & Cross, "Molecular Vibrations").
#: 1 (D/A)^2/amu = 42.2561 km/mol (Porezag quotes 42.255; QE dynmat.x uses the same definition).
D2_A2_AMU_TO_KM_MOL: float = (
    _c.N_A / (12.0 * _c.epsilon_0 * _c.c**2) * (1e-21 / _c.c / 1e-10) ** 2 / _c.atomic_mass / 1e3
)

#: 1 e^2/amu = 974.88 km/mol (same formula as above).
E2_AMU_TO_KM_MOL: float = _c.N_A / (12.0 * _c.epsilon_0 * _c.c**2) * _c.e**2 / _c.atomic_mass / 1e3

#: An ordinary frequency of 1 fs^-1 in cm^-1 (1e15 / c[cm/s] = 33356.4).
PER_FS_TO_CM1: float = 1e15 / (_c.c * 100.0)

#: Boltzmann constant in eV/K and reduced Planck constant in eV*s.
KB_EV: float = _c.k / _c.e
HBAR_EV_S: float = _c.hbar / _c.e


def frequency_cm1_from_eigenvalue(eigenvalue):
    """Signed frequency in cm^-1 from a dynamical-matrix eigenvalue in eV/(A^2 amu).

    Negative eigenvalues (unstable modes) give negative frequencies, phonopy's convention for
    imaginary frequencies.  Works on scalars and numpy arrays.
    """
    lam = np.asarray(eigenvalue, dtype=np.float64)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * OMEGA2_TO_CM1
