"""Two or more models side by side on the same records, per split subset and provenance tag.

    python benchmarks/compare_models.py OLD.pt NEW.pt [--data data/sio2_dfpt.h5]
        [--split models/sio2_split.json] [--subsets test] [--by tag] [--indices 321-344]

Prints, for every (subset, tag) group and every model: MAE of Born charges (e), eps_inf, forces (eV/A),
energy (meV/atom) and force EwT 25 %, then the ratio of each later model's value to the first model's
(MAE ratio < 1, EwT ratio > 1: the later model is better). ``--indices A-B`` adds a group of explicit records (e.g. records that
were computed after both models were trained).
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, List

import numpy as np

from ase_etgnn import load_model
from ase_etgnn.records import iter_records
from ase_etgnn.evaluate import predict_dataset, property_metrics

COLUMNS = (("born_effective_charges", "mae", 1.0, "BEC e"), ("dielectric_tensor", "mae", 1.0, "eps"),
           ("forces", "mae", 1.0, "F eV/A"), ("energy", "mae_per_atom", 1000.0, "E meV/at"),
           ("forces", "ewt_25", 100.0, "F EwT25%"))


def _groups(args, n: int, tags: List[str]) -> Dict[str, List[int]]:
    groups: Dict[str, List[int]] = {}
    sets: Dict[str, List[int]] = {}
    if args.split:
        with open(args.split) as fh:
            split = json.load(fh)
        for name in args.subsets:
            sets[name] = [i for i in split[name] if i < n]
    for spec in args.indices or []:
        a, _, b = spec.partition("-")
        sets[f"records {spec}"] = [i for i in range(int(a), int(b or a) + 1) if i < n]
    if not sets:
        sets["all"] = list(range(n))
    for name, idx in sets.items():
        groups[f"{name} (all)"] = idx
        if args.by:
            for t in sorted({tags[i] for i in idx}):
                groups[f"{name} {t}"] = [i for i in idx if tags[i] == t]
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model files; ratios are relative to the first")
    ap.add_argument("--data", default="data/sio2_dfpt.h5")
    ap.add_argument("--split", help="split JSON (train/val/test record indices)")
    ap.add_argument("--subsets", nargs="+", default=["test"])
    ap.add_argument("--indices", nargs="+", metavar="A-B", help="extra groups of record indices (inclusive)")
    ap.add_argument("--by", default="tag", help="provenance field to group by ('' = no grouping)")
    args = ap.parse_args()
    tags = [str(p.get(args.by, "-")) if args.by else "-" for _, _, p in iter_records(args.data, properties=())]
    groups = {name: idx for name, idx in _groups(args, len(tags), tags).items() if idx}
    union = sorted({i for idx in groups.values() for i in idx})
    pos = {i: k for k, i in enumerate(union)}  # record index -> position in the prediction arrays
    preds = [predict_dataset(load_model(m), args.data, indices=union) for m in args.models]  # one pass per model
    head = " ".join(f"{c[3]:>9}" for c in COLUMNS)
    print(f"{'group':<30} {'n':>4} {'model':<28} {head}")
    for gname, idx in groups.items():
        rows = []
        mine = np.isin(np.arange(len(union)), [pos[i] for i in idx])  # [n_structures] bool
        for path, res in zip(args.models, preds):
            m = {}
            for name, arr in res["properties"].items():
                sel = mine[arr["structure"].astype(int)]  # tensors of this group's structures
                n_at = res["n_atoms"][arr["structure"].astype(int)][sel] if name == "energy" else None
                if sel.any():
                    m[name] = property_metrics(name, arr["pred"][sel], arr["target"][sel], n_atoms=n_at)
            vals = [m.get(p, {}).get(k, np.nan) * s for p, k, s, _ in COLUMNS]
            rows.append(vals)
            print(f"{gname:<30} {len(idx):>4} {path[-28:]:<28} " + " ".join(f"{v:>9.4f}" for v in vals))
        for path, vals in zip(args.models[1:], rows[1:]):
            ratio = [v / r if r and np.isfinite(r) else np.nan for v, r in zip(vals, rows[0])]
            print(f"{'':<30} {'':>4} {'ratio to first':<28} " + " ".join(f"{v:>9.2f}" for v in ratio))


if __name__ == "__main__":
    main()
