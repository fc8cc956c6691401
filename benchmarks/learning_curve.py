"""Learning curve (issue 15): the shipped architecture and recipe trained on N DFPT records, same test split.

    OMP_NUM_THREADS=1 nohup python benchmarks/learning_curve.py --sizes 25 50 100 all > runs/learning_curve.log &
    python benchmarks/learning_curve.py --report-only      # table, fit and plot from the finished runs

For every N: the training set is N DFPT records (energy, forces, stress, BEC, eps_inf) drawn from a pool, plus
every pw.x-only training record of ``--split`` (cheap labels, kept in every run so that only the number of DFPT
records varies); the validation and test parts of ``--split`` are used unchanged. The pool is the split's DFPT
training records in a fixed seeded order, followed by the randomly drawn DFPT records (tags ``--later-tags``)
computed after the split, in the order they were computed; the sets are nested (the 25 are among the 50) and a
size stays the same set when more records are computed. ``all`` is the whole pool at the time of the call.
Actively selected records (tag ``al-1``) are not in the pool: they are not a random draw. Each N is a run
directory ``OUT/N<N>`` trained with ``--recipe`` (stage 1's recipe from scratch by default; ``--epochs``
overrides its epoch count), so the runs resume where they stopped (rerun the same command). Finished runs are
evaluated on the test split with ``etgnn evaluate``'s metrics; the report prints MAE of BEC (e), eps_inf and
forces (eV/A) against N, fits ``MAE = a N^-b`` (log-log least squares) per property, states the N the fit needs
for BEC 5e-3 e and writes a log-log plot with the paper's SiO2 point (about 2,400 structures: BEC 4.28e-3 e,
eps_inf 1.98e-3).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ase_etgnn import load_model
from ase_etgnn.conventions import atomic_write_text
from ase_etgnn.evaluate import evaluate_model
from ase_etgnn.records import iter_records
from ase_etgnn.train import load_train_config, parse_overrides, train
from ase_etgnn.train.splits import read_split

ROOT = Path(__file__).resolve().parent.parent
PAPER = {"n": 2400, "born_effective_charges": 4.28e-3, "dielectric_tensor": 1.98e-3}  # ETGNN paper, SiO2
PROPS = ("born_effective_charges", "dielectric_tensor", "forces")


def dfpt_pool(data: str, split: Dict[str, List[int]], seed: int, later_tags: Sequence[str]) -> List[int]:
    """DFPT records in the order they enter: the split's training ones (seeded permutation), then the records
    of ``later_tags`` computed after the split (index order, so appending records never reorders the pool)."""
    dfpt, tags = [], []
    for _, targets, prov in iter_records(data, properties=("born_effective_charges",)):
        dfpt.append("born_effective_charges" in targets)
        tags.append(prov.get("tag"))
    train_dfpt = [i for i in split["train"] if dfpt[i]]
    last = max(i for part in split.values() for i in part)
    later = [i for i in range(last + 1, len(dfpt)) if dfpt[i] and tags[i] in later_tags]
    return [train_dfpt[k] for k in np.random.default_rng(seed).permutation(len(train_dfpt))] + later


def subset_split(split: Dict[str, List[int]], pool: List[int], n: int) -> Dict[str, List[int]]:
    """``split`` whose training part keeps its pw.x-only records and takes the first ``n`` DFPT records of
    ``pool`` instead of its own DFPT records."""
    in_pool = set(pool)
    pw_only = [i for i in split["train"] if i not in in_pool]
    return {"train": sorted(pw_only + pool[:n]), "val": list(split["val"]), "test": list(split["test"])}


def run_size(args, label: str, n: int, split: Dict[str, List[int]], pool: List[int]) -> Path:
    """Train (or resume) the run of one size; returns its run directory."""
    out = Path(args.out) / label
    out.mkdir(parents=True, exist_ok=True)
    split_path = out / "subset_split.json"
    sub = subset_split(split, pool, n)
    if split_path.exists() and json.loads(split_path.read_text()) != sub:
        raise SystemExit(f"{split_path} differs from the subset this command makes: another --split/--seed?")
    atomic_write_text(split_path, json.dumps(sub) + "\n")
    over = {"data": args.data, "output_dir": str(out), "split_file": str(split_path)}
    if args.epochs is not None:
        over["epochs"] = args.epochs
    over.update(parse_overrides(args.set or []))
    config = load_train_config(args.recipe, over)
    if (out / "summary.json").exists():
        return out
    train(config, resume=(out / "checkpoint.pt").exists())
    return out


def report(args, sizes: Dict[str, int]) -> int:
    rows = []
    split = read_split(args.split)
    for label, n in sizes.items():
        out = Path(args.out) / label
        if not (out / "summary.json").exists():
            print(f"{label}: not finished", file=sys.stderr)
            continue
        metrics_path = out / "test_metrics.json"
        if not metrics_path.exists():
            res = evaluate_model(load_model(out / "best.pt"), args.data, indices=split["test"])
            m = {p: res["metrics"][p]["mae"] for p in PROPS if p in res["metrics"]}
            atomic_write_text(metrics_path, json.dumps(m) + "\n")
        rows.append((n, json.loads(metrics_path.read_text())))
    if not rows:
        print("no finished run")
        return 1
    rows.sort(key=lambda r: r[0])
    print(f"{'N DFPT':>7} {'BEC (e)':>9} {'eps_inf':>9} {'F (eV/A)':>9}")
    for n, m in rows:
        print(f"{n:7d} " + " ".join(f"{m.get(p, float('nan')):9.4f}" for p in PROPS))
    fits = {}
    for p in PROPS:
        pts = [(n, m[p]) for n, m in rows if p in m and m[p] > 0]
        if len(pts) >= 2:
            b, log_a = np.polyfit(np.log([x for x, _ in pts]), np.log([y for _, y in pts]), 1)
            fits[p] = (float(np.exp(log_a)), float(-b))
            print(f"fit {p}: MAE = {fits[p][0]:.3g} N^({-fits[p][1]:+.3f})")
    if "born_effective_charges" in fits:
        a, b = fits["born_effective_charges"]
        need = (a / 5e-3) ** (1 / b) if b > 0 else float("inf")
        print(f"N for BEC 5e-3 e from the fit: {need:.0f}" if need < 1e7 else "N for BEC 5e-3 e: beyond 1e7 (flat fit)")
    if args.plot:
        plot(rows, fits, args.plot)
        print(f"wrote {args.plot}")
    return 0


def plot(rows, fits, path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.8, 3.6))
    axes = fig.subplots(1, 3)
    units = {"born_effective_charges": "e", "dielectric_tensor": "1", "forces": "eV/A"}
    for ax, p in zip(axes, PROPS):
        ns = np.array([n for n, m in rows if p in m])
        ax.loglog(ns, [m[p] for n, m in rows if p in m], "o", label="ase_etgnn test split")
        if p in fits:
            grid = np.geomspace(max(ns.min() / 2, 1), PAPER["n"] * 2, 50)
            ax.loglog(grid, fits[p][0] * grid ** -fits[p][1], "-", lw=0.8, label=f"fit N^({-fits[p][1]:+.2f})")
        if p in PAPER:
            ax.loglog([PAPER["n"]], [PAPER[p]], "r*", ms=10, label="paper (SiO2)")
        ax.set_xlabel("DFPT training records N")
        ax.set_ylabel(f"{p} MAE ({units[p]})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "models" / "sio2_train.toml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "sio2_dfpt.h5"))
    ap.add_argument("--split", default=str(ROOT / "models" / "sio2_split.json"))
    ap.add_argument("--sizes", nargs="+", default=["25", "50", "100", "all"], help="DFPT training records, or 'all'")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="more recipe overrides")
    ap.add_argument("--seed", type=int, default=0, help="order in which DFPT records enter (nested subsets)")
    ap.add_argument("--later-tags", nargs="*", default=["quartz-ph", "cristobalite-ph"],
                    help="random-draw tags whose DFPT records computed after the split join the pool")
    ap.add_argument("--out", default=str(ROOT / "runs" / "learning_curve"))
    ap.add_argument("--plot", default=None, help="PNG of the curve (report)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    split = read_split(args.split)
    pool = dfpt_pool(args.data, split, args.seed, args.later_tags)
    sizes = {}
    for s in args.sizes:
        n = len(pool) if s == "all" else int(s)
        if n > len(pool):
            print(f"size {n}: only {len(pool)} DFPT records can be drawn; skipped", file=sys.stderr)
            continue
        sizes[f"N{n}"] = n
    if not args.report_only:
        for label, n in sizes.items():
            run_size(args, label, n, split, pool)
    return report(args, sizes)


if __name__ == "__main__":
    sys.exit(main())
