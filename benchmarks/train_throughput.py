"""Training throughput (structures/s, forward + backward + AdamW step) of ETGNN on 9-atom quartz cells.

    python benchmarks/train_throughput.py [--hidden 128 64] [--batch 40] [--threads 1 2]

Labels come from a random teacher model (only the cost matters here); every configuration runs the same
batches side by side, so the printed ratios compare like with like.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_etgnn import build_model
from ase_etgnn.graph import atoms_to_graph, collate_graphs

ROOT = Path(__file__).resolve().parent.parent
HEADS = ("energy", "forces", "born_effective_charges", "dielectric_tensor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    base = read(ROOT / "tests" / "data" / "qe_sio2_example" / "scf.in", format="espresso-in")
    rng = np.random.default_rng(0)
    structs = []
    for _ in range(args.batch):
        a = base.copy()
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        structs.append(a)
    print(f"{'hidden':>6} {'blocks':>6} {'params':>10} {'threads':>7} {'struct/s':>9}")
    results = {}
    for hidden in args.hidden:
        blocks = 4 if hidden == 128 else 3
        model = build_model(["Si", "O"], heads=HEADS, hidden=hidden, triplet_hidden=hidden, n_blocks=blocks)
        cfg = model.config
        batch = collate_graphs([atoms_to_graph(a, cfg.cutoff, cfg.effective_triplet_cutoff) for a in structs])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        n_par = sum(p.numel() for p in model.parameters())
        for threads in args.threads:
            old = torch.get_num_threads()
            torch.set_num_threads(threads)

            def step():
                out = model(batch)
                loss = sum(v.square().mean() for v in out.values())
                opt.zero_grad()
                loss.backward()
                opt.step()

            step()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            rate = args.steps * args.batch / (time.perf_counter() - t)
            torch.set_num_threads(old)
            results[(hidden, threads)] = rate
            print(f"{hidden:>6} {blocks:>6} {n_par:>10,} {threads:>7} {rate:>9.1f}")


if __name__ == "__main__":
    main()
