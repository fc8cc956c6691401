"""The Gamma-point IR/Raman example for one crystal (shared by quartz_ir_raman.py and sapphire_ir_raman.py;
not part of the package): command line, phonopy force constants, Born charges and eps_inf for the NAC, the
mode table with LO partners, optionally measured frequencies by irrep, a dispersion check, JSON and figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

from ase_etgnn.spectra import (
    band_path,
    frequencies_at_gamma,
    gamma_spectroscopy,
    imaginary_warnings,
    lo_to_pairs,
    make_phonopy,
    match_experiment,
    mode_group_table,
    plot_dispersion,
    plot_gamma_spectra,
    relax_positions,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import output_dir  # noqa: E402  (examples/_output.py)

IMAGINARY_CM1 = -5.0
#: LO directions (Cartesian; the crystals here have their 3-fold axis along z)
DIRECTIONS = {"q||z": (0.0, 0.0, 1.0), "q||x": (1.0, 0.0, 0.0)}


@dataclass(frozen=True)
class Crystal:
    """What one example fixes: the structure, its files, a q-path and what to tell the user.

    Attributes:
        name: file prefix (``<name>_modes.json``, ...) and output directory ``runs/examples/<name>_ir_raman``.
        title: figure titles.
        structure: builds the (primitive) cell.
        model: default ``--model``.
        path: ``[(label, reduced q), ...]`` for :func:`~ase_etgnn.spectra.band_path`.
        imaginary_hint: printed after the imaginary-frequency warnings.
        experiment: measured TO frequencies by irrep (cm^-1; one per degenerate group) or None.
        experiment_source: reference of ``experiment``.
        dft: loads TO frequencies of the reference DFT at the unrelaxed structure by irrep (cm^-1, ascending;
            None when its file is missing), printed next to experiment.
        dft_source: where ``dft`` comes from.
    """

    name: str
    title: str
    structure: Callable[[], Atoms]
    model: str
    path: Tuple[Tuple[str, Tuple[float, float, float]], ...]
    imaginary_hint: str
    experiment: Optional[Mapping[str, Sequence[float]]] = None
    experiment_source: str = ""
    dft: Optional[Callable[[], Optional[Mapping[str, Sequence[float]]]]] = None
    dft_source: str = ""

    @property
    def files(self) -> Tuple[str, ...]:
        n = self.name
        return (f"{n}_modes.json", f"{n}_summary.json", f"{n}_ir_raman.png", f"{n}_dispersion.png")


def parse_args(crystal: Crystal, doc: str, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", "--out", dest="output_dir", default=None,
                    help=f"output directory (default runs/examples/{crystal.name}_ir_raman, numbered if taken)")
    ap.add_argument("--overwrite", action="store_true", help="overwrite this example's files in --output-dir")
    ap.add_argument("--model", default=crystal.model, help="ETGNN model file or shipped model name")
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                    help="calculator precision (float64 recommended for finite differences)")
    ap.add_argument("--relax", action="store_true", help="relax internal coordinates first")
    ap.add_argument("--fmax", type=float, default=0.005, help="relaxation threshold (eV/A)")
    ap.add_argument("--supercell", type=int, nargs=3, default=(2, 2, 2), help="phonopy supercell")
    ap.add_argument("--displacement", type=float, default=0.01, help="phonopy displacement (A)")
    ap.add_argument("--fwhm", type=float, default=8.0, help="broadening FWHM (cm^-1)")
    return ap.parse_args(argv)


def print_groups(table: List[dict]) -> None:
    print("Gamma modes, degenerate partners summed; LO paired with its TO in order, TO_i <= LO_i <= TO_(i+1) "
          "('-': no dipole along q, no LO)")
    print(f"{'irrep':>5} {'deg':>3} {'TO cm-1':>9} {'LO q||z':>9} {'LO q||x':>9} {'IR km/mol':>10} {'Raman A4/amu':>13}")
    for r in table:
        lo = ["-" if r[f"lo_{n}_cm1"] is None else f"{r[f'lo_{n}_cm1']:.1f}" for n in DIRECTIONS]
        print(f"{str(r['irrep'] or '-'):>5} {len(r['modes']):3d} {r['to_cm1']:9.1f} {lo[0]:>9} {lo[1]:>9} "
              f"{r['ir_intensity_km_mol']:10.2f} {r['raman_activity_A4_amu']:13.3f}")


def add_dft(matched: List[dict], dft: Mapping[str, Sequence[float]]) -> None:
    """Give each row of ``matched`` the DFT frequency of its irrep and rank (``dft_cm1``, ``minus_dft_cm1``)."""
    rank: Dict[str, int] = {}
    for m in matched:
        k = rank[m["irrep"]] = rank.get(m["irrep"], -1) + 1
        ref = sorted(dft.get(m["irrep"], ()))
        if k < len(ref):
            m["dft_cm1"] = float(ref[k])
            m["minus_dft_cm1"] = m["computed_cm1"] - float(ref[k])


def print_experiment(matched: List[dict], source: str, dft_source: str = "") -> None:
    print(f"against experiment ({source}), matched by irrep in order of frequency"
          + (f"; DFT: {dft_source}" if dft_source else "") + ":")
    print(f"{'irrep':>5} {'expt cm-1':>9} {'ETGNN':>9} {'diff':>7} {'DFT':>7} {'ETGNN-DFT':>9} {'IR km/mol':>10} "
          f"{'Raman A4/amu':>13}")
    for m in matched:
        dft = [f"{m['dft_cm1']:7.1f}", f"{m['minus_dft_cm1']:+9.1f}"] if "dft_cm1" in m else ["-".rjust(7), "-".rjust(9)]
        print(f"{m['irrep']:>5} {m['experiment_cm1']:9.0f} {m['computed_cm1']:9.1f} {m['difference_cm1']:+7.1f} "
              f"{dft[0]} {dft[1]} {m['ir_intensity_km_mol']:10.2f} {m['raman_activity_A4_amu']:13.3f}")
    diffs = np.abs([m["difference_cm1"] for m in matched])
    print(f"mean |diff| {diffs.mean():.1f} cm-1, max {diffs.max():.1f} cm-1 over {len(matched)} mode groups")
    to_dft = np.abs([m["minus_dft_cm1"] for m in matched if "minus_dft_cm1" in m])
    if len(to_dft):
        to_expt = np.abs([m["dft_cm1"] - m["experiment_cm1"] for m in matched if "dft_cm1" in m])
        print(f"ETGNN - DFT: mean |diff| {to_dft.mean():.1f} cm-1, max {to_dft.max():.1f} over {len(to_dft)} mode "
              f"groups; DFT - experiment: mean |diff| {to_expt.mean():.1f} cm-1")


def run(crystal: Crystal, doc: str, argv: Optional[Sequence[str]] = None, calc=None,
        extra_summary: Optional[Callable[[Atoms, object], Dict[str, object]]] = None) -> List[dict]:
    """Run the example; ``calc`` overrides ``--model`` (any ASE calculator with forces, BEC, eps);
    ``extra_summary(atoms, calc)`` adds entries (printed and written) about the unrelaxed structure."""
    args = parse_args(crystal, doc, argv)
    if calc is None:  # before any directory is made: a missing model is the first error
        from ase_etgnn import ETGNNCalculator

        calc = ETGNNCalculator(args.model, dtype=args.dtype)
    out = output_dir(args.output_dir, f"{crystal.name}_ir_raman", crystal.files, args.overwrite)
    t0 = time.time()
    atoms = crystal.structure()
    extra = extra_summary(atoms, calc) if extra_summary is not None else {}
    if args.relax:
        atoms = relax_positions(atoms, calc, fmax=args.fmax)
    phonon = make_phonopy(atoms, calc, supercell_matrix=args.supercell, displacement=args.displacement, nac=True)
    print(f"force constants from {len(phonon.supercells_with_displacements)} displaced "
          f"{len(phonon.supercell)}-atom supercells ({time.time() - t0:.0f} s)")
    res = gamma_spectroscopy(phonon, calc)
    rows = res.table()
    n_imag = int(np.sum(res.modes.frequencies_cm1[res.modes.optical] < IMAGINARY_CM1))
    if n_imag:
        print(f"WARNING: {n_imag} optical modes are imaginary (negative here): structure not at a "
              "minimum of this model (try --relax) or model not accurate enough")
    pairs = {name: lo_to_pairs(res, phonon, q) for name, q in DIRECTIONS.items()}
    lo_all = {name: frequencies_at_gamma(phonon, q).tolist() for name, q in DIRECTIONS.items()}
    disp = band_path(phonon, crystal.path, threshold_cm1=IMAGINARY_CM1)
    warnings = imaginary_warnings(disp["imaginary"], IMAGINARY_CM1)
    if warnings:
        print("\n".join(warnings + ["         " + crystal.imaginary_hint]))

    np.set_printoptions(precision=3, suppress=True)
    print("eps_inf =\n", res.eps_inf, "\neps_0 =\n", res.eps_0)
    for key, value in extra.items():
        print(f"{key}: {value}")
    table = mode_group_table(res, pairs)
    print_groups(table)
    summary = {"eps_inf": res.eps_inf.tolist(), "eps_0": res.eps_0.tolist(), "mode_groups": table,
               "lo_frequencies_cm1": lo_all, "imaginary_qpoints": disp["imaginary"],
               "supercell": list(args.supercell), "relaxed": args.relax,
               "cell": atoms.cell[:].tolist(), "scaled_positions": atoms.get_scaled_positions().tolist(), **extra}
    if crystal.experiment is not None:
        summary["experiment"] = match_experiment(table, crystal.experiment)
        dft = crystal.dft() if crystal.dft is not None else None
        if dft is not None:
            add_dft(summary["experiment"], dft)
            summary["dft_source"] = crystal.dft_source + (" (at the unrelaxed structure)" if args.relax else "")
        print_experiment(summary["experiment"], crystal.experiment_source, summary.get("dft_source", ""))
    modes_file, summary_file, spectra_png, dispersion_png = (out / f for f in crystal.files)
    modes_file.write_text(json.dumps(rows, indent=1))
    summary_file.write_text(json.dumps(summary, indent=1))
    plot_gamma_spectra(rows, spectra_png, f"{crystal.title}, Gamma point (ETGNN)", fwhm=args.fwhm)
    plot_dispersion(disp, dispersion_png, f"{crystal.title} phonon dispersion (ETGNN, with NAC)")
    print(f"wrote {', '.join(str(out / f) for f in crystal.files)} ({time.time() - t0:.0f} s)")
    return rows
