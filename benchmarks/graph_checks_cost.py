"""Cost of the issue-17 graph checks relative to the work they guard (one thread, interleaved).

    OMP_NUM_THREADS=1 python benchmarks/graph_checks_cost.py [--repeat 7] [--sizes 9 72 576]

Per alpha-quartz cell size, measured in turn inside each repeat: ``atoms_to_graph`` (which now runs
``estimate_graph_size`` and the exact triplet count), ``estimate_graph_size`` alone, ``prune_graph`` of a
skinned graph (the calculator's per-step work), ``check_overlaps`` on the pruned graph (what the
calculator would add per MD step) and one no-grad forward pass of the shipped model. Prints min and
median (ms) and the ratios check/forward and estimate/graph.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_etgnn import load_model
from ase_etgnn.graph import atoms_to_graph, check_overlaps, collate_graphs, estimate_graph_size, prune_graph

ROOT = Path(__file__).resolve().parent.parent
REPS = {9: (1, 1, 1), 72: (2, 2, 2), 576: (4, 4, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="+", default=[9, 72, 576])
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(ROOT / "models" / "sio2.pt")
    cfg = model.config
    rc, rt = cfg.cutoff, cfg.effective_triplet_cutoff
    base = read(ROOT / "data" / "seeds" / "alpha_quartz.extxyz")
    rng = np.random.default_rng(0)
    print(f"{'atoms':>6} {'what':>10} {'min ms':>9} {'median ms':>10}")
    for n in args.sizes:
        atoms = base.repeat(REPS[n])
        skinned = atoms_to_graph(atoms, rc, rt, skin=1.0)
        pos = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
        pruned = prune_graph(skinned, pos)
        batch = collate_graphs([pruned])
        jobs = {
            "graph": lambda: atoms_to_graph(atoms, rc, rt),
            "estimate": lambda: estimate_graph_size(atoms.positions, atoms.cell.array, atoms.pbc, rc, rt),
            "prune": lambda: prune_graph(skinned, pos),
            "overlaps": lambda: check_overlaps(pruned),
            "forward": lambda: model(batch),
        }
        times = {k: [] for k in jobs}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error")  # a normal crystal must not warn
            for _ in range(args.repeat):
                for k, fn in jobs.items():  # interleaved
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
        for k, v in times.items():
            print(f"{n:>6} {k:>10} {1e3 * min(v):>9.3f} {1e3 * float(np.median(v)):>10.3f}")
        med = {k: float(np.median(v)) for k, v in times.items()}
        print(f"{n:>6} ratios: overlaps/forward {med['overlaps'] / med['forward']:.3%}, "
              f"overlaps/prune {med['overlaps'] / med['prune']:.1%}, "
              f"estimate/graph {med['estimate'] / med['graph']:.2%}")


if __name__ == "__main__":
    main()
