"""MD modes of the shipped model side by side: cost per step, peak memory per atom, NVE energy drift, MACE.

    OMP_NUM_THREADS=1 python benchmarks/md_dynamics.py [--model sio2.pt] [--crystal quartz] [--sizes 72 576]
        [--repeats 7] [--drift-ps 2.0] [--n-inner 4] [--mace] [--skip-timing] [--skip-memory] [--skip-drift]
        [--drift-modes direct conservative mts]

Modes (one ETGNNCalculator each, same model, float32, one thread, ``symmetrize=False`` as for MD snapshots):
  all-heads     forces, energy, BEC and eps_inf at every step (what every step paid before tensors on demand)
  forces-only   ``get_forces()`` (trunk + forces and energy heads)
  conservative  ``forces="conservative"``: -dE/dr by autograd (energy head only)
  mts           ``MultipleTimeStepVerlet``: direct inner steps, one autograd correction every ``n_inner`` steps
  mace          MACE (``mace-torch``, random weights, ~comparable parameter count), same cell and threads

1. Time per step: interleaved (each repeat times every mode once, on a new geometry), min and median, ratios to
   all-heads. 2. Peak memory: one fresh process per (mode, size) doing 2 steps; peak RSS (MB) at each of
   ``--memory-sizes`` and MB/atom as the slope between the smallest and largest size (fixed costs such as torch
   itself cancel). 3. NVE drift: 72-atom quartz (``--crystal corundum``: 80-atom corundum, for ``al2o3.pt``) from
   300 K (Maxwell-Boltzmann, seed 0), 0.5 fs velocity Verlet (MTS: inner 0.5 fs), ``--drift-ps`` ps each, linear
   fit of E_pot + E_kin per atom (meV/atom/ps), plus the largest |total momentum| component. ``--sizes`` and
   ``--memory-sizes`` are atom counts of supercells of the crystal's seed cell.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]
SEEDS = {"quartz": ROOT / "data" / "seeds" / "alpha_quartz.extxyz",  # 9-atom hexagonal cell
         "corundum": ROOT / "data" / "seeds" / "corundum.extxyz"}   # 10-atom rhombohedral cell
DRIFT_ATOMS = {"quartz": 72, "corundum": 80}
TENSORS = ("born_effective_charges", "dielectric_tensor")


def supercell(crystal: str, n_atoms: int):
    """The a x a x c supercell of ``crystal``'s seed cell with ``n_atoms = n_cell * a * a * c`` atoms, smallest a first
    (c <= 11: 72-atom quartz and 80-atom corundum are 1 x 1 x 8, 576-atom quartz 4 x 4 x 4)."""
    cell = read(SEEDS[crystal])
    for a in range(1, 12):
        for c in range(1, 12):
            if len(cell) * a * a * c == n_atoms:
                return cell.repeat((a, a, c))
    raise ValueError(f"no a x a x c {crystal} supercell has {n_atoms} atoms ({len(cell)}-atom cell)")


def make_mode(mode: str, model: str, atoms, n_inner: int):
    """A callable doing one MD-step's worth of model work for ``mode`` on ``atoms`` (positions set by caller)."""
    from ase_etgnn import ETGNNCalculator

    if mode == "mace":
        calc = mace_calculator(atoms)

        def step():
            return calc.get_forces(atoms)
        return step
    forces = "conservative" if mode == "conservative" else "direct"
    calc = ETGNNCalculator(model, forces=forces, symmetrize=False, num_threads=torch.get_num_threads())
    if mode == "all-heads":
        def step():
            calc.get_forces(atoms)
            for p in TENSORS:
                calc.get_property(p, atoms)
    elif mode == "mts":
        k = [0]

        def step():  # the amortised MTS step: every n_inner-th step also pays the autograd correction
            calc.get_forces(atoms)
            k[0] += 1
            if k[0] % n_inner == 0:
                calc.get_property("forces_conservative", atoms)
    else:
        def step():
            calc.get_forces(atoms)
    return step


def mace_calculator(atoms):
    """MACE with random weights (about 0.3-0.5 M parameters, like the shipped ETGNN), float32, CPU."""
    from mace import modules  # before e3nn: mace allows e3nn's own constants file to load under torch >= 2.6
    from mace.calculators import MACECalculator
    from e3nn import o3

    z = sorted(set(atoms.numbers))
    torch.manual_seed(0)  # mace draws its init from the global RNG; only in this benchmark process
    model = modules.MACE(
        r_max=6.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=len(z), hidden_irreps=o3.Irreps("64x0e + 64x1o"),
        MLP_irreps=o3.Irreps("16x0e"), gate=torch.nn.functional.silu, atomic_energies=np.zeros(len(z)),
        avg_num_neighbors=60.0, atomic_numbers=z, correlation=3,
    ).float()
    calc = MACECalculator(models=model, device="cpu", default_dtype="float32")
    calc.n_params = sum(p.numel() for p in model.parameters())
    return calc


def time_steps(modes, model, crystal, n_atoms, repeats, n_inner, rng):
    base = supercell(crystal, n_atoms)
    atoms = {m: base.copy() for m in modes}
    steps = {m: make_mode(m, model, atoms[m], n_inner) for m in modes}
    times = {m: [] for m in modes}
    for r in range(repeats + 1):
        disp = rng.normal(scale=0.02, size=base.positions.shape)
        for m in modes:
            atoms[m].positions = base.positions + disp  # a new geometry: nothing cached
            n = n_inner if m == "mts" else 1
            t = time.perf_counter()
            for _ in range(n):
                atoms[m].positions[0, 0] += 1e-4
                steps[m]()
            if r:  # the first round warms up
                times[m].append((time.perf_counter() - t) / n * 1e3)
    return times


def peak_rss_mb(mode, model, crystal, n_atoms, n_inner) -> float:
    """Peak resident memory (MB) of a fresh process that loads the model and does 2 steps of ``mode``.

    VmHWM of the child's own address space (``ru_maxrss`` would include the forking parent's RSS)."""
    code = (
        "import sys, torch; sys.path.insert(0, %r); torch.set_num_threads(1)\n"
        "from md_dynamics import supercell, make_mode\n"
        "a = supercell(%r, %d); step = make_mode(%r, %r, a, %d)\n"
        "for i in range(%d):\n    a.positions[0, 0] += 0.01; step()\n"
        "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024)\n"
    ) % (str(Path(__file__).parent), crystal, n_atoms, mode, model, n_inner, max(2, n_inner))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode:
        print(f"  ({mode}, {n_atoms} atoms: {out.stderr.strip().splitlines()[-1] if out.stderr else 'failed'})")
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


def nve_drift(mode, model, crystal, ps, n_inner, timestep_fs=0.5):
    from ase.md.velocitydistribution import Stationary
    from ase.md.verlet import VelocityVerlet

    from ase_etgnn import ETGNNCalculator
    from ase_etgnn.dynamics import MultipleTimeStepVerlet, thermalize

    atoms = supercell(crystal, DRIFT_ATOMS[crystal])
    thermalize(atoms, 300, np.random.default_rng(0))
    Stationary(atoms)
    forces = "conservative" if mode == "conservative" else "direct"
    atoms.calc = ETGNNCalculator(model, forces=forces, symmetrize=False, num_threads=torch.get_num_threads())
    dt = timestep_fs * units.fs
    dyn = MultipleTimeStepVerlet(atoms, dt, n_inner=n_inner) if mode == "mts" else VelocityVerlet(atoms, dt)
    e, p_max = [], [0.0]

    def log():
        e.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        p_max[0] = max(p_max[0], float(np.abs(atoms.get_momenta().sum(0)).max()))

    dyn.attach(log, interval=1)
    steps = int(round(ps * 1000 / timestep_fs))
    t0 = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - t0
    e = np.array(e) / len(atoms) * 1e3  # meV/atom
    t_ps = np.arange(len(e)) * timestep_fs / 1000
    slope = np.polyfit(t_ps, e, 1)[0]
    return {"drift_meV_per_atom_ps": float(slope), "max_abs_dE_meV_per_atom": float(np.abs(e - e[0]).max()),
            "max_total_momentum": p_max[0], "steps": steps, "ms_per_step": wall / steps * 1e3}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sio2.pt")
    ap.add_argument("--crystal", choices=sorted(SEEDS), default="quartz")
    ap.add_argument("--sizes", type=int, nargs="+", default=[72, 576])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n-inner", type=int, default=4)
    ap.add_argument("--drift-ps", type=float, default=2.0)
    ap.add_argument("--mace", action="store_true", help="include MACE (pip install mace-torch)")
    ap.add_argument("--skip-drift", action="store_true")
    ap.add_argument("--drift-modes", nargs="+", choices=("direct", "conservative", "mts"),
                    default=["direct", "conservative", "mts"], help="NVE runs to do (default all three)")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-sizes", type=int, nargs="+", default=[72, 576, 1944])
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    modes = ["all-heads", "forces-only", "conservative", "mts"] + (["mace"] if args.mace else [])
    rng = np.random.default_rng(0)
    report = {"threads": torch.get_num_threads(), "model": args.model, "crystal": args.crystal, "n_inner": args.n_inner}
    from ase_etgnn import ETGNNCalculator

    report["etgnn_parameters"] = sum(p.numel() for p in ETGNNCalculator(args.model).model.parameters())
    line = f"ETGNN {args.model}: {report['etgnn_parameters']:,} parameters"
    if args.mace:
        report["mace_parameters"] = mace_calculator(supercell(args.crystal, DRIFT_ATOMS[args.crystal])).n_params
        line += f"; MACE (random weights): {report['mace_parameters']:,} parameters"
    print(line)
    for n in [] if args.skip_timing else args.sizes:
        times = time_steps(modes, args.model, args.crystal, n, args.repeats, args.n_inner, rng)
        ref = statistics.median(times["all-heads"])
        print(f"\n{n} atoms, {args.repeats} interleaved repeats, {torch.get_num_threads()} thread(s): ms/step")
        print(f"  {'mode':<13} {'min':>9} {'median':>9} {'median / all-heads':>19}")
        for m in modes:
            med = statistics.median(times[m])
            print(f"  {m:<13} {min(times[m]):9.1f} {med:9.1f} {med / ref:19.2f}")
        report[f"ms_per_step_{n}"] = {m: {"min": min(times[m]), "median": statistics.median(times[m])} for m in modes}
    if not args.skip_memory:
        sizes = args.memory_sizes
        print(f"\npeak RSS (MB) of a process doing 2 steps (MTS: {max(2, args.n_inner)}), 1 thread; MB/atom = slope "
              f"{sizes[0]} -> {sizes[-1]} atoms")
        print(f"  {'mode':<13} " + " ".join(f"{n:>9d}" for n in sizes) + f" {'MB/atom':>9} {'/ forces-only':>14}")
        mem = {m: [peak_rss_mb(m, args.model, args.crystal, n, args.n_inner) for n in sizes] for m in modes}
        slope = {m: (v[-1] - v[0]) / (sizes[-1] - sizes[0]) for m, v in mem.items()}
        for m in modes:
            print(f"  {m:<13} " + " ".join(f"{v:9.0f}" for v in mem[m])
                  + f" {slope[m]:9.2f} {slope[m] / max(slope['forces-only'], 1e-9):14.2f}")
        report["peak_rss_MB"] = {m: dict(zip(map(str, sizes), v)) for m, v in mem.items()}
        report["MB_per_atom"] = slope
    if not args.skip_drift:
        print(f"\nNVE, {DRIFT_ATOMS[args.crystal]}-atom {args.crystal} from 300 K, 0.5 fs, {args.drift_ps} ps each:")
        for m in args.drift_modes:
            d = nve_drift(m, args.model, args.crystal, args.drift_ps, args.n_inner)
            report[f"nve_{m}"] = d
            print(f"  {m:<13} drift {d['drift_meV_per_atom_ps']:+8.3f} meV/atom/ps, max |E - E0| "
                  f"{d['max_abs_dE_meV_per_atom']:.3f} meV/atom, max |sum p| {d['max_total_momentum']:.1e}, "
                  f"{d['ms_per_step']:.0f} ms/step", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
