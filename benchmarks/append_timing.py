"""Time of one ``append_records`` call (one record) on a copy of a data set: this checkout's records.py (B)
against another revision's (A, default the commit before the in-memory append), interleaved and repeated.

    OMP_NUM_THREADS=1 python benchmarks/append_timing.py data/sio2_dfpt.h5 --rev 242e0b0 --repeat 15

Prints min and median seconds of A and B and their ratio B/A.  The data set given is only read (copied to
a temporary folder first).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load_revision(rev: str, where: Path):
    """The record store of ``rev`` (``ase_etgnn/records.py``, ``ase_etgnn/data.py`` before the split) imported
    as a separate module (package-relative imports from this checkout)."""
    for name in ("records.py", "data.py"):
        run = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:ase_etgnn/{name}"], capture_output=True,
                             text=True)
        if run.returncode == 0:
            break
    else:
        raise SystemExit(f"revision {rev} has neither ase_etgnn/records.py nor ase_etgnn/data.py")
    path = where / "data_a.py"
    path.write_text(re.sub(r"^from \.(\w+) import", r"from ase_etgnn.\1 import", run.stdout, flags=re.M))
    spec = importlib.util.spec_from_file_location("data_a", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["data_a"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--rev", default="242e0b0", help="revision A (git)")
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from ase import Atoms

    from ase_etgnn import records as data_b

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_a = _load_revision(args.rev, tmp)
        rng = np.random.default_rng(0)
        times = {"A": [], "B": []}
        for r in range(args.repeat):
            for name, mod in (("A", data_a), ("B", data_b)) if r % 2 == 0 else (("B", data_b), ("A", data_a)):
                target = tmp / f"{name}.h5"
                shutil.copyfile(args.data, target)
                atoms = Atoms("SiO2", positions=rng.random((3, 3)) * 3, cell=np.eye(3) * 5, pbc=True)
                t0 = time.perf_counter()
                mod.append_records(target, [(atoms, {"forces": rng.normal(size=(3, 3))}, {}, None)])
                times[name].append(time.perf_counter() - t0)
                os.remove(target)
        size = os.path.getsize(args.data) / 1e6
        for name in ("A", "B"):
            t = np.array(times[name])
            print(f"{name}: min {t.min() * 1e3:.1f} ms, median {np.median(t) * 1e3:.1f} ms  ({args.repeat} appends "
                  f"to a {size:.1f} MB file)")
        print(f"B/A: min {min(times['B']) / min(times['A']):.2f}, "
              f"median {np.median(times['B']) / np.median(times['A']):.2f}")


if __name__ == "__main__":
    main()
