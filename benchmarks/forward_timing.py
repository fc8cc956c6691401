"""Time one forward pass of all heads of the default model, and the calculator's overhead over it.

    python benchmarks/forward_timing.py [--repeat 3] [--sizes 9 72 1620] [--structure quartz]
    python benchmarks/forward_timing.py --structure cristobalite --sizes 12 96 1536

Prints, per cell size: graph build time, bare model forward time (all heads), calculator time for
get_forces + BEC + dielectric on fresh positions, and the calculator/bare ratio, measured side by side.
alpha-quartz has 9 atoms per cell, so its sizes are 9 * n1 * n2 * n3 (1,536 is not possible; 1,620 =
6x6x5 is the nearest large cell); alpha-cristobalite (12 atoms) gives 1,536 = 4x4x8 cells.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_etgnn import ETGNNCalculator, build_model
from ase_etgnn.graph import atoms_to_graph, collate_graphs

ROOT = Path(__file__).resolve().parent.parent
REPS = {"quartz": {9: (1, 1, 1), 72: (2, 2, 2), 1152: (8, 8, 2), 1620: (6, 6, 5)},
        "cristobalite": {12: (1, 1, 1), 96: (2, 2, 2), 1536: (4, 4, 8)}}


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[9, 72, 1620])
    ap.add_argument("--triplet-cutoff", type=float, default=4.0)
    ap.add_argument("--structure", choices=sorted(REPS), default="quartz")
    args = ap.parse_args()
    heads = ("energy", "forces", "born_effective_charges", "dielectric_tensor", "piezoelectric_tensor")
    model = build_model(["Si", "O"], heads=heads, triplet_cutoff=args.triplet_cutoff).eval()
    n_par = sum(p.numel() for p in model.parameters())
    print(f"default model, heads {heads}: {n_par:,} parameters; torch threads {torch.get_num_threads()}")
    if args.structure == "quartz":  # the perturbed cell of the QE example: no symmetry
        base = read(ROOT / "tests" / "data" / "qe_sio2_example" / "scf.in", format="espresso-in")
    else:
        base = read(ROOT / "data" / "seeds" / "alpha_cristobalite.extxyz")
        base.rattle(0.02, seed=0)
    calc = ETGNNCalculator(model, device="cpu")
    print(f"{'atoms':>6} {'edges':>8} {'triplets':>9} {'graph s':>8} {'model s':>8} {'calc s':>8} {'calc/model':>10}")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        atoms = base.repeat(REPS[args.structure][n])
        cfg = model.config
        t_graph = best_of(lambda: atoms_to_graph(atoms, cfg.cutoff, cfg.effective_triplet_cutoff), args.repeat)
        g = atoms_to_graph(atoms, cfg.cutoff, cfg.effective_triplet_cutoff)
        batch = collate_graphs([g])

        def bare():
            with torch.no_grad():
                model(batch)

        bare()
        t_model = best_of(bare, args.repeat)

        def through_calc():
            a = atoms.copy()
            a.positions += rng.normal(scale=1e-3, size=a.positions.shape)
            a.calc = calc
            a.get_forces()
            calc.get_property("born_effective_charges", a)
            calc.get_property("dielectric_tensor", a)

        through_calc()
        t_calc = best_of(through_calc, args.repeat)
        print(f"{n:>6} {g.n_edges:>8} {g.n_triplets:>9} {t_graph:>8.3f} {t_model:>8.3f} {t_calc:>8.3f} "
              f"{t_calc / t_model:>10.2f}")


if __name__ == "__main__":
    main()
