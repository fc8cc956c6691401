"""One-call Gamma-point IR + Raman workflow on top of phonopy and any ASE calculator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
from ase.calculators.calculator import Calculator

from .infrared import ir_intensities, mode_effective_charges, static_dielectric_tensor
from .phonons import GammaModes, gamma_modes, set_nac
from .raman import RamanTensors, raman_tensors

__all__ = ["GammaSpectra", "gamma_spectroscopy"]


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



