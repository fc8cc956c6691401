"""IR and Raman spectra from molecular dynamics: correlation functions of the dipole derivative and
of the polarisability along a recorded trajectory (:class:`~.recording.MDRecord`, see :mod:`.recording`).

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
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import constants as sc

from ..conventions import apply_sum_rule
from .recording import MDRecord, remove_com_velocity
from .units import CM1_TO_EV, KB_EV, PER_FS_TO_CM1

__all__ = [
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
        v = remove_com_velocity(v, np.asarray(masses, dtype=np.float64))
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
