"""Gamma-point TO frequencies of sapphire from DFT forces (frozen phonons, the Al2O3 protocol), the reference
against which the sapphire example's model frequencies are judged apart from experiment.

    python data/al2o3_frozen_phonon.py --write-structures dfpt_work/corundum_fph.extxyz   # prints the QE command
    python -m ase_etgnn.dfpt generate --seeds dfpt_work/corundum_fph.extxyz --tag corundum-fph --seed 0 \
        --n-structures K --rms 0 0 --strain-max 0 --no-ph --output data/al2o3_frozen_phonon.h5 \
        --workdir dfpt_work --nprocs 1
    python data/al2o3_frozen_phonon.py --summary [--model models/al2o3.pt] [--json data/al2o3_frozen_phonon.json]

The 10-atom rhombohedral cell (``ase_etgnn.structures.corundum``, experimental geometry) as its own supercell:
a displaced atom moves with all its periodic images, so the forces give the Gamma dynamical matrix exactly
(no supercell truncation). phonopy's symmetry-reduced displacements of 0.01 A, plus and minus; frame 0 is the
undisplaced cell, whose residual forces are subtracted. pw.x only (``docs/al2o3_protocol.md``: LDA, 40/320 Ry,
3x3x3 k-points), one record per frame, key ``corundum-fph-0-<frame>``. With ``--model`` the same displacements
are evaluated with an ETGNN model, so the two columns differ only by the forces.
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from ase_etgnn.records import iter_records
from ase_etgnn.spectra import mode_groups
from ase_etgnn.spectra.phonons import atoms_to_phonopy, gamma_modes, make_phonopy, phonopy_to_atoms
from ase_etgnn.structures import CORUNDUM_GAMMA_TO_CM1, corundum

DISPLACEMENT = 0.01  # A
TAG = "corundum-fph-0"


def displaced_phonopy():
    """Phonopy object of the corundum cell (1x1x1) with its displacements generated."""
    from phonopy import Phonopy

    phonon = Phonopy(atoms_to_phonopy(corundum()), supercell_matrix=np.eye(3, dtype=int), primitive_matrix="P")
    phonon.generate_displacements(distance=DISPLACEMENT, is_plusminus=True)
    return phonon


def frames(phonon) -> List[Atoms]:
    """The undisplaced cell, then phonopy's displaced cells, in phonopy's order."""
    return [phonopy_to_atoms(phonon.supercell)] + [phonopy_to_atoms(sc) for sc in phonon.supercells_with_displacements]


def set_forces(phonon, forces: Sequence[np.ndarray]) -> None:
    """Force constants from the frames' forces (eV/A), residual forces of frame 0 subtracted, as
    ``ase_etgnn.spectra.make_phonopy`` does with a calculator (forces here come from stored records)."""
    phonon.forces = np.array([f - forces[0] for f in forces[1:]])  # [n_disp, N, 3]
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()


def dft_forces(path: str, expected: Sequence[Atoms]) -> List[np.ndarray]:
    """Forces of frames ``corundum-fph-0-<i>`` from ``path``, checked against the frames' positions."""
    found: Dict[int, np.ndarray] = {}
    for atoms, targets, meta in iter_records(path):
        key = str(meta.get("key", ""))
        if not key.startswith(TAG + "-"):
            continue
        i = int(key.rsplit("-", 1)[1])
        shift = np.abs(atoms.get_positions() - expected[i].get_positions()).max()
        if shift > 1e-6:
            raise ValueError(f"{path}: record {key} is not frame {i} of the displacements (positions differ by "
                             f"{shift:.2e} A): were the structures written by another phonopy version?")
        found[i] = np.asarray(targets["forces"])
    missing = [i for i in range(len(expected)) if i not in found]
    if missing:
        raise ValueError(f"{path}: frames {missing} of {len(expected)} have no record yet (run the QE command)")
    return [found[i] for i in range(len(expected))]


def mode_table(phonon) -> List[Dict[str, object]]:
    """Optical Gamma modes, degenerate partners of one irrep merged (``mode_groups``): irrep, degeneracy, TO frequency (cm^-1)."""
    modes = gamma_modes(phonon)
    return [{"irrep": modes.irreps[g[0]], "deg": len(g), "cm1": float(np.mean(modes.frequencies_cm1[g]))}
            for g in mode_groups(modes) if not modes.acoustic[g].all()]


def by_irrep(table: List[Dict[str, object]]) -> Dict[str, List[float]]:
    """Frequencies of each irrep, ascending."""
    out: Dict[str, List[float]] = {}
    for row in table:
        out.setdefault(str(row["irrep"]), []).append(float(row["cm1"]))
    return {k: sorted(v) for k, v in out.items()}


def summary(data: str, model: Optional[str]) -> Dict[str, object]:
    """DFT (and model) Gamma TO frequencies by irrep, matched to experiment in order of frequency."""
    phonon = displaced_phonopy()
    expected = frames(phonon)
    set_forces(phonon, dft_forces(data, expected))
    columns = {"DFT": by_irrep(mode_table(phonon))}
    if model is not None:
        from ase_etgnn import ETGNNCalculator

        other = make_phonopy(corundum(), ETGNNCalculator(model), supercell_matrix=(1, 1, 1),
                             displacement=DISPLACEMENT, is_plusminus=True)  # the same displacements
        columns[model] = by_irrep(mode_table(other))
    rows = []
    for irrep, measured in CORUNDUM_GAMMA_TO_CM1.items():
        for k, expt in enumerate(measured):
            rows.append({"irrep": irrep, "expt": expt,
                         **{name: col[irrep][k] for name, col in columns.items() if len(col.get(irrep, [])) > k}})
    return {"displacement_A": DISPLACEMENT, "n_frames": len(expected), "all_modes": columns, "against_experiment": rows}


def _print(result: Dict[str, object]) -> None:
    names = list(result["all_modes"])
    print("irrep  expt " + " ".join(f"{n[-22:]:>22s}" for n in names))
    for row in result["against_experiment"]:
        print(f"{row['irrep']:>5s} {row['expt']:5d} " + " ".join(f"{row.get(n, float('nan')):22.1f}" for n in names))
    for n in names:
        diff = [row[n] - row["expt"] for row in result["against_experiment"] if n in row]
        print(f"{n}: mean |diff| to experiment {np.mean(np.abs(diff)):.1f} cm-1, mean diff {np.mean(diff):+.1f}")
    if len(names) == 2:
        d = [row[names[1]] - row["DFT"] for row in result["against_experiment"] if names[1] in row and "DFT" in row]
        print(f"{names[1]} - DFT: mean |diff| {np.mean(np.abs(d)):.1f} cm-1, mean {np.mean(d):+.1f}, "
              f"max |diff| {np.max(np.abs(d)):.1f}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-structures", metavar="EXTXYZ", help="write the frames for the QE job")
    ap.add_argument("--summary", action="store_true", help="frequencies from the DFT records")
    ap.add_argument("--data", default="data/al2o3_frozen_phonon.h5")
    ap.add_argument("--model", help="also an ETGNN model on the same displacements")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args(argv)
    if args.write_structures:
        from ase.io import write

        out = frames(displaced_phonopy())
        write(args.write_structures, out, format="extxyz")
        print(f"wrote {len(out)} frames to {args.write_structures}; then:\n  python -m ase_etgnn.dfpt generate "
              f"--seeds {args.write_structures} --tag corundum-fph --seed 0 --n-structures {len(out)} --rms 0 0 "
              f"--strain-max 0 --no-ph --output {args.data} --workdir dfpt_work --nprocs 1")
    if args.summary:
        result = summary(args.data, args.model)
        _print(result)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=1)
    if not (args.write_structures or args.summary):
        ap.error("nothing to do: --write-structures and/or --summary")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
