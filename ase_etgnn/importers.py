"""Import DFT results into the HDF5 dataset format of :mod:`ase_etgnn.records`.

Supported inputs (``etgnn dataset import FILES_OR_DIRS... -o data.h5``):

* extended XYZ (``.xyz``, ``.extxyz``) and ASE trajectories (``.traj``): every frame; targets are taken
  from the attached calculator's results, else from ``atoms.info`` (structure-level) and
  ``atoms.arrays`` (per-atom), optionally with a key prefix (e.g. ``REF_energy``).  Accepted layouts:
  ``stress`` (3,3) or Voigt (6,) (ASE order xx yy zz yz xz xy); ``born_effective_charges`` (N,3,3) or
  flattened (N,9) (row-major, ``Z[a].reshape(9)``); ``dielectric_tensor`` (3,3) or (9,);
  ``piezoelectric_tensor`` (3,3,3), (27,) or Voigt (3,6) (``e[i, j, k] = e_V[i, voigt(j, k)]``; no factor 2).
* VASP ``vasprun.xml`` (any file whose name contains ``vasprun`` and ends in ``.xml``): all ionic steps
  via ASE's ``vasp-xml`` reader (energy, forces, stress; the final step's ``born_effective_charges``
  (``born_charges``) and ``dielectric_tensor`` (``dielectric_dft``) when present).  Born charges are stored
  exactly as VASP writes them, not transposed (the registry expects ``Z[a, i, j]``, ``i`` = field,
  ``j`` = displacement).
* Quantum ESPRESSO: a pw.x output (detected by ``Program PWSCF``) optionally paired with a ph.x output
  (``Program PHONON``) in the same directory via :func:`ase_etgnn.qe.read_qe_outputs`; when ``X.in`` sits
  next to the pw.x output ``X.out`` it is used for the exact input structure.
* other ase_etgnn HDF5 data sets (``.h5``/``.hdf5`` given explicitly, e.g. ``../shared/data/*.h5``): merged
  record by record with their provenance.

Records whose structure and targets are already in the output (under any key) are skipped, so merging the
same data twice, or data computed twice, adds nothing.  Nothing is converted except layout (Voigt/flattened -> Cartesian) and the documented unit conventions of
the source code; values are never symmetrised or ASR-corrected.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

from .conventions import VOIGT_PAIRS
from .properties import PROPERTIES
from .qe import read_qe_outputs
from .records import append_records, content_key, iter_records

__all__ = ["ImportedRecord", "ImportReport", "detect_format", "check_extxyz", "iter_import", "import_files",
           "targets_from_atoms", "expand_paths"]



@dataclass(frozen=True)
class ImportedRecord:
    """One imported structure; ``where`` names its origin in messages (e.g. ``"a.xyz frame 3"``)."""

    atoms: Any
    targets: Dict[str, np.ndarray]
    provenance: Dict[str, Any]
    where: str = "imported structure"


@dataclass(frozen=True)
class ImportReport:
    """Counts of an import run; ``per_target`` counts the added structures per target (duplicates and
    unlabelled structures are counted apart, in ``n_duplicates`` and ``n_without_targets``)."""

    n_added: int = 0
    n_duplicates: int = 0
    n_without_targets: int = 0
    per_target: Dict[str, int] = field(default_factory=dict)
    files: Tuple[str, ...] = ()


# --------------------------------------------------------------------------------------- conversions

def _normalise_layout(name: str, value: Any, n_atoms: int, where: str) -> np.ndarray:
    """Reshape a value given in an accepted alternative layout to the registry shape (values unchanged)."""
    arr = np.asarray(value)
    try:
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise ValueError("not numeric")
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name!r} is not numeric ({str(value)[:60]!r})") from None
    if name == "energy" and arr.shape in ((1,),):
        return arr.reshape(())
    if name == "stress" and arr.shape == (6,):
        return voigt_6_to_full_3x3_stress(arr)  # ASE order xx yy zz yz xz xy
    if name == "stress" and arr.shape == (9,):
        return arr.reshape(3, 3)
    if name == "dielectric_tensor" and arr.shape == (9,):
        return arr.reshape(3, 3)
    if name == "born_effective_charges":
        if arr.shape == (n_atoms, 9):
            return arr.reshape(n_atoms, 3, 3)
        if arr.shape == (n_atoms * 9,):
            return arr.reshape(n_atoms, 3, 3)
    if name == "piezoelectric_tensor":
        if arr.shape == (27,):
            return arr.reshape(3, 3, 3)
        if arr.shape == (3, 6):
            out = np.empty((3, 3, 3))
            for a, (j, k) in enumerate(VOIGT_PAIRS):
                out[:, j, k] = out[:, k, j] = arr[:, a]
            return out
        if arr.shape == (18,):
            return _normalise_layout(name, arr.reshape(3, 6), n_atoms, where)
    return arr


def targets_from_atoms(atoms, key_prefix: str = "", where: str = "structure") -> Dict[str, np.ndarray]:
    """Registry targets of an ``ase.Atoms``: calculator results first, then ``info`` / ``arrays``.

    ``key_prefix`` is prepended to the names looked up in ``info``/``arrays`` (e.g. ``"REF_"``).
    """
    n = len(atoms)
    found: Dict[str, Any] = {}
    calc = getattr(atoms, "calc", None)
    results = dict(getattr(calc, "results", {}) or {}) if calc is not None else {}
    for name in PROPERTIES:
        if name in results and results[name] is not None:
            found[name] = results[name]
    for name, spec in PROPERTIES.items():
        if name in found:
            continue
        k = key_prefix + name
        if spec.per_atom and k in atoms.arrays:
            found[name] = atoms.arrays[k]
        elif k in atoms.info and atoms.info[k] is not None:
            found[name] = atoms.info[k]
        elif k in atoms.arrays:  # e.g. a 3x3 tensor stored per atom by mistake: let validation complain
            found[name] = atoms.arrays[k]
    return {name: _normalise_layout(name, v, n, where) for name, v in found.items()}


# ------------------------------------------------------------------------------------- file handling
def _head(path: str, n: int = 4096) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(n).decode("utf-8", errors="replace")
    except OSError:
        return ""


def detect_format(path: str) -> str:
    """One of ``"extxyz"``, ``"traj"``, ``"vasp-xml"``, ``"qe-pw"``, ``"qe-ph"``, ``"qe-in"``, ``"ase"``
    (let ASE guess) or ``"skip"``."""
    base = os.path.basename(path).lower()
    if base.endswith((".xyz", ".extxyz")):
        return "extxyz"
    if base.endswith(".traj"):
        return "traj"
    if base.endswith(".xml") and ("vasprun" in base or "<modeling>" in _head(path, 2048)):
        return "vasp-xml"
    if base.endswith((".h5", ".hdf5")):
        return "h5"
    if base.endswith((".lock", ".tmp")):
        return "skip"
    head = _head(path)
    if "Program PWSCF" in head:
        return "qe-pw"
    if "Program PHONON" in head:
        return "qe-ph"
    if "&control" in head.lower() or "&CONTROL" in head:
        return "qe-in"
    return "ase"


def expand_paths(paths: Sequence[str], explicit: Optional[set] = None) -> List[str]:
    """Files given directly plus the files found (recursively, sorted) in given directories.

    When ``explicit`` is a set, the files given directly (not found by walking) are added to it.
    """
    out: List[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    if not f.startswith("."):
                        out.append(os.path.join(root, f))
        elif os.path.exists(p):
            out.append(p)
            if explicit is not None:
                explicit.add(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def check_extxyz(path: str) -> int:
    """Check that an (extended) XYZ file is complete before ASE reads it; returns the number of frames.

    Depending on where a file was cut, ASE drops the partial frame silently or fails without naming the
    frame, and it stores a number cut in the last line as read.  Here every frame must have its atom
    count, a comment line and exactly that many atom lines, each with the number of columns its
    ``Properties`` declare (without ``Properties``: at least species and x y z, and as many as the frame's
    first atom line) and numbers in real/integer columns; the file must end with a newline.
    ``ValueError`` names the file, the frame (from 0), the atom and the line (from 1).
    """
    from ase.io.extxyz import key_val_str_to_dict

    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8", errors="replace")
    lines = text.split("\n")
    complete = len(lines) - 1  # lines followed by a newline; lines[-1] is '' or a cut last line
    i, frame = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        where = f"{path}: frame {frame} (line {i + 1})"
        try:
            n_atoms = int(lines[i].strip())
        except ValueError:
            raise ValueError(f"{where}: expected the atom count, got {lines[i][:60]!r}") from None
        if n_atoms < 0 or i + 1 >= complete:
            raise ValueError(f"{where}: frame header cut: the file ends before the comment line of this frame"
                             if n_atoms >= 0 else f"{where}: negative atom count {n_atoms}")
        try:
            info = key_val_str_to_dict(lines[i + 1])
        except Exception as exc:  # noqa: BLE001 - any parse failure of the comment line
            raise ValueError(f"{path}: frame {frame} (line {i + 2}): unreadable comment line ({exc})") from None
        props = str(info.get("Properties", "species:S:1:pos:R:3")).split(":")
        cols: List[Tuple[str, str]] = []
        try:
            for k in range(0, len(props) - 2, 3):
                cols += [(props[k], props[k + 1].upper())] * int(props[k + 2])
        except ValueError:
            raise ValueError(f"{path}: frame {frame} (line {i + 2}): unreadable Properties "
                             f"{':'.join(props)!r}") from None
        first = i + 2
        n_present = complete if lines[-1] == "" else len(lines)  # lines with content or a newline
        if first + n_atoms > n_present:
            raise ValueError(f"{path}: frame {frame} (line {i + 1}): truncated: the header says {n_atoms} atoms "
                             f"but the file ends after {max(0, n_present - first)} atom lines")
        declared = "Properties" in info  # without it ASE reads species and pos and ignores further columns
        n_cols = len(cols) if declared or n_atoms == 0 else max(len(cols), len(lines[first].split()))
        for a in range(n_atoms):
            j = first + a
            tok = lines[j].split()
            at = f"{path}: frame {frame}, atom {a} (line {j + 1})"
            if len(tok) != n_cols:
                raise ValueError(f"{at}: {len(tok)} columns, expected {n_cols} "
                                 + (f"from Properties {':'.join(props)}" if declared else "like the frame's first atom")
                                 + " (line cut or malformed?)")
            for t, (cname, ctype) in zip(tok, cols):
                if ctype in ("R", "I"):
                    try:
                        float(t) if ctype == "R" else int(t)
                    except ValueError:
                        raise ValueError(f"{at}: column {cname!r} holds {t!r}, not a number") from None
        if first + n_atoms - 1 >= complete:  # the last atom line has no newline: possibly cut
            raise ValueError(f"{path}: frame {frame}, atom {n_atoms - 1} (line {first + n_atoms}): the file does "
                             f"not end with a newline, so this line may be cut ({lines[-1][-40:]!r}); if the "
                             "file is complete, add the final newline")
        i = first + n_atoms
        frame += 1
    return frame


def _iter_ase(path: str, fmt: Optional[str], key_prefix: str) -> Iterator[ImportedRecord]:
    import ase.io

    n_checked = check_extxyz(path) if fmt == "extxyz" else None
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except Exception as exc:
        raise ValueError(f"{path}: cannot be read by ASE (format {fmt or 'auto'}): {exc}") from None
    if not isinstance(frames, list):
        frames = [frames]
    if n_checked is not None and len(frames) != n_checked:  # pragma: no cover - a reader/checker mismatch
        raise ValueError(f"{path}: ASE read {len(frames)} frames, the file holds {n_checked}")
    for i, atoms in enumerate(frames):
        where = f"{path} frame {i}"
        targets = targets_from_atoms(atoms, key_prefix=key_prefix, where=where)
        calc = getattr(atoms, "calc", None)
        prov = {"source": os.path.abspath(path), "format": fmt or "ase-auto", "frame": i,
                "importer": "ase_etgnn.importers"}
        if calc is not None and getattr(calc, "name", None):
            prov["calculator"] = str(calc.name)
        yield ImportedRecord(_clean_atoms(atoms), targets, prov, where)


def _clean_atoms(atoms):
    from ase import Atoms

    return Atoms(numbers=atoms.get_atomic_numbers(), positions=atoms.get_positions(),
                 cell=np.asarray(atoms.get_cell()), pbc=atoms.get_pbc())


def _iter_vasprun(path: str) -> Iterator[ImportedRecord]:
    for rec in _iter_ase(path, "vasp-xml", ""):
        yield rec


def _iter_qe(pw_out: str, ph_out: Optional[str]) -> Iterator[ImportedRecord]:
    stem = os.path.splitext(pw_out)[0]
    pw_in = stem + ".in" if os.path.exists(stem + ".in") and detect_format(stem + ".in") == "qe-in" else None
    try:
        atoms, targets = read_qe_outputs(pw_out, ph_out, pw_in=pw_in)
    except Exception as exc:
        raise ValueError(f"{pw_out}" + (f" + {ph_out}" if ph_out else "") + f": cannot read QE outputs: {exc}") from None
    prov = {"source": os.path.abspath(pw_out), "format": "qe", "importer": "ase_etgnn.importers",
            "ph_out": os.path.abspath(ph_out) if ph_out else None,
            "pw_in": os.path.abspath(pw_in) if pw_in else None}
    yield ImportedRecord(_clean_atoms(atoms), dict(targets), prov, pw_out + (f" + {ph_out}" if ph_out else ""))


def iter_import(paths: Sequence[str], key_prefix: str = "") -> Iterator[ImportedRecord]:
    """Yield one :class:`ImportedRecord` per structure found in ``paths`` (files or directories).

    Files of unknown type found in directories are ignored; given explicitly, ASE guesses the format.
    QE pairing: in each directory, a ph.x output is paired with the pw.x output there when the directory
    holds exactly one pw.x output; otherwise ph.x outputs are an error (ambiguous) and pw.x outputs
    are imported alone.
    """
    explicit: set = set()
    files = expand_paths(paths, explicit)
    fmts = {f: detect_format(f) for f in files}
    by_dir_pw: Dict[str, List[str]] = {}
    by_dir_ph: Dict[str, List[str]] = {}
    for f, fmt in fmts.items():
        d = os.path.dirname(os.path.abspath(f))
        if fmt == "qe-pw":
            by_dir_pw.setdefault(d, []).append(f)
        elif fmt == "qe-ph":
            by_dir_ph.setdefault(d, []).append(f)
    for d, phs in by_dir_ph.items():
        pws = by_dir_pw.get(d, [])
        if len(phs) > 1 or len(pws) != 1:
            raise ValueError(
                f"{d}: cannot pair ph.x outputs {phs} with pw.x outputs {pws}: put each pw.x + ph.x pair "
                "in its own directory"
            )
    for f in files:
        fmt = fmts[f]
        if fmt in ("skip", "qe-ph", "qe-in"):
            continue
        if fmt == "qe-pw":
            d = os.path.dirname(os.path.abspath(f))
            ph = by_dir_ph.get(d, [None])[0]
            yield from _iter_qe(f, ph)
        elif fmt == "vasp-xml":
            yield from _iter_vasprun(f)
        elif fmt == "extxyz":
            yield from _iter_ase(f, "extxyz", key_prefix)
        elif fmt == "traj":
            yield from _iter_ase(f, "traj", key_prefix)
        elif fmt == "h5" and f in explicit:  # merge another data set (e.g. ../shared/data/*.h5)
            yield from _iter_h5(f)
        elif f in explicit:  # unknown extension given explicitly: let ASE guess
            yield from _iter_ase(f, None, key_prefix)
        # unknown files found while walking a directory are ignored


def _iter_h5(path: str) -> Iterator[ImportedRecord]:
    """Records of an ase_etgnn HDF5 data set, provenance kept (with the file and original key)."""
    for atoms, targets, prov in iter_records(path):
        prov = dict(prov)
        prov["merged_from"] = {"file": os.path.abspath(path), "key": prov.get("key")}
        yield ImportedRecord(atoms, dict(targets), prov, f"{path} record {prov.get('key')!r}")


def import_files(paths: Sequence[str], output: str, key_prefix: str = "", on_duplicate: str = "skip",
                 chunk_size: int = 256, require_targets: bool = True) -> ImportReport:
    """Import ``paths`` into the dataset ``output`` (created or appended), ``chunk_size`` records per
    atomic transaction.  Structures without any target are skipped when ``require_targets``."""

    if on_duplicate not in ("error", "skip"):
        raise ValueError(f"on_duplicate must be 'error' or 'skip', got {on_duplicate!r}")
    files = tuple(expand_paths(paths))
    # records already in the output, whatever key they were stored under: never imported twice
    seen: Dict[str, str] = {}  # content key -> where the record was first seen
    if os.path.exists(output):
        seen = {content_key(a, t): f"record {p.get('key')!r} of {output}" for a, t, p in iter_records(output)}
    counts = {"added": 0, "duplicates": 0, "unlabelled": 0}
    per_target: Dict[str, int] = {}
    chunk: List[Tuple[Any, Mapping[str, Any], Optional[Mapping[str, Any]], Optional[str]]] = []

    def flush() -> None:
        if not chunk:
            return
        added = append_records(output, chunk, on_duplicate=on_duplicate)
        counts["added"] += len(added)
        counts["duplicates"] += len(chunk) - len(added)
        chunk.clear()

    try:
        for rec in iter_import(paths, key_prefix=key_prefix):
            if not rec.targets and require_targets:
                counts["unlabelled"] += 1
                continue
            key = content_key(rec.atoms, rec.targets, where=rec.where)
            if key in seen:
                if on_duplicate == "error":
                    raise ValueError(f"{rec.where}: duplicate of {seen[key]} (same structure and targets; "
                                     "--strict fails on duplicates, leave it out to skip them)")
                counts["duplicates"] += 1
                continue
            seen[key] = rec.where
            for t in rec.targets:
                per_target[t] = per_target.get(t, 0) + 1
            chunk.append((rec.atoms, rec.targets, rec.provenance, None))
            if len(chunk) >= chunk_size:
                flush()
        flush()
    except ValueError as exc:
        if counts["added"]:
            raise ValueError(f"{exc} [{counts['added']} records read before it were already added to {output}; "
                             "a rerun skips them]") from None
        raise
    return ImportReport(counts["added"], counts["duplicates"], counts["unlabelled"], per_target, files)
