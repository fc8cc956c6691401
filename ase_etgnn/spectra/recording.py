"""Recording BEC and eps_inf along molecular dynamics, and reading/writing the recorded frames.

:class:`DielectricRecorder` is an ASE dynamics observer: ``recorder.attach(dyn, interval=n)`` stores,
every ``n`` steps, the positions, velocities, cell, Born effective charges (N,3,3) and the
electronic dielectric tensor (3,3), and optionally streams them to a trajectory: ``.traj`` keeps the
(N,3,3) BEC as a calculator result; extended XYZ stores it flattened row-major to (N,9) (a
``Properties`` column ``born_effective_charges:R:9``) and the dielectric tensor in the comment line.
:func:`read_md_record` reads both back into an :class:`MDRecord`; :func:`write_md_record` writes one.
Spectra from a record: :mod:`.md`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import ase.io
import numpy as np
from ase import Atoms
from ase import units as ase_units
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.trajectory import Trajectory

__all__ = [
    "MDRecord",
    "DielectricRecorder",
    "read_md_record",
    "write_md_record",
    "remove_com_velocity",
]


def remove_com_velocity(v: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Velocities (T, N, 3) minus the per-frame centre-of-mass velocity (masses (N,) amu)."""
    vcom = np.einsum("a,tab->tb", masses, v) / masses.sum()  # [T, 3]
    return v - vcom[:, None, :]


@dataclass
class MDRecord:
    """Time series recorded along a trajectory (float64 numpy arrays).

    Attributes:
        times_fs: (T,) time of each frame in fs.
        positions: (T, N, 3) A.
        velocities: (T, N, 3) A/fs, or None.
        cells: (T, 3, 3) A (rows = lattice vectors).
        masses: (N,) amu.
        numbers: (N,) atomic numbers.
        born: (T, N, 3, 3) e, ``Z[a,i,j] = dF_j/dE_i``, or None.
        dielectric: (T, 3, 3) eps_inf, or None.
    """

    times_fs: np.ndarray
    positions: np.ndarray
    velocities: Optional[np.ndarray]
    cells: np.ndarray
    masses: np.ndarray
    numbers: np.ndarray
    born: Optional[np.ndarray] = None
    dielectric: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.times_fs)

    @property
    def volumes(self) -> np.ndarray:
        """(T,) cell volumes in A^3."""
        return np.abs(np.linalg.det(self.cells))

    @property
    def timestep_fs(self) -> float:
        """Uniform spacing of ``times_fs`` (raises if the frames are not evenly spaced)."""
        if len(self.times_fs) < 2:
            raise ValueError("need at least two frames for a time step")
        dt = np.diff(self.times_fs)
        if not np.allclose(dt, dt[0], rtol=1e-6, atol=1e-9):
            raise ValueError("frames are not evenly spaced in time")
        if dt[0] <= 0:
            raise ValueError("frame times must increase")
        return float(dt[0])

    def get_velocities(self) -> np.ndarray:
        """Velocities (A/fs); from central differences of the positions if none were stored."""
        if self.velocities is not None:
            return self.velocities
        return _velocities_from_positions(self.positions, self.cells, self.timestep_fs)

    def temperature(self) -> float:
        """Mean kinetic temperature in K from the velocities (centre-of-mass motion removed)."""
        v = remove_com_velocity(self.get_velocities(), self.masses)
        v_ase = v / ase_units.fs  # A per ASE time unit
        ekin = 0.5 * np.einsum("a,tab,tab->t", self.masses, v_ase, v_ase)  # eV
        ndof = 3 * len(self.masses) - 3
        return float(2.0 * ekin.mean() / (ndof * ase_units.kB))


def _velocities_from_positions(pos: np.ndarray, cells: np.ndarray, dt_fs: float) -> np.ndarray:
    """Central-difference velocities (A/fs), unwrapping jumps through periodic boundaries."""
    if len(pos) < 3:
        raise ValueError("need at least three frames to differentiate positions")
    frac = np.einsum("tai,tij->taj", pos, np.linalg.inv(cells))
    dfrac = np.diff(frac, axis=0)
    dfrac -= np.round(dfrac)
    steps = np.einsum("taj,tji->tai", dfrac, cells[1:])
    unwrapped = np.concatenate([pos[:1], pos[:1] + np.cumsum(steps, axis=0)], axis=0)
    return np.gradient(unwrapped, dt_fs, axis=0)


class DielectricRecorder:
    """ASE dynamics observer recording BEC and eps_inf (and positions, velocities, cell).

    Example::

        dyn = Langevin(atoms, 1 * units.fs, temperature_K=300, friction=0.002)
        with DielectricRecorder(atoms, trajectory="md.traj").attach(dyn, interval=2) as rec:
            dyn.run(2000)
        record = rec.to_record()

    Args:
        atoms: the Atoms object being propagated (read, never modified).
        calc: calculator for ``born_effective_charges``/``dielectric_tensor``; default ``atoms.calc``
            (results cached from the force evaluation of the same step are reused).
        properties: which properties to record (subset of the two above).
        trajectory: optional path (``.traj`` or ``.xyz``/``.extxyz``) to stream frames to.
        timestep_fs: time between recorded frames; set automatically by :meth:`attach`.
    """

    def __init__(self, atoms: Atoms, calc: Optional[Calculator] = None, *,
                 properties: Sequence[str] = ("born_effective_charges", "dielectric_tensor"),
                 trajectory: Union[str, Path, None] = None,
                 timestep_fs: Optional[float] = None) -> None:
        allowed = {"born_effective_charges", "dielectric_tensor"}
        bad = set(properties) - allowed
        if bad:
            raise ValueError(f"cannot record {sorted(bad)}; allowed: {sorted(allowed)}")
        self.atoms = atoms
        self.calc = calc
        self.properties = tuple(properties)
        self.timestep_fs = timestep_fs
        self.trajectory = None if trajectory is None else Path(trajectory)
        self._dyn = None
        self._traj = None
        self._n_written = 0
        self._frames: Dict[str, List[np.ndarray]] = {k: [] for k in
                                                      ("t", "pos", "vel", "cell", "born", "eps")}

    # -- dynamics interface ------------------------------------------------------------------
    def attach(self, dyn, interval: int = 1) -> "DielectricRecorder":
        """Attach to an ASE ``MolecularDynamics`` object; frames are ``interval`` steps apart."""
        self._dyn = dyn
        self.timestep_fs = float(dyn.dt) * interval / ase_units.fs
        dyn.attach(self, interval=interval)
        return self

    def __call__(self) -> None:
        atoms = self.atoms
        calc = self.calc if self.calc is not None else atoms.calc
        if calc is None:
            raise ValueError("no calculator to evaluate BEC / dielectric tensor")
        n = len(atoms)
        if self._dyn is not None and hasattr(self._dyn, "get_time"):
            t = float(self._dyn.get_time()) / ase_units.fs
        else:
            dt = self.timestep_fs if self.timestep_fs is not None else 1.0
            t = len(self._frames["t"]) * dt
        born = eps = None
        if "born_effective_charges" in self.properties:
            born = np.array(calc.get_property("born_effective_charges", atoms), dtype=np.float64)
            if born.shape != (n, 3, 3):
                born = born.reshape(n, 3, 3)
        if "dielectric_tensor" in self.properties:
            eps = np.array(calc.get_property("dielectric_tensor", atoms), dtype=np.float64)
            eps = eps.reshape(3, 3)
        self._frames["t"].append(t)
        self._frames["pos"].append(atoms.get_positions())
        self._frames["vel"].append(atoms.get_velocities() * ase_units.fs)
        self._frames["cell"].append(np.array(atoms.cell[:], dtype=np.float64))
        self._frames["born"].append(born)
        self._frames["eps"].append(eps)
        if self.trajectory is not None:
            self._write_frame(_make_frame(atoms, born, eps, t, self._extxyz))

    # -- output ---------------------------------------------------------------------------
    @property
    def _extxyz(self) -> bool:
        return self.trajectory is not None and self.trajectory.suffix.lower() in (".xyz", ".extxyz")

    def _write_frame(self, frame: Atoms) -> None:
        if self._extxyz:
            ase.io.write(self.trajectory, frame, format="extxyz", append=self._n_written > 0)
        else:
            if self._traj is None:
                self._traj = Trajectory(str(self.trajectory), "a" if self._n_written else "w")
            self._traj.write(frame)
        self._n_written += 1

    def close(self) -> None:
        """Close the trajectory file (if any); recording may continue (a .traj is then appended)."""
        if self._traj is not None:
            self._traj.close()
            self._traj = None

    def __enter__(self) -> "DielectricRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._frames["t"])

    def to_record(self) -> MDRecord:
        """All frames recorded so far as an :class:`MDRecord`."""
        if len(self) == 0:
            raise ValueError("no frames recorded")
        fr = self._frames
        born = None if fr["born"][0] is None else np.array(fr["born"])
        eps = None if fr["eps"][0] is None else np.array(fr["eps"])
        return MDRecord(times_fs=np.array(fr["t"]), positions=np.array(fr["pos"]),
                        velocities=np.array(fr["vel"]), cells=np.array(fr["cell"]),
                        masses=self.atoms.get_masses().astype(np.float64),
                        numbers=self.atoms.get_atomic_numbers().copy(), born=born, dielectric=eps)


def _make_frame(atoms: Atoms, born: Optional[np.ndarray], eps: Optional[np.ndarray], t_fs: float,
                extxyz: bool) -> Atoms:
    frame = Atoms(numbers=atoms.get_atomic_numbers(), positions=atoms.get_positions(),
                  cell=atoms.cell[:], pbc=atoms.pbc, masses=atoms.get_masses(),
                  momenta=atoms.get_momenta())
    frame.info["time_fs"] = float(t_fs)
    results = {}
    if born is not None:
        results["born_effective_charges"] = born.reshape(len(atoms), 9) if extxyz else born
    if eps is not None:
        results["dielectric_tensor"] = eps
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def write_md_record(record: MDRecord, path: Union[str, Path]) -> Path:
    """Write an :class:`MDRecord` to ``.traj`` (BEC as (N,3,3)) or extended XYZ (BEC as (N,9))."""
    path = Path(path)
    extxyz = path.suffix.lower() in (".xyz", ".extxyz")
    frames = []
    vel = record.velocities
    for k in range(len(record)):
        atoms = Atoms(numbers=record.numbers, positions=record.positions[k], cell=record.cells[k],
                      pbc=True, masses=record.masses)
        if vel is not None:
            atoms.set_velocities(vel[k] / ase_units.fs)
        born = None if record.born is None else record.born[k]
        eps = None if record.dielectric is None else record.dielectric[k]
        frames.append(_make_frame(atoms, born, eps, record.times_fs[k], extxyz))
    ase.io.write(path, frames, format="extxyz" if extxyz else None)
    return path


def read_md_record(path: Union[str, Path], index: Union[str, slice] = ":", *,
                   timestep_fs: Optional[float] = None) -> MDRecord:
    """Read frames written by :class:`DielectricRecorder` / :func:`write_md_record` (or any ASE
    trajectory whose frames carry ``born_effective_charges`` / ``dielectric_tensor``).

    BEC are taken from the frame's calculator results or ``atoms.arrays`` and reshaped to (N,3,3)
    (row-major, so the (N,9) extxyz layout round-trips); eps from results or ``atoms.info``.
    Times come from ``info['time_fs']``, else from ``timestep_fs``.
    """
    frames = ase.io.read(path, index=index)
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise ValueError(f"no frames in {path}")
    n = len(frames[0])
    times, pos, vel, cells, borns, epss = [], [], [], [], [], []
    has_vel = all(f.has("momenta") for f in frames)
    for k, f in enumerate(frames):
        res = f.calc.results if f.calc is not None else {}
        born = res.get("born_effective_charges", f.arrays.get("born_effective_charges"))
        eps = res.get("dielectric_tensor", f.info.get("dielectric_tensor"))
        borns.append(None if born is None else np.asarray(born, dtype=np.float64).reshape(n, 3, 3))
        epss.append(None if eps is None else np.asarray(eps, dtype=np.float64).reshape(3, 3))
        if "time_fs" in f.info:
            times.append(float(f.info["time_fs"]))
        elif timestep_fs is not None:
            times.append(k * timestep_fs)
        else:
            raise ValueError("frames carry no info['time_fs']; pass timestep_fs")
        pos.append(f.get_positions())
        cells.append(np.array(f.cell[:], dtype=np.float64))
        if has_vel:
            vel.append(f.get_velocities() * ase_units.fs)
    born_arr = None if any(b is None for b in borns) else np.array(borns)
    eps_arr = None if any(e is None for e in epss) else np.array(epss)
    return MDRecord(times_fs=np.array(times), positions=np.array(pos),
                    velocities=np.array(vel) if has_vel else None, cells=np.array(cells),
                    masses=frames[0].get_masses().astype(np.float64),
                    numbers=frames[0].get_atomic_numbers().copy(), born=born_arr, dielectric=eps_arr)
