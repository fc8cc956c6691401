"""GMTNet-style symmetry success rates (GMTNet Tables 2/3/5) of ETGNN predictions, with and without
``ase_etgnn.symmetry`` projection.

Predictions of a random-weight ETGNN on the ideal crystals of ``ase_etgnn.structures.ideal_crystals``
(all seven crystal systems), in four settings:

* ``ideal f64`` / ``ideal f32``: ideal crystals, model in float64 / float32, raw predictions;
* ``rattled``: positions rattled by ``--rattle`` A (a "realistic", slightly non-ideal input; symmetry
  found with the loose ``--symprec``), raw predictions;
* ``rattled+sym``: the same predictions projected with ``CrystalSymmetry.symmetrize``.

A crystal counts for the zero (equality) metric when its symmetry requires at least one zero (equal
pair); success = every required zero ``|x| < 1e-5`` (every required pair ``|x_p - x_q| < 1e-4``).

Usage::

    PYTHONPATH=. python benchmarks/symmetry_success.py [--samples 3] [--rattle 1e-3] [--symprec 1e-2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ase_etgnn import build_model
from ase_etgnn.graph import atoms_to_graph, collate_graphs
from ase_etgnn.structures import ideal_crystal_species, ideal_crystals
from ase_etgnn.symmetry import CrystalSymmetry, success_rates

HEADS = ("forces", "born_effective_charges", "dielectric_tensor", "piezoelectric_tensor")
PROPS = ("dielectric_tensor", "piezoelectric_tensor", "born_effective_charges")


def predict(model, structures, dtype):
    """List of per-structure result dicts (numpy float64) for ``structures``."""
    graphs = [atoms_to_graph(a, cutoff=model.config.cutoff, triplet_cutoff=model.config.triplet_cutoff)
              for a in structures]
    batch = collate_graphs(graphs, dtype=dtype, device="cpu")
    with torch.no_grad():
        out = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in model(batch).items()}
    offsets = np.cumsum([0] + [len(a) for a in structures])
    res = []
    for i in range(len(structures)):
        sl = slice(offsets[i], offsets[i + 1])
        res.append({"forces": out["forces"][sl], "born_effective_charges": out["born_effective_charges"][sl],
                    "dielectric_tensor": out["dielectric_tensor"][i],
                    "piezoelectric_tensor": out["piezoelectric_tensor"][i]})
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=3, help="rattled copies per crystal")
    ap.add_argument("--rattle", type=float, default=1e-3, help="rattle amplitude, A")
    ap.add_argument("--symprec", type=float, default=1e-2, help="symprec for the rattled structures, A")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-size", action="store_true", help="paper-size model instead of a small one")
    args = ap.parse_args(argv)

    hyper = {} if args.full_size else dict(cutoff=5.0, hidden=32, triplet_hidden=32, n_blocks=2, int_emb=16,
                                           out_emb=32)
    t0 = time.time()
    crystals = list(ideal_crystals().values())
    models = {dt: build_model(species=list(ideal_crystal_species()), heads=HEADS, seed=args.seed, dtype=dt, **hyper)
              for dt in (torch.float64, torch.float32)}
    for m in models.values():
        m.eval()

    ideal_syms = [CrystalSymmetry.from_atoms(a) for a in crystals]
    rattled, rattled_syms = [], []
    for k in range(args.samples):
        for a in crystals:
            b = a.copy()
            b.rattle(args.rattle, seed=args.seed + 1000 * k + len(rattled))
            s = CrystalSymmetry.from_atoms(b, symprec=args.symprec)
            if s.spacegroup_number != CrystalSymmetry.from_atoms(a).spacegroup_number:
                print(f"warning: {a.info.get('name')} rattled: spglib found #{s.spacegroup_number}")
            rattled.append(b)
            rattled_syms.append(s)

    settings = {
        "ideal f64": list(zip(ideal_syms, predict(models[torch.float64], crystals, torch.float64))),
        "ideal f32": list(zip(ideal_syms, predict(models[torch.float32], crystals, torch.float32))),
    }
    raw = predict(models[torch.float64], rattled, torch.float64)
    settings["rattled"] = list(zip(rattled_syms, raw))
    settings["rattled+sym"] = [(s, s.symmetrize(r)) for s, r in zip(rattled_syms, raw)]

    print(f"random-weight ETGNN ({'paper size' if args.full_size else 'small'}), {len(crystals)} ideal crystals, "
          f"{len(rattled)} rattled ({args.rattle:g} A, symprec {args.symprec:g} A)")
    print("success rate % (crystals counted): zero |x| < 1e-5 / equality |x_p - x_q| < 1e-4")
    for prop in PROPS:
        tables = {name: success_rates(items, prop) for name, items in settings.items()}
        systems = [k for k in tables["rattled"] if k != "all"] + ["all"]
        print(f"\n{prop}")
        header = f"{'system':<13}" + "".join(f"{name:>26}" for name in settings)
        print(header)
        print(f"{'':<13}" + "".join(f"{'zero':>14}{'equal':>12}" for _ in settings))
        for sysname in systems:
            row = f"{sysname:<13}"
            for name in settings:
                r = tables[name].get(sysname)
                if r is None:
                    row += f"{'':>26}"
                    continue
                z = "-" if r["n_zero"] == 0 else f"{100 * r['zero_rate']:.0f}% ({r['n_zero']})"
                e = "-" if r["n_equal"] == 0 else f"{100 * r['equality_rate']:.0f}% ({r['n_equal']})"
                row += f"{z:>14}{e:>12}"
            print(row)
    print(f"\n({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
