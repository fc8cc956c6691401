"""Multiple time stepping for direct-force models: cheap direct forces inside, conservative forces outside.

Direct forces (Eq. 3 of the ETGNN paper) are not the gradient of any energy, so NVE with them heats up.
Conservative forces ``-dE/dr`` cost an autograd pass. r-RESPA (Tuckerman, Berne, Martyna, J. Chem. Phys. 97,
1990 (1992)) splits the force into a fast and a slow part; Bigi et al. (2025, "The dark side of the forces")
use the direct forces as the fast part and the correction ``F_cons - F_direct`` as the slow part, applied as a
kick every ``n_inner`` steps. The trajectory then follows the conservative forces on average and conserves
the energy of the energy head, at about ``1/n_inner`` of the autograd cost.

One ``step()`` is one inner step of length ``timestep``, so ``MDLogger``, ``Trajectory``, ``loginterval``
and observers (e.g. recording tensors every N steps) work as with ``VelocityVerlet``.
"""
from __future__ import annotations

from typing import IO, Optional

import numpy as np
from ase import Atoms
from ase.md.md import MolecularDynamics

from .properties import FORCES_CONSERVATIVE

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta as _thermalize_momenta
except ImportError:  # pragma: no cover - ASE 3.23-3.28 (setup.cfg allows them)
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _thermalize_momenta

__all__ = ["MultipleTimeStepVerlet", "thermalize"]


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (K) drawn from ``rng``: ASE's ``thermalize_momenta``
    (``MaxwellBoltzmannDistribution``, deprecated since ASE 3.29, on older ASE)."""
    _thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)


class MultipleTimeStepVerlet(MolecularDynamics):
    """NVE r-RESPA: velocity Verlet with direct forces, plus ``(F_cons - F_direct)`` kicks every ``n_inner`` steps.

    Per cycle of ``n_inner`` steps of length ``dt``: half a slow kick ``p += (n_inner dt / 2) (F_c - F_d)``,
    ``n_inner`` velocity-Verlet steps with the direct forces ``F_d``, then the closing half slow kick at the
    new positions (whose slow force is reused by the next cycle's opening kick: one autograd pass per cycle).

    Args:
        atoms: with an ``ETGNNCalculator`` in direct mode whose model has energy and forces heads.
        timestep: inner time step (ASE units, e.g. ``0.5 * ase.units.fs``).
        n_inner: inner steps per slow kick (1 = conservative velocity Verlet at direct + correction cost).
        trajectory, logfile, loginterval: as for ``ase.md.VelocityVerlet``.
    """

    def __init__(self, atoms: Atoms, timestep: float, n_inner: int = 4, trajectory: Optional[str] = None,
                 logfile: Optional[IO | str] = None, loginterval: int = 1, **kwargs) -> None:
        if int(n_inner) != n_inner or n_inner < 1:
            raise ValueError(f"n_inner must be a positive integer, got {n_inner!r}")
        calc = atoms.calc
        if calc is None or FORCES_CONSERVATIVE not in getattr(calc, "implemented_properties", ()):
            raise ValueError(
                "MultipleTimeStepVerlet needs a calculator that gives direct 'forces' and "
                f"'{FORCES_CONSERVATIVE}' (-dE/dr): an ETGNNCalculator with forces='direct' and a model with energy "
                "and forces heads"
            )
        super().__init__(atoms, timestep, trajectory=trajectory, logfile=logfile, loginterval=loginterval,
                         **kwargs)
        self.n_inner = int(n_inner)
        self._inner = 0  # inner steps done in the current cycle
        self._slow: Optional[np.ndarray] = None  # F_c - F_d at the current cycle boundary, eV/A

    def slow_forces(self) -> np.ndarray:
        """``F_cons - F_direct`` at the current positions (one autograd pass), eV/A; [N, 3]."""
        calc = self.atoms.calc
        f_cons = calc.get_property(FORCES_CONSERVATIVE, self.atoms)
        f_direct = calc.get_property("forces", self.atoms)  # same trunk pass: cached
        return f_cons - f_direct

    def _kick(self, dt: float, forces: np.ndarray) -> None:
        self.atoms.set_momenta(self.atoms.get_momenta() + dt * forces, apply_constraint=False)

    def step(self, forces: Optional[np.ndarray] = None) -> np.ndarray:
        """One inner step (plus the slow half kicks at the cycle's start and end); returns the direct forces."""
        atoms = self.atoms
        outer_dt = self.n_inner * self.dt
        if self._inner == 0:
            if self._slow is None:
                self._slow = self.slow_forces()
            self._kick(0.5 * outer_dt, self._slow)
        if forces is None:
            forces = atoms.get_forces(md=True)
        p = atoms.get_momenta() + 0.5 * self.dt * forces
        r = atoms.get_positions()
        atoms.set_positions(r + self.dt * p / self.masses)
        if atoms.constraints:
            p = (atoms.get_positions() - r) * self.masses / self.dt
        atoms.set_momenta(p, apply_constraint=False)
        forces = atoms.get_forces(md=True)
        self._kick(0.5 * self.dt, forces)
        self._inner += 1
        if self._inner == self.n_inner:
            self._slow = self.slow_forces()
            self._kick(0.5 * outer_dt, self._slow)
            self._inner = 0
        return forces
