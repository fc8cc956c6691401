"""IR and Raman spectra from molecular dynamics: recording BEC and eps_inf, correlation functions.

Recording
---------
:class:`DielectricRecorder` is an ASE dynamics observer: ``recorder.attach(dyn, interval=n)`` stores,
every ``n`` steps, the positions, velocities, cell, Born effective charges (N,3,3) and the
electronic dielectric tensor (3,3), and optionally streams them to a trajectory: ``.traj`` keeps the
(N,3,3) BEC as a calculator result; extended XYZ stores it flattened row-major to (N,9) (a
``Properties`` column ``born_effective_charges:R:9``) and the dielectric tensor in the comment line.
:func:`read_md_record` reads both back into an :class:`MDRecord`.

IR (linear response; McQuarrie, "Statistical Mechanics" ch. 21; Ramirez, Lopez-Ciudad, Kumar & Marx,
JCP 121, 3973 (2004); Gaigeot & Sprik, JPCB 107, 10344 (2003))
-----------------------------------------------------------------------------------------------
The cell dipole changes as ``dM_i/dt = sum_a sum_b Z_a[i, b] v_a,b`` (``ase_etgnn`` convention
``Z[a,i,b] = Omega dP_i/du_b``), evaluated per frame after imposing the charge sum rule on Z and
removing the centre-of-mass velocity.  With ``C(t) = <dM(0)/dt . dM(t)/dt>`` (classical) and
``C~(w) = int C(t) w(t) exp(-i w t) dt`` (Hann window ``w``) the absorption coefficient times the
refractive index is::

    alpha(w) n(w) = [(1 - exp(-x)) / x] Q(x) * beta / (6 c eps0 V) * C~(w),   x = hbar w / kT

(SI; returned in cm^-1).  ``Q`` is the quantum-correction factor applied to the classical
correlation function before it enters the quantum golden-rule expression
``alpha n = w (1 - e^-x) / (6 hbar c eps0 V) I_qm(w)``:

* ``"harmonic"``: ``Q = x / (1 - e^-x)``  ->  the classical formula ``beta C~ / (6 c eps0 V)``,
  exact for harmonic systems (default);
* ``"standard"``: ``Q = exp(x/2)`` (Schofield);
* ``"none"``: ``Q = 1`` (classical correlation used as the quantum one; underestimates high w).

Integrated over w, ``int_0^inf alpha n dw = pi |Zt|^2 / (6 eps0 c V)`` per harmonic mode at
equipartition (the static oscillator-strength sum rule, tested).

Raman (Placzek; Thomas, Brehm, Fligg & Kirchner, PCCP 15, 6608 (2013); Long 2002)
---------------------------------------------------------------------------------
``alpha(t) = V(t) (eps_inf(t) - 1) / (4 pi)`` (A^3), mean subtracted.  With ``a = tr(alpha)/3`` and
``beta = alpha - a 1`` (symmetrised): ``iso(w) = FT <a(0) a(t)>``, ``aniso(w) = FT (3/2)
<beta(0):beta(t)>`` (the gamma^2 spectrum), ``VV = iso + 4/45 aniso``, ``VH = aniso/15``,
``unpolarized = VV + VH = iso + 7/45 aniso`` (the MD analogue of ``(45 a^2 + 7 gamma^2)/45``).
Spectra are multiplied by ``Q(x)`` ("none" gives the classical line shape).  Units A^6 fs.

Frequencies are ordinary wavenumbers ``w/(2 pi c)`` in cm^-1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase import units as ase_units
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from scipy import constants as sc

from ..conventions import apply_sum_rule
from .units import CM1_TO_EV, KB_EV, PER_FS_TO_CM1

__all__ = [
    "MDRecord",
    "DielectricRecorder",
    "read_md_record",
    "write_md_record",
    "autocorrelation",
    "acf_spectrum",
    "quantum_correction_factor",
    "dipole_derivative",
    "polarizability_series",
    "MDSpectrum",
    "ir_spectrum_from_md",
    "raman_spectra_from_md",
]

_QC_KINDS = ("none", "harmonic", "standard")


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
        v = _remove_com(self.get_velocities(), self.masses)
        v_ase = v / ase_units.fs  # A per ASE time unit
        ekin = 0.5 * np.einsum("a,tab,tab->t", self.masses, v_ase, v_ase)  # eV
        ndof = 3 * len(self.masses) - 3
        return float(2.0 * ekin.mean() / (ndof * ase_units.kB))


def _remove_com(v: np.ndarray, masses: np.ndarray) -> np.ndarray:
    vcom = np.einsum("a,tab->tb", masses, v) / masses.sum()
    return v - vcom[:, None, :]


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
        import ase.io

        if self._extxyz:
            ase.io.write(self.trajectory, frame, format="extxyz", append=self._n_written > 0)
        else:
            if self._traj is None:
                from ase.io.trajectory import Trajectory

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
    import ase.io

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
    import ase.io

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


# ---------------------------------------------------------------------------------------------
# correlation functions and spectra
# ---------------------------------------------------------------------------------------------
def autocorrelation(x: np.ndarray, max_lag: Optional[int] = None) -> np.ndarray:
    """Unbiased time autocorrelation ``C[k] = 1/(T-k) sum_t x_t . x_{t+k}`` (FFT, O(T log T)).

    Args:
        x: (T,) or (T, ...) series; trailing axes are contracted (dot product).
        max_lag: number of lags returned (default T // 2).

    Returns:
        (max_lag,) array, ``C[0] = <x.x>``.
    """
    x = np.asarray(x, dtype=np.float64)
    t = x.shape[0]
    x2 = x.reshape(t, -1)
    lag = t // 2 if max_lag is None else int(max_lag)
    if not 1 <= lag <= t:
        raise ValueError(f"max_lag must be in [1, {t}], got {lag}")
    nfft = 1 << int(math.ceil(math.log2(2 * t)))
    f = np.fft.rfft(x2, n=nfft, axis=0)
    acf = np.fft.irfft(np.sum(np.abs(f) ** 2, axis=1), n=nfft)[:lag]
    return acf / (t - np.arange(lag))


def acf_spectrum(acf: np.ndarray, timestep_fs: float, *, window: Optional[str] = "hann",
                 pad_factor: int = 4) -> Tuple[np.ndarray, np.ndarray]:
    """Fourier transform of an even correlation function given for ``t >= 0``.

    ``S(nu) = int_{-inf}^{inf} C(|t|) w(|t|) exp(-2 pi i nu c t) dt = dt [2 Re sum_k C_k w_k
    e^{-i w k dt} - C_0]`` with the half-Hann window ``w_k = cos^2(pi k / (2 L))`` (or none),
    zero-padded to ``pad_factor * L`` points.

    Returns:
        ``(frequencies_cm1, S)``; S in (units of C) x fs.  ``int S dw / (2 pi) = C_0 w_0`` over all w.
    """
    acf = np.asarray(acf, dtype=np.float64)
    lag = len(acf)
    if window in (None, "none"):
        w = np.ones(lag)
    elif window == "hann":
        w = np.cos(0.5 * math.pi * np.arange(lag) / lag) ** 2
    else:
        raise ValueError(f"unknown window {window!r}; use 'hann' or None")
    npad = max(int(pad_factor), 1) * lag
    cw = acf * w
    spec = timestep_fs * (2.0 * np.fft.rfft(cw, n=npad).real - cw[0])
    freq = np.fft.rfftfreq(npad, d=timestep_fs) * PER_FS_TO_CM1
    return freq, spec


def quantum_correction_factor(frequencies_cm1: np.ndarray, temperature: Optional[float],
                              kind: str = "harmonic") -> np.ndarray:
    """Quantum correction ``Q(x)``, ``x = h c nu / kT``, applied to a classical spectrum.

    ``"none"``: 1; ``"harmonic"``: ``x / (1 - e^-x)``; ``"standard"``: ``exp(x/2)``
    (Ramirez et al., JCP 121, 3973 (2004), Table I).  Q(0) = 1.
    """
    nu = np.asarray(frequencies_cm1, dtype=np.float64)
    if kind not in _QC_KINDS:
        raise ValueError(f"unknown quantum correction {kind!r}; choose from {_QC_KINDS}")
    if kind == "none":
        return np.ones_like(nu)
    if temperature is None or temperature <= 0:
        raise ValueError(f"quantum correction {kind!r} needs a positive temperature")
    x = nu * CM1_TO_EV / (KB_EV * temperature)
    if kind == "harmonic":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.abs(x) > 1e-12, x / -np.expm1(-np.where(x == 0, 1.0, x)), 1.0)
    return np.exp(0.5 * x)


def dipole_derivative(born: np.ndarray, velocities: np.ndarray, masses: np.ndarray, *,
                      asr: bool = True, remove_com: bool = True) -> np.ndarray:
    """Time derivative of the cell dipole, ``dM_i/dt = sum_a sum_b Z_a[i,b] v_a,b`` (e A/fs).

    Args:
        born: (T, N, 3, 3) e, ``Z[a,i,b] = dF_b/dE_i``.
        velocities: (T, N, 3) A/fs.
        masses: (N,) amu (for the centre-of-mass velocity).
        asr: subtract the per-frame mean Born charge so that ``sum_a Z_a = 0``.
        remove_com: subtract the per-frame centre-of-mass velocity.

    Returns:
        (T, 3).
    """
    z = np.asarray(born, dtype=np.float64)
    v = np.asarray(velocities, dtype=np.float64)
    if z.ndim != 4 or z.shape[2:] != (3, 3) or v.shape != z.shape[:3]:
        raise ValueError(f"shapes born {z.shape} and velocities {v.shape} do not match (T,N,3,3)/(T,N,3)")
    if asr:
        z = apply_sum_rule(z)
    if remove_com:
        v = _remove_com(v, np.asarray(masses, dtype=np.float64))
    return np.einsum("taib,tab->ti", z, v)


def polarizability_series(record: MDRecord) -> np.ndarray:
    """(T,3,3) cell polarisability ``V (eps - 1)/(4 pi)`` in A^3 (symmetrised)."""
    if record.dielectric is None:
        raise ValueError("record has no dielectric tensors")
    eps = 0.5 * (record.dielectric + np.swapaxes(record.dielectric, 1, 2))
    return record.volumes[:, None, None] * (eps - np.eye(3)) / (4.0 * math.pi)


@dataclass
class MDSpectrum:
    """Spectra from MD correlation functions.

    Attributes:
        frequencies_cm1: (n,) wavenumbers (cm^-1), from 0.
        spectra: name -> (n,) array; units in ``units``.
        units: name -> unit string.
        acf: name -> correlation function used (t >= 0), sampled every ``timestep_fs``.
        timestep_fs: correlation-function sampling.
        temperature: K used for prefactors / quantum corrections (None if unused).
        quantum_correction: kind used.
    """

    frequencies_cm1: np.ndarray
    spectra: Dict[str, np.ndarray]
    units: Dict[str, str]
    acf: Dict[str, np.ndarray] = field(default_factory=dict)
    timestep_fs: float = 1.0
    temperature: Optional[float] = None
    quantum_correction: str = "harmonic"

    def __getitem__(self, name: str) -> np.ndarray:
        return self.spectra[name]


def _lags(record: MDRecord, max_lag_fs: Optional[float]) -> int:
    dt = record.timestep_fs
    if max_lag_fs is None:
        return max(len(record) // 2, 1)
    return int(min(len(record), max(2, round(max_lag_fs / dt) + 1)))


def ir_spectrum_from_md(record: MDRecord, temperature: Optional[float] = None, *,
                        max_lag_fs: Optional[float] = None, window: Optional[str] = "hann",
                        pad_factor: int = 4, quantum_correction: str = "harmonic",
                        asr: bool = True, remove_com: bool = True) -> MDSpectrum:
    """IR absorption ``alpha(w) n(w)`` (cm^-1) from the dipole-derivative autocorrelation.

    See the module docstring for the formula.  ``temperature`` (K) defaults to the kinetic
    temperature of the record.  The returned spectrum ``"absorption"`` is in cm^-1 (per unit
    refractive index); ``"power"`` is ``C~(w)`` itself in (e A/fs)^2 fs.
    """
    if record.born is None:
        raise ValueError("record has no Born effective charges")
    if temperature is None:
        temperature = record.temperature()
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    mdot = dipole_derivative(record.born, record.get_velocities(), record.masses, asr=asr,
                             remove_com=remove_com)
    dt = record.timestep_fs
    acf = autocorrelation(mdot, _lags(record, max_lag_fs))
    freq, power = acf_spectrum(acf, dt, window=window, pad_factor=pad_factor)
    x = freq * CM1_TO_EV / (KB_EV * temperature)
    with np.errstate(invalid="ignore", divide="ignore"):
        golden = np.where(x > 1e-12, -np.expm1(-x) / np.where(x > 0, x, 1.0), 1.0)
    factor = golden * quantum_correction_factor(freq, temperature, quantum_correction)
    # SI prefactor: beta / (6 c eps0 V) * C~; C~ in (e A / fs)^2 fs -> (C m / s)^2 s
    volume_m3 = float(record.volumes.mean()) * 1e-30
    to_si = (sc.e * 1e-10 / 1e-15) ** 2 * 1e-15
    pref = 1.0 / (sc.k * temperature) / (6.0 * sc.c * sc.epsilon_0 * volume_m3) * to_si / 100.0
    absorption = pref * factor * power
    return MDSpectrum(frequencies_cm1=freq, spectra={"absorption": absorption, "power": power},
                      units={"absorption": "cm^-1", "power": "(e A/fs)^2 fs"}, acf={"dMdt": acf},
                      timestep_fs=dt, temperature=float(temperature),
                      quantum_correction=quantum_correction)


def raman_spectra_from_md(record: MDRecord, temperature: Optional[float] = None, *,
                          max_lag_fs: Optional[float] = None, window: Optional[str] = "hann",
                          pad_factor: int = 4, quantum_correction: str = "harmonic") -> MDSpectrum:
    """Isotropic, anisotropic, VV, VH and unpolarised Raman spectra from the polarisability ACF.

    ``alpha(t) = V (eps_inf - 1)/(4 pi)`` (A^3) minus its time average; see the module docstring.
    All spectra are multiplied by ``quantum_correction_factor`` (``temperature`` defaults to the
    kinetic temperature when a correction other than "none" is asked).  Units A^6 fs.
    """
    alpha = polarizability_series(record)
    alpha = alpha - alpha.mean(axis=0, keepdims=True)
    iso = np.trace(alpha, axis1=1, axis2=2) / 3.0
    aniso = alpha - iso[:, None, None] * np.eye(3)
    lags = _lags(record, max_lag_fs)
    dt = record.timestep_fs
    acf_iso = autocorrelation(iso, lags)
    acf_aniso = 1.5 * autocorrelation(aniso.reshape(len(record), 9), lags)
    freq, s_iso = acf_spectrum(acf_iso, dt, window=window, pad_factor=pad_factor)
    _, s_aniso = acf_spectrum(acf_aniso, dt, window=window, pad_factor=pad_factor)
    if quantum_correction != "none" and temperature is None:
        temperature = record.temperature()
    q = quantum_correction_factor(freq, temperature, quantum_correction)
    s_iso, s_aniso = q * s_iso, q * s_aniso
    spectra = {
        "iso": s_iso,
        "aniso": s_aniso,
        "VV": s_iso + 4.0 / 45.0 * s_aniso,
        "VH": s_aniso / 15.0,
        "unpolarized": s_iso + 7.0 / 45.0 * s_aniso,
    }
    return MDSpectrum(frequencies_cm1=freq, spectra=spectra, units={k: "A^6 fs" for k in spectra},
                      acf={"iso": acf_iso, "aniso": acf_aniso}, timestep_fs=dt,
                      temperature=None if temperature is None else float(temperature),
                      quantum_correction=quantum_correction)
