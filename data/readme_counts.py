"""Counts of a data file as data/README.md states them: records per provenance tag, how many carry eps_inf and
Born charges (DFPT), their index range, and the summed and median wall times.

    python data/readme_counts.py data/al2o3_dfpt.h5

Count the file that is committed (``git show :data/al2o3_dfpt.h5 > /tmp/a.h5``) while a QE job appends to it.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Dict, List

import numpy as np

from ase_etgnn.records import iter_records


def tag_counts(path: str) -> Dict[str, Dict[str, object]]:
    """Per tag (complete records only): records, DFPT records, sorted generator indices, wall times (s)."""
    rows: Dict[str, Dict[str, List]] = defaultdict(lambda: {"index": [], "dfpt": [], "wall": [], "wall_dfpt": []})
    for _, targets, prov in iter_records(path, properties=("born_effective_charges",)):
        dfpt = "born_effective_charges" in targets
        row = rows[prov.get("tag", "(no tag)")]
        row["index"].append(int(prov.get("index", -1)))
        row["dfpt"].append(dfpt)
        wall = float(prov.get("wall_time_total_s", np.nan))
        row["wall"].append(wall)
        if dfpt:
            row["wall_dfpt"].append(wall)
    return {tag: {"records": len(r["index"]), "dfpt": int(sum(r["dfpt"])), "indices": sorted(r["index"]),
                  "wall_s": float(np.nansum(r["wall"])), "wall_dfpt_s": r["wall_dfpt"]} for tag, r in rows.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    args = ap.parse_args(argv)
    counts = tag_counts(args.data)
    total = sum(c["records"] for c in counts.values())
    dfpt = sum(c["dfpt"] for c in counts.values())
    hours = sum(c["wall_s"] for c in counts.values()) / 3600.0
    print(f"{args.data}: {total} records, {dfpt} with eps_inf + BEC, {total - dfpt} pw.x-only; "
          f"sum of wall times {hours:.2f} core-hours")
    for tag, c in sorted(counts.items()):
        idx = c["indices"]
        contiguous = idx == list(range(idx[0], idx[-1] + 1))
        span = f"{idx[0]}-{idx[-1]}" + ("" if contiguous else " (with gaps)")
        walls = c["wall_dfpt_s"]
        med = (f"; DFPT median {np.nanmedian(walls):.0f} s ({np.nanmin(walls):.0f}-{np.nanmax(walls):.0f})"
               if walls else "")
        print(f"  {tag:20s} {c['records']:4d} records ({c['dfpt']} DFPT), indices {span}{med}")


if __name__ == "__main__":
    main()
