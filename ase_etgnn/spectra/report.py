"""What the Gamma-point workflow reports: modes matched to measured frequencies by irrep, warnings for
imaginary branches, stick + broadened IR/Raman spectra and dispersion figures (matplotlib, ``Agg``).

Frequencies in cm^-1, IR intensities in km/mol, Raman activities in A^4/amu (as in :mod:`.workflow`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from .infrared import broaden
from .phonons import degenerate_groups

__all__ = ["match_experiment", "imaginary_warnings", "plot_gamma_spectra", "plot_dispersion"]


def match_experiment(groups: Sequence[Mapping[str, Any]], experiment: Mapping[str, Sequence[float]]
                     ) -> List[Dict[str, Any]]:
    """Pair computed mode groups with measured frequencies of the same irrep, both in ascending order.

    Args:
        groups: rows of :func:`~ase_etgnn.spectra.workflow.mode_group_table` (``irrep``, ``to_cm1``, ...).
        experiment: ``{irrep: [cm^-1, ...]}`` (TO frequencies; one value per degenerate group).

    Returns:
        one dict per measured value: ``irrep``, ``experiment_cm1``, ``computed_cm1``, ``difference_cm1`` and the
        group's ``ir_intensity_km_mol`` / ``raman_activity_A4_amu``.

    Raises:
        ValueError: an irrep whose number of computed groups differs from the number of measured values (the
            structure is not of the expected symmetry, or a degeneracy was split).
    """
    out = []
    for irrep, measured in experiment.items():
        mine = sorted((g for g in groups if g["irrep"] == irrep), key=lambda g: g["to_cm1"])
        if len(mine) != len(measured):
            found = sorted({str(g["irrep"]) for g in groups})
            raise ValueError(f"irrep {irrep}: {len(mine)} computed mode groups, {len(measured)} measured values "
                             f"(irreps found: {', '.join(found)})")
        for g, e in zip(mine, sorted(measured)):
            out.append({"irrep": irrep, "experiment_cm1": float(e), "computed_cm1": g["to_cm1"],
                        "difference_cm1": g["to_cm1"] - float(e),
                        "ir_intensity_km_mol": g["ir_intensity_km_mol"],
                        "raman_activity_A4_amu": g["raman_activity_A4_amu"]})
    return out


def imaginary_warnings(imaginary: Sequence[Mapping[str, Any]], threshold_cm1: float) -> List[str]:
    """One line per path segment with imaginary frequencies (``band_path(...)["imaginary"]``), naming its most
    unstable q-point; no lines when there are none."""
    lines = []
    for seg in dict.fromkeys(b["segment"] for b in imaginary):
        worst = min((b for b in imaginary if b["segment"] == seg), key=lambda b: b["frequency_cm1"])
        n = sum(b["segment"] == seg for b in imaginary)
        q = ", ".join(f"{v:.3f}" for v in worst["q"])
        lines.append(f"WARNING: imaginary frequency {worst['frequency_cm1']:.1f} cm^-1 at q = ({q}) on {seg} "
                     f"({n} q-points below {threshold_cm1:g} cm^-1)")
    return lines


def plot_gamma_spectra(rows: Sequence[Mapping[str, Any]], path: Path, title: str, fwhm: float = 8.0) -> None:
    """IR (top) and Raman (bottom) sticks, degenerate partners summed, with Lorentzian-broadened curves.

    Args:
        rows: :meth:`~ase_etgnn.spectra.workflow.GammaSpectra.table` (acoustic modes are left out).
        fwhm: Lorentzian full width at half maximum (cm^-1).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    opt = [r for r in rows if not r["acoustic"]]
    f = np.array([r["frequency_cm1"] for r in opt])  # [M]
    ir = np.array([r["ir_intensity_km_mol"] for r in opt])  # [M]
    ra = np.array([r.get("raman_activity_A4_amu", 0.0) for r in opt])  # [M]
    groups = degenerate_groups(f, tol=0.5)
    f_g = np.array([f[g].mean() for g in groups])  # [G]
    grid = np.linspace(0.0, max(1400.0, f.max() * 1.1), 3000)
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for ax, inten, label, color in ((axes[0], ir, "IR intensity (km/mol)", "C0"),
                                    (axes[1], ra, "Raman activity (A$^4$/amu)", "C3")):
        sticks = np.array([inten[g].sum() for g in groups])  # [G]
        spec = broaden(f, inten, grid, fwhm_cm1=fwhm)
        scale = sticks.max() / spec.max() if spec.max() > 0 else 1.0
        ax.vlines(f_g, 0, sticks, color="k", lw=1.0, label="modes (degenerate summed)")
        ax.plot(grid, spec * scale, color=color,
                label=f"Lorentzian FWHM {fwhm:g} cm$^{{-1}}$ (scaled to strongest mode)")
        ax.set_ylabel(label)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_ylim(bottom=0)
    axes[1].set_xlabel("wavenumber (cm$^{-1}$)")
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_dispersion(disp: Mapping[str, Any], path: Path, title: str) -> None:
    """Phonon branches of :func:`~ase_etgnn.spectra.phonons.band_path` (imaginary drawn negative)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(disp["distance"], disp["frequencies_cm1"], color="C0", lw=1.0)
    for t in disp["ticks"]:
        ax.axvline(t, color="k", lw=0.5)
    ax.axhline(0.0, color="k", lw=0.5, ls="--")
    ax.set_xticks(disp["ticks"], [r"$\Gamma$" if n == "Gamma" else n for n in disp["labels"]])
    ax.set_xlim(disp["ticks"][0], disp["ticks"][-1])
    ax.set_ylabel("frequency (cm$^{-1}$; negative = imaginary)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
