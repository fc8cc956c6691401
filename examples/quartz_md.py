"""MD of alpha-quartz with the shipped model, recording Born charges and eps_inf every N steps.

    python examples/quartz_md.py [--model MODEL] [--ps 10] [--temperature 300] [--output-dir DIR]
        [--dynamics langevin|nve-conservative|mts] [--num-threads 1]

Runs ``--ps`` picoseconds of MD on a 72-atom (2x2x2) alpha-quartz cell: Langevin with direct forces (1 fs, the
default), NVE velocity Verlet with conservative forces, or NVE multiple time stepping (0.5 fs direct inner steps,
conservative correction every 4 steps; ``ase_etgnn.dynamics``). The default model is ``sio2.pt`` for Langevin and
``sio2_md.pt`` (trained for -dE/dr, models/sio2_md.md) for the two NVE modes. Records BEC (N,3,3) and eps_inf every
``--interval`` steps into an ASE trajectory (.traj keeps both): the tensors are computed on those steps only
(tensors on demand), and checks that every Si-O bond stays between 1.45 and 1.85 A. Exits with status 1 if a bond
leaves that range. Several runs side by side: one core and one thread each, e.g.
``OMP_NUM_THREADS=1 taskset -c 1 python examples/quartz_md.py --seed 1``.

The trajectory goes to ``--out`` if given (refused if it exists, unless ``--overwrite``), else to
``DIR/quartz_md.traj`` with ``DIR`` = ``--output-dir`` (default ``runs/examples/quartz_md``, numbered
``-2``, ``-3``, ... when taken; a directory you name that holds the file is refused unless ``--overwrite``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.neighborlist import neighbor_list

from ase_etgnn import ETGNNCalculator
from ase_etgnn.dynamics import thermalize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import output_dir, refuse_existing  # noqa: E402  (examples/_output.py)

ROOT = Path(__file__).resolve().parent.parent
BOND_RANGE = (1.45, 1.85)  # A


def si_o_bonds(atoms) -> np.ndarray:
    """Lengths (A) of the Si-O bonds (each Si's 4 nearest O; pairs within 2.2 A)."""
    i, j, d = neighbor_list("ijd", atoms, 2.2)
    sym = np.array(atoms.get_chemical_symbols())
    return d[(sym[i] == "Si") & (sym[j] == "O")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="model file or shipped name (default: sio2.pt for langevin, sio2_md.pt for NVE modes)")
    ap.add_argument("--ps", type=float, default=10.0, help="simulated time, ps (1 fs steps)")
    ap.add_argument("--temperature", type=float, default=300.0, help="K")
    ap.add_argument("--interval", type=int, default=20, help="steps between recorded frames")
    ap.add_argument("--output-dir", dest="output_dir", default=None,
                    help="directory of quartz_md.traj (default runs/examples/quartz_md, numbered if taken)")
    ap.add_argument("--out", default=None, help="trajectory file (instead of OUTPUT_DIR/quartz_md.traj)")
    ap.add_argument("--overwrite", action="store_true", help="overwrite an existing trajectory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dynamics", default="langevin", choices=("langevin", "nve-conservative", "mts"))
    ap.add_argument("--num-threads", type=int, default=None,
                    help="torch threads (default: OMP_NUM_THREADS, else the CPU affinity)")
    args = ap.parse_args(argv)
    if args.out is not None:
        traj_path = refuse_existing(Path(args.out), args.overwrite)
    else:
        traj_path = output_dir(args.output_dir, "quartz_md", ["quartz_md.traj"], args.overwrite) / "quartz_md.traj"

    if args.model is None:
        args.model = "sio2.pt" if args.dynamics == "langevin" else "sio2_md.pt"
    atoms = read(ROOT / "data" / "seeds" / "alpha_quartz.extxyz").repeat((2, 2, 2))
    forces = "conservative" if args.dynamics == "nve-conservative" else "direct"
    # MD snapshots have no symmetry anyway
    atoms.calc = ETGNNCalculator(args.model, symmetrize=False, forces=forces, num_threads=args.num_threads)
    rng = np.random.default_rng(args.seed)
    thermalize(atoms, args.temperature, rng)
    if args.dynamics == "langevin":
        dt_fs = 1.0
        dyn = Langevin(atoms, dt_fs * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs,
                       fixcm=False, rng=rng)
    elif args.dynamics == "mts":
        from ase_etgnn.dynamics import MultipleTimeStepVerlet

        dt_fs = 0.5
        dyn = MultipleTimeStepVerlet(atoms, dt_fs * units.fs, n_inner=4)
    else:
        from ase.md.verlet import VelocityVerlet

        dt_fs = 0.5
        dyn = VelocityVerlet(atoms, dt_fs * units.fs)
    traj = Trajectory(str(traj_path), "w", atoms)
    n_steps = int(round(args.ps * 1000 / dt_fs))
    print(f"{args.dynamics}, {forces} forces of {args.model}, {len(atoms)} atoms, {n_steps} steps of {dt_fs} fs")
    lo, hi, eps_xx, temps, e_tot = np.inf, -np.inf, [], [], []

    def record() -> None:
        nonlocal lo, hi
        atoms.calc.get_property("born_effective_charges", atoms)  # reuses this step's trunk pass
        eps = atoms.calc.get_property("dielectric_tensor", atoms)
        traj.write()  # stores forces, BEC and eps_inf of this frame
        b = si_o_bonds(atoms)
        lo, hi = min(lo, b.min()), max(hi, b.max())
        eps_xx.append(np.trace(eps) / 3)
        temps.append(atoms.get_temperature())
        e_tot.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        step = dyn.get_number_of_steps()
        if step % (10 * args.interval) == 0:
            print(f"t = {step * dt_fs / 1000:6.2f} ps  T = {temps[-1]:6.0f} K  <eps> = {eps_xx[-1]:.4f}  "
                  f"Si-O [{b.min():.3f}, {b.max():.3f}] A", flush=True)

    dyn.attach(record, interval=args.interval)
    t0 = time.perf_counter()
    dyn.run(n_steps)
    wall = time.perf_counter() - t0
    traj.close()
    ok = BOND_RANGE[0] <= lo and hi <= BOND_RANGE[1]
    print(f"{n_steps} steps in {wall:.0f} s ({wall / max(n_steps, 1) * 1e3:.1f} ms/step); "
          f"mean T = {np.mean(temps):.0f} K; eps_inf (trace/3) = {np.mean(eps_xx):.4f} +- {np.std(eps_xx):.4f}")
    if args.dynamics != "langevin" and len(e_tot) > 2:
        t_ps = np.arange(len(e_tot)) * args.interval * dt_fs / 1000
        drift = np.polyfit(t_ps, np.array(e_tot) / len(atoms) * 1e3, 1)[0]
        print(f"NVE total energy drift {drift:+.3f} meV/atom/ps over {t_ps[-1]:.2f} ps")
    print(f"Si-O bond range over the run: [{lo:.3f}, {hi:.3f}] A -> "
          f"{'OK' if ok else 'OUT OF RANGE'} (allowed {BOND_RANGE[0]}-{BOND_RANGE[1]} A); frames in {traj_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
