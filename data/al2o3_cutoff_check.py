"""Al2O3 protocol check (issue 16): do 40/320 Ry converge Born charges to ~0.01 e? Compare with 50/400 Ry.

Two perturbed corundum cells (10-atom primitive cell, ``ase_etgnn.structures.corundum``; rms 0.06 and 0.10 A,
symmetric strain <= 2 %, drawn like ``etgnn dfpt generate`` with seed 11), each run with the protocol's
40/320 Ry and with 50/400 Ry: pw.x scf + ph.x at Gamma (epsil, zeu), one process each. Resumable: every
finished run is appended to ``data/al2o3_cutoff_check.json`` and skipped on a rerun.

    OMP_NUM_THREADS=1 nohup python data/al2o3_cutoff_check.py > dfpt_work/al2o3_cutoff.log 2>&1 &
    python data/al2o3_cutoff_check.py --summary      # the table, from the JSON only
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ase_etgnn import qe
from ase_etgnn.dfpt import generate_structure
from ase_etgnn.qe_runner import QERunner
from ase_etgnn.structures import corundum

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "data" / "al2o3_cutoff_check.json"
WORK = ROOT / "dfpt_work" / "al2o3_cutoff"
CELLS = {"c0": 0.06, "c1": 0.10}  # name -> rms displacement, A
CUTOFFS = {"40-320": (40, 320), "50-400": (50, 400)}  # Ry


def _cell(name: str):
    rms = CELLS[name]
    atoms, info = generate_structure(corundum(), np.random.default_rng([11, list(CELLS).index(name)]), (rms, rms), 0.02)
    return atoms


def run_one(name: str, cut: str) -> dict:
    atoms = _cell(name)
    ecutwfc, ecutrho = CUTOFFS[cut]
    d = WORK / f"{name}-{cut}"
    d.mkdir(parents=True, exist_ok=True)
    scf = qe.write_pw_input(atoms, d / "scf.in", "q", "./tmp", ecutwfc=ecutwfc, ecutrho=ecutrho)
    ph = qe.write_ph_input(d / "ph.in", "q", "./tmp", fildyn="q.dyn")
    run = QERunner(nprocs=1)
    t0 = time.time()
    for prog, inp, out in (("pw.x", scf, d / "scf.out"), ("ph.x", ph, d / "ph.out")):
        if run(prog, inp, out, d) != 0:
            raise RuntimeError(f"{prog} failed in {d}")
    _, t = qe.read_qe_outputs(d / "scf.out", d / "ph.out", pw_in=scf)
    return {"cell": name, "cutoff": cut, "symbols": atoms.get_chemical_symbols(), "wall_s": round(time.time() - t0),
            **{k: np.asarray(v).tolist() for k, v in t.items()}}


def summary(rows: list) -> str:
    by = {(r["cell"], r["cutoff"]): r for r in rows}
    lines = ["cell  max|dZ*| Al (e)  max|dZ*| O (e)  max|d eps|  max|dF| (eV/A)  |sum Z*| 40/320 -> 50/400 (e)"]
    for name in CELLS:
        if (name, "40-320") not in by or (name, "50-400") not in by:
            continue
        a, b = by[(name, "40-320")], by[(name, "50-400")]
        za, zb = np.array(a["born_effective_charges"]), np.array(b["born_effective_charges"])  # [N, 3, 3]
        dz = np.abs(za - zb).reshape(len(za), -1).max(axis=1)  # [N]
        sym = np.array(a["symbols"])
        deps = np.abs(np.array(a["dielectric_tensor"]) - np.array(b["dielectric_tensor"])).max()
        df = np.abs(np.array(a["forces"]) - np.array(b["forces"])).max()
        asr = [np.abs(z.sum(axis=0)).max() for z in (za, zb)]
        lines.append(f"{name:4s}  {dz[sym == 'Al'].max():15.4f}  {dz[sym == 'O'].max():14.4f}  {deps:10.4f}  "
                     f"{df:14.4f}  {asr[0]:.3f} -> {asr[1]:.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", action="store_true", help="print the comparison from the JSON and exit")
    args = ap.parse_args()
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if not args.summary:
        for name in CELLS:
            for cut in CUTOFFS:
                if any(r["cell"] == name and r["cutoff"] == cut for r in rows):
                    continue
                print(f"{name} {cut}: running", flush=True)
                rows.append(run_one(name, cut))
                RESULTS.write_text(json.dumps(rows) + "\n")
                print(f"{name} {cut}: done in {rows[-1]['wall_s']} s", flush=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
