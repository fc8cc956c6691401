"""The shipped SiO2 model on alpha-quartz: forces, Born charges, eps_inf, and a short MD run.

    python examples/quartz_calculator.py [--model sio2.pt] [--steps 50]

Reads the ideal alpha-quartz cell (data/seeds/alpha_quartz.extxyz, experimental structure), prints the
predicted forces (small: the ideal cell is near equilibrium), Born charges and eps_inf on it, then runs
300 K Langevin MD on the 72-atom 2x2x2 cell while evaluating eps_inf every 5 steps (same forward pass as the
forces). Prints only; writes no files.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read
from ase.md.langevin import Langevin

from ase_etgnn import ETGNNCalculator
from ase_etgnn.dynamics import thermalize

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sio2.pt", help="model file or name of a shipped model")
    ap.add_argument("--steps", type=int, default=50, help="MD steps (1 fs) on the 72-atom cell")
    args = ap.parse_args()

    atoms = read(ROOT / "data" / "seeds" / "alpha_quartz.extxyz")
    atoms.calc = ETGNNCalculator(args.model)
    print(f"model {args.model}: heads {atoms.calc.model.heads}, species {atoms.calc.model.species}")
    np.set_printoptions(precision=3, suppress=True)
    print("ideal alpha-quartz (9 atoms)")
    print("  max |F| (eV/A):", np.abs(atoms.get_forces()).max())
    z = atoms.calc.get_property("born_effective_charges", atoms)
    print("  Z*(Si1) (e):\n", z[0])
    print("  Z*(O1) (e):\n", z[3])
    print("  acoustic sum rule, max |sum_a Z*_a| (e):", np.abs(z.sum(0)).max())
    print("  eps_inf:\n", atoms.calc.get_property("dielectric_tensor", atoms))

    big = atoms.repeat((2, 2, 2))
    big.calc = atoms.calc
    thermalize(big, 300, np.random.default_rng(0))
    dyn = Langevin(big, 1.0 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False,
                   rng=np.random.default_rng(1))
    eps_trace = []
    dyn.attach(lambda: eps_trace.append(np.trace(big.calc.get_property("dielectric_tensor", big)) / 3), interval=5)
    t0 = time.perf_counter()
    dyn.run(args.steps)
    dt = time.perf_counter() - t0
    print(f"Langevin MD, 72 atoms, {args.steps} steps at 300 K: {dt / max(args.steps, 1) * 1e3:.1f} ms/step, "
          f"T = {big.get_temperature():.0f} K, <eps_inf> = {np.mean(eps_trace):.3f} +- {np.std(eps_trace):.3f}")


if __name__ == "__main__":
    main()
