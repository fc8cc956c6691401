"""IR and Raman spectra of alpha-quartz at Gamma with ETGNN (phonopy + Born charges + eps_inf).

    python examples/quartz_ir_raman.py [--output-dir DIR] [--model PATH] [--relax] [--supercell 2 2 2]

Needs the ``phonons`` extra (``pip install -e ".[phonons]"``: phonopy, matplotlib).

Steps: build alpha-quartz (``ase_etgnn.structures.alpha_quartz``, the seed of the SiO2 training data:
P3_221, a = 4.916, c = 5.4054 A; Si 3a x = 0.4697, O 6c (0.4135, 0.2669, 0.1191), Levien, Prewitt &
Weidner, Am. Mineral. 65, 920 (1980)), optionally relax the positions with the
symmetry fixed, compute force constants with phonopy on a supercell, Born charges and eps_inf for
the NAC, then IR intensities (km/mol), Raman activities (A^4/amu) and LO-TO splittings at Gamma.

The table has one row per irrep group (degenerate modes summed).  LO modes are paired with their TO
group by eigenvector overlap (``ase_etgnn.spectra.lo_to_pairs``): only modes with a dipole along q have
an LO partner (q || z: A2; q || x: one of each E pair); A1 modes are non-polar and never have one ("-").

The phonon dispersion along Gamma-M-K-Gamma-A is checked for imaginary frequencies (< -5 cm^-1) and a
warning names the q-points.  At the experimental positions (the default) one acoustic branch of the
shipped model is imaginary over the whole path (2x2x2 supercell: -65 cm^-1 at A, -45 cm^-1 on Gamma-M):
the positions are not a minimum of the model.  With ``--relax`` only a -7 cm^-1 pocket within 0.03
reciprocal units of Gamma remains.  The Gamma modes are fine at both geometries (``models/sio2.md``).

Writes into ``--output-dir`` (default ``runs/examples/quartz_ir_raman``; an existing default is not
overwritten, the run goes to ``...-2``; a directory you name is refused if it holds these files, unless
``--overwrite``): ``quartz_modes.json`` (the 27 Gamma modes: frequency_cm1, ir_intensity_km_mol,
raman_activity_A4_amu, irrep, ...), ``quartz_summary.json`` (eps_inf, eps_0, LO/TO pairs, imaginary
q-points), ``quartz_ir_raman.png`` (stick and Lorentzian-broadened spectra) and
``quartz_dispersion.png``.  About a minute on 2 CPU cores (2 x 27 + 10 force/dielectric evaluations of
9- and 72-atom cells).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from ase_etgnn.structures import alpha_quartz  # the seed of the SiO2 data set
from ase_etgnn.spectra import (
    broaden,
    degenerate_groups,
    frequencies_at_gamma,
    gamma_spectroscopy,
    imaginary_qpoints,
    lo_to_pairs,
    make_phonopy,
    mode_groups,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import output_dir  # noqa: E402  (examples/_output.py)

OUTPUT_FILES = ("quartz_modes.json", "quartz_summary.json", "quartz_ir_raman.png", "quartz_dispersion.png")
#: reduced coordinates of the high-symmetry points of the hexagonal cell (a1, a2 at 120 degrees)
PATH = (("Gamma", (0.0, 0.0, 0.0)), ("M", (0.5, 0.0, 0.0)), ("K", (1 / 3, 1 / 3, 0.0)),
        ("Gamma", (0.0, 0.0, 0.0)), ("A", (0.0, 0.0, 0.5)))
IMAGINARY_CM1 = -5.0


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


def dispersion(phonon, n_per_segment: int = 20) -> Dict[str, object]:
    """Frequencies (cm^-1) along ``PATH``; q-points with imaginary modes below ``IMAGINARY_CM1``."""
    qpts, seg_names, dist, ticks = [], [], [], [0.0]
    rec = np.array(phonon.primitive.cell, dtype=np.float64)  # rows: lattice vectors
    rec = np.linalg.inv(rec).T  # rows: reciprocal vectors / 2 pi
    x = 0.0
    for (n0, q0), (n1, q1) in zip(PATH[:-1], PATH[1:]):
        for t in np.linspace(0.0, 1.0, n_per_segment + 1)[1:] if qpts else np.linspace(0.0, 1.0, n_per_segment + 1):
            q = (1 - t) * np.array(q0) + t * np.array(q1)
            if qpts:
                x += float(np.linalg.norm((q - qpts[-1]) @ rec))
            qpts.append(q)
            seg_names.append(f"{n0}-{n1}")
            dist.append(x)
        ticks.append(x)
    qpts = np.array(qpts)  # [n, 3] reduced
    from ase_etgnn.spectra.units import THZ_TO_CM1

    freqs = np.asarray(phonon.run_qpoints(qpts).frequencies) * THZ_TO_CM1  # [n, 3N]
    bad = imaginary_qpoints(phonon, qpts, IMAGINARY_CM1)
    for b in bad:
        b["segment"] = seg_names[b["index"]]
    return {"q": qpts, "distance": np.array(dist), "frequencies_cm1": freqs, "ticks": ticks,
            "labels": [n for n, _ in PATH], "imaginary": bad}


def warn_imaginary(bad: List[dict]) -> None:
    """One warning line per path segment with imaginary frequencies, naming its most unstable q-point."""
    for seg in dict.fromkeys(b["segment"] for b in bad):
        worst = min((b for b in bad if b["segment"] == seg), key=lambda b: b["frequency_cm1"])
        n = sum(b["segment"] == seg for b in bad)
        q = ", ".join(f"{v:.3f}" for v in worst["q"])
        print(f"WARNING: imaginary frequency {worst['frequency_cm1']:.1f} cm^-1 at q = ({q}) on {seg} "
              f"({n} q-points below {IMAGINARY_CM1:g} cm^-1)")
    if bad:
        print("         the structure is not at a minimum of this model (at the experimental positions one acoustic "
              "branch of the shipped model is imaginary; try --relax, see models/sio2.md), or, for a few "
              "cm^-1 close to Gamma only, finite-displacement noise (larger --supercell)")


def plot_dispersion(disp: Dict[str, object], path: Path) -> None:
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
    ax.set_title("alpha-quartz phonon dispersion (ETGNN, with NAC)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def group_table(res, pairs: Dict[str, list]) -> List[dict]:
    """One row per irrep group of optical modes: TO, LO partners per direction (None = no LO), IR, Raman."""
    rows = res.table()
    lo_of = {name: {p.to_indices: p for p in plist} for name, plist in pairs.items()}
    out = []
    for g in mode_groups(res.modes):
        if any(rows[s]["acoustic"] for s in g):
            continue
        row = {"irrep": rows[g[0]]["irrep"], "modes": list(g), "to_cm1": float(np.mean([rows[s]["frequency_cm1"] for s in g])),
               "ir_intensity_km_mol": float(sum(rows[s]["ir_intensity_km_mol"] for s in g)),
               "raman_activity_A4_amu": float(sum(rows[s].get("raman_activity_A4_amu", 0.0) for s in g))}
        for name in pairs:
            p = lo_of[name].get(tuple(g))
            row[f"lo_{name}_cm1"] = None if p is None else p.lo_cm1
            row[f"lo_{name}_irrep"] = None if p is None else p.irrep
        out.append(row)
    return out


def main(argv: Optional[Sequence[str]] = None, calc=None) -> List[dict]:
    """Run the workflow; ``calc`` overrides ``--model`` (any ASE calculator with forces, BEC, eps)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", "--out", dest="output_dir", default=None,
                    help="output directory (default runs/examples/quartz_ir_raman, numbered if taken)")
    ap.add_argument("--overwrite", action="store_true", help="overwrite this example's files in --output-dir")
    ap.add_argument("--model", default="sio2.pt", help="ETGNN model file or shipped model name")
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                    help="calculator precision (float64 recommended for finite differences)")
    ap.add_argument("--relax", action="store_true", help="relax internal coordinates first")
    ap.add_argument("--fmax", type=float, default=0.005, help="relaxation threshold (eV/A)")
    ap.add_argument("--supercell", type=int, nargs=3, default=(2, 2, 2), help="phonopy supercell")
    ap.add_argument("--displacement", type=float, default=0.01, help="phonopy displacement (A)")
    ap.add_argument("--fwhm", type=float, default=8.0, help="broadening FWHM (cm^-1)")
    args = ap.parse_args(argv)

    out = output_dir(args.output_dir, "quartz_ir_raman", OUTPUT_FILES, args.overwrite)
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
    n_imag = int(np.sum(res.modes.frequencies_cm1[res.modes.optical] < IMAGINARY_CM1))
    if n_imag:
        print(f"WARNING: {n_imag} optical modes are imaginary (negative here): structure not at a "
              "minimum of this model (try --relax) or model not accurate enough")
    directions = {"q||z": [0.0, 0.0, 1.0], "q||x": [1.0, 0.0, 0.0]}
    pairs = {name: lo_to_pairs(res, phonon, q) for name, q in directions.items()}
    lo_all = {name: frequencies_at_gamma(phonon, q).tolist() for name, q in directions.items()}
    disp = dispersion(phonon)
    warn_imaginary(disp["imaginary"])

    np.set_printoptions(precision=3, suppress=True)
    print("eps_inf =\n", res.eps_inf, "\neps_0 =\n", res.eps_0)
    print("Gamma modes, degenerate partners summed; LO paired with its TO by eigenvector overlap "
          "('-': no dipole along q, no LO)")
    print(f"{'irrep':>5} {'deg':>3} {'TO cm-1':>9} {'LO q||z':>9} {'LO q||x':>9} {'IR km/mol':>10} {'Raman A4/amu':>13}")
    table = group_table(res, pairs)
    for r in table:
        lo = ["-" if r[f"lo_{n}_cm1"] is None else f"{r[f'lo_{n}_cm1']:.1f}" for n in directions]
        print(f"{str(r['irrep'] or '-'):>5} {len(r['modes']):3d} {r['to_cm1']:9.1f} {lo[0]:>9} {lo[1]:>9} "
              f"{r['ir_intensity_km_mol']:10.2f} {r['raman_activity_A4_amu']:13.3f}")
    (out / "quartz_modes.json").write_text(json.dumps(rows, indent=1))
    summary = {"eps_inf": res.eps_inf.tolist(), "eps_0": res.eps_0.tolist(), "mode_groups": table,
               "lo_frequencies_cm1": lo_all, "imaginary_qpoints": disp["imaginary"],
               "supercell": list(args.supercell), "relaxed": args.relax,
               "cell": atoms.cell[:].tolist(), "scaled_positions": atoms.get_scaled_positions().tolist()}
    (out / "quartz_summary.json").write_text(json.dumps(summary, indent=1))
    plot_spectra(rows, out / "quartz_ir_raman.png", fwhm=args.fwhm)
    plot_dispersion(disp, out / "quartz_dispersion.png")
    print(f"wrote {', '.join(str(out / f) for f in OUTPUT_FILES)} ({time.time() - t0:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
