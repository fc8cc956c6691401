"""Accuracy of a model on held-out DFPT records through the calculator, with and without symmetrisation.

    python benchmarks/sio2_heldout.py [--model sio2.pt] [--data data/sio2_ideal_heldout.h5] [--symprec 1e-5]

For every record: the calculator's prediction (``symmetrize=False`` and ``True``) against the stored
labels. Prints per-structure MAE of forces (eV/A), Born charges (e) and eps_inf, and the metrics of
``ase_etgnn.evaluate.property_metrics`` (MAE, Fnorm, EwT) over all records, side by side.
"""
from __future__ import annotations

import argparse

import numpy as np

from ase_etgnn import ETGNNCalculator
from ase_etgnn.records import iter_records
from ase_etgnn.evaluate import property_metrics

PROPS = ("forces", "born_effective_charges", "dielectric_tensor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sio2.pt")
    ap.add_argument("--data", default="data/sio2_ideal_heldout.h5")
    ap.add_argument("--symprec", type=float, default=1e-5)
    args = ap.parse_args()
    calcs = {sym: ETGNNCalculator(args.model, dtype="float64", symmetrize=sym, symprec=args.symprec)
             for sym in (False, True)}
    preds = {sym: {p: [] for p in PROPS} for sym in calcs}
    labels = {p: [] for p in PROPS}
    print(f"{'record':<26} {'sym':>5} {'F MAE':>8} {'Z MAE':>8} {'eps MAE':>8} {'|sum Z| pred':>12} {'label':>8}")
    for atoms, targets, prov in iter_records(args.data):
        present = [p for p in PROPS if p in targets]
        for p in present:
            labels[p].append(targets[p])
        for sym, calc in calcs.items():
            a = atoms.copy()
            a.calc = calc
            row = {p: calc.get_property(p, a) for p in present}
            for p in present:
                preds[sym][p].append(row[p])
            mae = {p: np.mean(np.abs(row[p] - targets[p])) for p in present}
            asr = np.abs(row["born_effective_charges"].sum(0)).max() if "born_effective_charges" in row else np.nan
            asr_l = (np.abs(targets["born_effective_charges"].sum(0)).max()
                     if "born_effective_charges" in targets else np.nan)
            print(f"{prov.get('key', '?'):<26} {str(sym):>5} {mae.get('forces', np.nan):>8.4f} "
                  f"{mae.get('born_effective_charges', np.nan):>8.4f} {mae.get('dielectric_tensor', np.nan):>8.4f} "
                  f"{asr:>12.4f} {asr_l:>8.4f}")
    for p in PROPS:
        if labels[p]:
            d = max(np.abs(a - b).max() for a, b in zip(preds[False][p], preds[True][p]))
            print(f"max |symmetrized - raw| {p}: {d:.2e}")
    print("\nall records:")
    for p in PROPS:
        if not labels[p]:
            continue
        stack = np.concatenate if p in ("forces", "born_effective_charges") else np.stack
        for sym in calcs:
            m = property_metrics(p, stack(preds[sym][p]), stack(labels[p]))
            print(f"  {p:<24} symmetrize={str(sym):<5} MAE {m['mae']:.4f}  Fnorm {m['fnorm']:.4f}  "
                  f"EwT25 {m['ewt_25']:.2f} EwT10 {m['ewt_10']:.2f} EwT5 {m['ewt_5']:.2f}")


if __name__ == "__main__":
    main()
