"""Write ``sio2_speed_reference.npz``: predictions of the stage-2 SiO2 model ``tests/data/sio2_stage2.pt`` (``models/sio2.pt`` until stage 3; float64) on two perturbed
quartz cells, computed with the code *before* the speed work (issue 20), so that
``tests/test_speed_paths.py`` can check that the optimised hot path gives the same numbers.

    PYTHONPATH=/path/to/baseline/checkout python tests/data/make_sio2_speed_reference.py

It was run once with the baseline checkout (commit 242e0b0) on PYTHONPATH; rerunning it with the
current code only reproduces the file to round-off.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.io import read

from ase_etgnn.graph import atoms_to_graph, collate_graphs
from ase_etgnn.model_file import load_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def cells() -> list:
    """Two perturbed, strained alpha-quartz cells (9 and 18 atoms), reproducible."""
    base = read(ROOT / "data" / "seeds" / "alpha_quartz.extxyz")
    rng = np.random.default_rng(20)
    out = []
    for rep, rms, strain in (((1, 1, 1), 0.08, 0.01), ((1, 1, 2), 0.05, -0.015)):
        a = base.repeat(rep)
        a.positions += rng.normal(scale=rms, size=a.positions.shape)
        eps = np.eye(3) + strain * rng.normal(size=(3, 3))
        a.set_cell(a.cell.array @ eps, scale_atoms=True)
        out.append(a)
    return out


def predict(model, atoms_list, dtype: torch.dtype = torch.float64) -> dict:
    """Direct heads (no grad) and conservative forces/stress, per structure, float64 numpy arrays
    (the model and the graph in ``dtype``)."""
    cfg = model.config
    res: dict = {}
    for i, a in enumerate(atoms_list):
        batch = collate_graphs([atoms_to_graph(a, cfg.cutoff, cfg.effective_triplet_cutoff)], dtype=dtype)
        with torch.no_grad():
            out = model(batch)
        cons = model(batch, forces="both", stress=True)
        for k, v in out.items():
            res[f"{k}_{i}"] = v.detach().double().numpy()
        res[f"forces_conservative_{i}"] = cons["forces_conservative"].detach().double().numpy()
        res[f"stress_{i}"] = cons["stress"].detach().double().numpy()
    return res


def main() -> None:
    model = load_model(HERE / "sio2_stage2.pt").to(torch.float64).eval()
    atoms_list = cells()
    res = predict(model, atoms_list)
    for i, a in enumerate(atoms_list):
        res[f"numbers_{i}"] = a.numbers
        res[f"positions_{i}"] = a.positions
        res[f"cell_{i}"] = a.cell.array
    np.savez(HERE / "sio2_speed_reference.npz", **res)
    print(sorted(res))


if __name__ == "__main__":
    main()
