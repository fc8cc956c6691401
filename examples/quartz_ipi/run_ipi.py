"""Run i-PI with ETGNN clients: TRPMD (``--beads 4``) or classical MD (``--beads 1``) of alpha-quartz.

    python examples/quartz_ipi/run_ipi.py --beads 4 --clients 2 --steps 2000 --out runs/ipi/trpmd
    python examples/quartz_ipi/run_ipi.py --beads 1 --clients 1 --steps 2000 --out runs/ipi/classical
    python examples/quartz_ipi/ir_from_ipi.py runs/ipi/trpmd runs/ipi/classical --png ir.png

Writes the 72-atom (2x2x2) cell of the shipped data set's alpha-quartz seed to ``OUT/quartz_2x2x2.extxyz``,
copies ``trpmd.xml`` to ``OUT/input.xml`` with the number of beads, steps, time step, temperatures, seed,
a unique unix-socket name and the output prefix filled in, starts ``i-pi input.xml`` in ``OUT`` and
``--clients`` processes of ``etgnn ipi-client`` (one torch thread each by default) that return forces,
Born effective charges and eps_inf; waits for i-PI to finish and stops every process it started (also
on errors, Ctrl-C or ``--wall-limit``).  Client logs: ``OUT/client_K.log``; i-PI's: ``OUT/ipi.log``.

Initial state: the ideal crystal (every bead at the same place) with velocities drawn at
``--init-temperature`` (default 2 T: in a harmonic crystal started at its minimum the kinetic energy
halves as the potential energy fills up, so 2 T lands near T); ``ir_from_ipi.py --skip-fs`` drops the
first frames.  The centroid thermostat is weak (``--centroid-tau``, global velocity rescaling), the
ring-polymer internal modes are thermostatted with ``pile_lambda = 0.5`` (TRPMD).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional, Sequence

HERE = Path(__file__).resolve().parent


def _set(root: ET.Element, path: str, value, units: Optional[str] = None) -> None:
    node = root.find(path)
    if node is None:
        raise ValueError(f"{path!r} not found in the i-PI input template")
    node.text = f" {value} "
    if units is not None:
        node.set("units", units)


def write_input(template: Path, out: Path, *, beads: int, steps: int, timestep_fs: float, temperature: float,
                init_temperature: float, centroid_tau_fs: float, seed: int, socket: str, prefix: str,
                structure: str, stride: int) -> Path:
    """``template`` with the run settings filled in, written to ``out/input.xml``."""
    tree = ET.parse(template)
    root = tree.getroot()
    root.find("output").set("prefix", prefix)
    for traj in root.findall("output/trajectory"):
        traj.set("stride", str(stride))
    _set(root, "total_steps", steps)
    _set(root, "prng/seed", seed)
    _set(root, "ffsocket/address", socket)
    init = root.find("system/initialize")
    init.set("nbeads", str(beads))
    _set(root, "system/initialize/file", structure)
    _set(root, "system/initialize/velocities", init_temperature, "kelvin")
    _set(root, "system/ensemble/temperature", temperature, "kelvin")
    _set(root, "system/motion/dynamics/timestep", timestep_fs, "femtosecond")
    _set(root, "system/motion/dynamics/thermostat/tau", centroid_tau_fs, "femtosecond")
    path = out / "input.xml"
    tree.write(path)
    return path


def _stop(procs: List[subprocess.Popen], grace: float = 10.0) -> None:
    """Terminate (then kill) the processes this script started."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run directory (created)")
    ap.add_argument("--model", default="sio2.pt", help="model file or shipped model name")
    ap.add_argument("--beads", type=int, default=4, help="ring-polymer beads (1: classical MD)")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per client")
    ap.add_argument("--steps", type=int, default=2000, help="MD steps (total_steps)")
    ap.add_argument("--timestep", type=float, default=1.0, help="fs")
    ap.add_argument("--temperature", type=float, default=300.0, help="K")
    ap.add_argument("--init-temperature", type=float, default=None, help="K of the initial velocities (default 2 T)")
    ap.add_argument("--centroid-tau", type=float, default=100.0, help="fs, global (SVR) centroid thermostat")
    ap.add_argument("--stride", type=int, default=1, help="output stride of positions, velocities and tensors")
    ap.add_argument("--extras-every", type=int, default=1, help="tensors every K requests per bead")
    ap.add_argument("--seed", type=int, default=31415)
    ap.add_argument("--template", default=str(HERE / "trpmd.xml"), help="i-PI input template")
    ap.add_argument("--wall-limit", type=float, default=None, help="stop everything after this many seconds")
    args = ap.parse_args(argv)
    if args.beads < 1 or args.clients < 1:
        raise SystemExit("--beads and --clients must be >= 1")

    import ase.io

    from ase_etgnn.structures import alpha_quartz  # the seed of the SiO2 data set

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    structure = "quartz_2x2x2.extxyz"
    ase.io.write(out / structure, alpha_quartz().repeat((2, 2, 2)), format="extxyz")
    socket = f"etgnn-{os.getpid()}-{out.name}"[:60]
    prefix = "sim"
    write_input(Path(args.template), out, beads=args.beads, steps=args.steps, timestep_fs=args.timestep,
                temperature=args.temperature,
                init_temperature=args.init_temperature if args.init_temperature is not None else 2 * args.temperature,
                centroid_tau_fs=args.centroid_tau, seed=args.seed, socket=socket, prefix=prefix,
                structure=structure, stride=args.stride)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    procs: List[subprocess.Popen] = []
    logs = []
    t0 = time.monotonic()
    try:
        log = open(out / "ipi.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(["i-pi", "input.xml"], cwd=out, stdout=log, stderr=subprocess.STDOUT, env=env))
        sock = Path(f"/tmp/ipi_{socket}")
        while not sock.exists():
            if procs[0].poll() is not None:
                raise RuntimeError(f"i-pi exited with code {procs[0].returncode}; see {out / 'ipi.log'}")
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"i-pi did not open {sock} within 120 s; see {out / 'ipi.log'}")
            time.sleep(0.2)
        for k in range(args.clients):
            clog = open(out / f"client_{k}.log", "w")
            logs.append(clog)
            cmd = [sys.executable, "-m", "ase_etgnn.cli", "ipi-client", "--model", args.model,
                   "--structure", str(out / structure), "--unix", socket, "--threads", str(args.threads),
                   "--extras", "born_effective_charges,dielectric_tensor",
                   "--extras-every", str(args.extras_every)]
            procs.append(subprocess.Popen(cmd, stdout=clog, stderr=subprocess.STDOUT, env=env))
        print(f"i-PI and {args.clients} client(s) running in {out}: {args.beads} bead(s), {args.steps} steps "
              f"of {args.timestep:g} fs", flush=True)
        while procs[0].poll() is None:
            if args.wall_limit is not None and time.monotonic() - t0 > args.wall_limit:
                raise RuntimeError(f"wall limit {args.wall_limit:g} s reached; stopped (output so far kept)")
            for k, p in enumerate(procs[1:]):
                if p.poll() not in (None, 0):
                    raise RuntimeError(f"client {k} exited with code {p.returncode}; see {out / f'client_{k}.log'}")
            time.sleep(1.0)
        if procs[0].returncode != 0:
            raise RuntimeError(f"i-pi exited with code {procs[0].returncode}; see {out / 'ipi.log'}")
    finally:
        _stop(procs)
        for fh in logs:
            fh.close()
    print(f"done in {time.monotonic() - t0:.0f} s; output {out}/{prefix}.*", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
