"""Compare the alpha-quartz Gamma modes of examples/quartz_ir_raman.py with experiment.

    python examples/quartz_ir_raman.py --out out/ --relax
    python benchmarks/quartz_modes_vs_literature.py out/quartz_modes.json [--dfpt data/quartz_gamma_dfpt.json]

With ``--dfpt`` a column of Gamma TO frequencies computed by ph.x under the project's protocol at the
experimental (unrelaxed) geometry is added; compare it with a run of the example *without* ``--relax``
(same geometry), so that the difference is the model's error alone. DFPT modes carry no irrep labels: the
24 optical modes of both lists are paired in order of frequency.

Modes are matched within each irreducible representation in order of frequency. Experimental
room-temperature TO frequencies (cm^-1): A1 and E from the Raman study of J. F. Scott and S. P. S. Porto,
Phys. Rev. 161, 903 (1967); A2 (IR only) from F. Gervais and B. Piriou, Phys. Rev. B 11, 3944 (1975).
The values are quoted as commonly tabulated from those papers; check them before publication.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

EXPERIMENT = {
    "A1": [207, 356, 464, 1085],
    "A2": [364, 495, 777, 1071],
    "E": [128, 265, 394, 450, 697, 796, 1072, 1162],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modes", help="quartz_modes.json written by examples/quartz_ir_raman.py")
    ap.add_argument("--dfpt", help="JSON with 'frequencies_cm1' of the 27 Gamma modes from ph.x + dynmat.x")
    args = ap.parse_args()
    rows = [r for r in json.load(open(args.modes)) if not r.get("acoustic")]
    if args.dfpt:
        ref = sorted(json.load(open(args.dfpt))["frequencies_cm1"])[3:]  # drop the 3 acoustic modes
        if len(ref) != len(rows):
            raise SystemExit(f"{args.dfpt}: {len(ref)} optical DFPT modes, {len(rows)} predicted")
        for r, f in zip(sorted(rows, key=lambda r: r["frequency_cm1"]), ref):
            r["dfpt_cm1"] = f
    by_irrep = defaultdict(list)
    for r in rows:
        by_irrep[r.get("irrep")].append(r)
    print(f"{'irrep':<5} {'ETGNN cm-1':>10} {'expt cm-1':>9} {'diff':>7} {'IR km/mol':>10} {'Raman A4/amu':>12}"
          + (f" {'DFPT cm-1':>9} {'ETGNN-DFPT':>10}" if args.dfpt else ""))
    worst, vs_dfpt = [], []
    for irrep, expt in EXPERIMENT.items():
        modes = sorted(by_irrep.get(irrep, []), key=lambda r: r["frequency_cm1"])
        if irrep == "E":
            modes = modes[::2]  # doubly degenerate: one row per pair
        if len(modes) != len(expt):
            print(f"{irrep}: {len(modes)} modes predicted, {len(expt)} expected; labels: {sorted(by_irrep)}")
            continue
        for r, e in zip(modes, expt):
            d = r["frequency_cm1"] - e
            worst.append((abs(d), irrep, e, r["frequency_cm1"]))
            line = (f"{irrep:<5} {r['frequency_cm1']:>10.1f} {e:>9d} {d:>+7.1f} {r['ir_intensity_km_mol']:>10.1f} "
                    f"{r['raman_activity_A4_amu']:>12.3f}")
            if args.dfpt:
                f = r["dfpt_cm1"]
                vs_dfpt.append((abs(r["frequency_cm1"] - f), irrep, f, r["frequency_cm1"], e))
                line += f" {f:>9.1f} {r['frequency_cm1'] - f:>+10.1f}"
            print(line)
    if worst:
        mae = sum(w[0] for w in worst) / len(worst)
        print(f"mean |diff| {mae:.1f} cm-1 over {len(worst)} modes; largest deviations:")
        for d, irrep, e, f in sorted(worst, reverse=True)[:3]:
            print(f"  {irrep} {e} cm-1: predicted {f:.1f} ({f - e:+.1f})")
    if vs_dfpt:
        mae = sum(w[0] for w in vs_dfpt) / len(vs_dfpt)
        dft_expt = sum(abs(w[2] - w[4]) for w in vs_dfpt) / len(vs_dfpt)
        print(f"ETGNN vs DFPT: mean |diff| {mae:.1f} cm-1 over {len(vs_dfpt)} modes; DFPT vs expt {dft_expt:.1f} cm-1"
              " (DFPT paired by frequency order);"
              " largest ETGNN-DFPT deviations:")
        for d, irrep, f, g, e in sorted(vs_dfpt, reverse=True)[:3]:
            print(f"  {irrep} (expt {e}): DFPT {f:.1f}, ETGNN {g:.1f} ({g - f:+.1f})")


if __name__ == "__main__":
    main()
