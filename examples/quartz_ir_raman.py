"""IR and Raman spectra of alpha-quartz at Gamma with ETGNN (phonopy + Born charges + eps_inf).

    python examples/quartz_ir_raman.py [--out DIR] [--model PATH] [--relax] [--supercell 2 2 2]

Steps: build alpha-quartz (``ase_etgnn.dfpt.alpha_quartz``, the seed of the SiO2 training data:
P3_221, a = 4.916, c = 5.4054 A; Si 3a x = 0.4697, O 6c (0.4135, 0.2669, 0.1191), Levien, Prewitt &
Weidner, Am. Mineral. 65, 920 (1980)), optionally relax the positions with the
symmetry fixed, compute force constants with phonopy on a supercell, Born charges and eps_inf for
the NAC, then IR intensities (km/mol), Raman activities (A^4/amu) and LO-TO splittings at Gamma.

Writes ``DIR/quartz_modes.json`` (the 27 Gamma modes: frequency_cm1, ir_intensity_km_mol,
raman_activity_A4_amu, irrep, ...), ``DIR/quartz_summary.json`` (eps_inf, eps_0, LO modes) and
``DIR/quartz_ir_raman.png`` (stick and Lorentzian-broadened spectra).  A few minutes on 2 CPU cores
(about 2 x 27 + 8 force/dielectric evaluations of 9- and 72-atom cells).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from ase import Atoms

from ase_etgnn.dfpt import alpha_quartz  # the seed of the SiO2 data set
from ase_etgnn.spectra import (
    broaden,
    degenerate_groups,
    frequencies_at_gamma,
    gamma_spectroscopy,
    make_phonopy,
)



def relax_positions(atoms: Atoms, calc, fmax: float = 0.01, steps: int = 200) -> Atoms:
    """Relax the internal coordinates (cell fixed) keeping the space group; returns a new Atoms."""
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


def plot_spectra(rows: List[dict], path: Path, fwhm: float = 8.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    opt = [r for r in rows if not r["acoustic"]]
    f = np.array([r["frequency_cm1"] for r in opt])
    ir = np.array([r["ir_intensity_km_mol"] for r in opt])
    ra = np.array([r["raman_activity_A4_amu"] for r in opt])
    groups = degenerate_groups(f, tol=0.5)  # sticks: degenerate partners summed
    f_g = np.array([f[g].mean() for g in groups])
    grid = np.linspace(0.0, max(1400.0, f.max() * 1.1), 3000)
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for ax, inten, label, color in ((axes[0], ir, "IR intensity (km/mol)", "C0"),
                                    (axes[1], ra, "Raman activity (A$^4$/amu)", "C3")):
        sticks = np.array([inten[g].sum() for g in groups])
        spec = broaden(f, inten, grid, fwhm_cm1=fwhm)
        scale = sticks.max() / spec.max() if spec.max() > 0 else 1.0
        ax.vlines(f_g, 0, sticks, color="k", lw=1.0, label="modes (degenerate summed)")
        ax.plot(grid, spec * scale, color=color,
                label=f"Lorentzian FWHM {fwhm:g} cm$^{{-1}}$ (scaled to strongest mode)")
        ax.set_ylabel(label)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_ylim(bottom=0)
    axes[1].set_xlabel("wavenumber (cm$^{-1}$)")
    axes[0].set_title("alpha-quartz, Gamma point (ETGNN)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None, calc=None) -> List[dict]:
    """Run the workflow; ``calc`` overrides ``--model`` (any ASE calculator with forces, BEC, eps)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="quartz_ir_raman", help="output directory")
    ap.add_argument("--model", default="sio2.pt", help="ETGNN model file or shipped model name")
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                    help="calculator precision (float64 recommended for finite differences)")
    ap.add_argument("--relax", action="store_true", help="relax internal coordinates first")
    ap.add_argument("--fmax", type=float, default=0.005, help="relaxation threshold (eV/A)")
    ap.add_argument("--supercell", type=int, nargs=3, default=(2, 2, 2), help="phonopy supercell")
    ap.add_argument("--displacement", type=float, default=0.01, help="phonopy displacement (A)")
    ap.add_argument("--fwhm", type=float, default=8.0, help="broadening FWHM (cm^-1)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if calc is None:
        from ase_etgnn import ETGNNCalculator

        calc = ETGNNCalculator(args.model, dtype=args.dtype)
    t0 = time.time()
    atoms = alpha_quartz()
    if args.relax:
        atoms = relax_positions(atoms, calc, fmax=args.fmax)
    phonon = make_phonopy(atoms, calc, supercell_matrix=args.supercell, displacement=args.displacement,
                          nac=True)
    print(f"force constants from {len(phonon.supercells_with_displacements)} displaced "
          f"{len(phonon.supercell)}-atom supercells ({time.time() - t0:.0f} s)")
    res = gamma_spectroscopy(phonon, calc)
    rows = res.table()
    n_imag = int(np.sum(res.modes.frequencies_cm1[res.modes.optical] < -5.0))
    if n_imag:
        print(f"WARNING: {n_imag} optical modes are imaginary (negative here): structure not at a "
              "minimum of this model (try --relax) or model not accurate enough")
    lo = {name: frequencies_at_gamma(phonon, q).tolist()
          for name, q in (("q||x", [1.0, 0.0, 0.0]), ("q||z", [0.0, 0.0, 1.0]))}

    np.set_printoptions(precision=3, suppress=True)
    print("eps_inf =\n", res.eps_inf, "\neps_0 =\n", res.eps_0)
    print(f"{'#':>3} {'irrep':>5} {'TO cm-1':>9} {'LO z srt':>9} {'IR km/mol':>10} {'Raman A4/amu':>13}")
    lo_z = np.sort(lo["q||z"])
    for r, wlo in zip(rows, lo_z):
        print(f"{r['index']:3d} {str(r['irrep'] or '-'):>5} {r['frequency_cm1']:9.1f} {wlo:9.1f} "
              f"{r['ir_intensity_km_mol']:10.2f} {r['raman_activity_A4_amu']:13.3f}")
    (out / "quartz_modes.json").write_text(json.dumps(rows, indent=1))
    summary = {"eps_inf": res.eps_inf.tolist(), "eps_0": res.eps_0.tolist(),
               "lo_frequencies_cm1": lo, "supercell": list(args.supercell), "relaxed": args.relax,
               "cell": atoms.cell[:].tolist(), "scaled_positions": atoms.get_scaled_positions().tolist()}
    (out / "quartz_summary.json").write_text(json.dumps(summary, indent=1))
    plot_spectra(rows, out / "quartz_ir_raman.png", fwhm=args.fwhm)
    print(f"wrote {out / 'quartz_modes.json'}, {out / 'quartz_ir_raman.png'} ({time.time() - t0:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
