"""The on-disk record store: HDF5 data sets of structures with (partial) DFT labels.

File layout (format version 1, documented in ``docs/dataset_format.md``)::

    /                       attrs: format="ase_etgnn-dataset", format_version=1, units=<JSON>,
                                   next_id=<int>
    /records/r00000000/     attrs: key=<str>, provenance=<JSON str>, n_atoms=<int>, complete=True
        numbers    (N,)   int32
        positions  (N,3)  float64  Angstrom
        cell       (3,3)  float64  Angstrom
        pbc        (3,)   bool
        targets/<name>    float64  registry units (``ase_etgnn.properties``); absent = missing

Writes are crash-safe: :func:`append_record` takes an exclusive ``fcntl.flock`` on ``path + ".lock"``,
reads the file into memory, appends there (HDF5 never writes to disk, so a full disk cannot leave the
library in a broken state), writes the new image to a temporary file in the same directory, fsyncs it and
``os.replace``-s it over the original (an atomic rename on POSIX).  A reader therefore sees either the
old or the new file, never a half-written record, and a crash or a full disk can never damage earlier
records.  A symlinked ``path`` is resolved once: the lock and the write go to the link's target and the
link stays a link.  The ``complete`` attribute is written last inside a record; readers ignore records
without it.  Memory: an append holds the whole file in memory (up to three copies, briefly).

Reading: :class:`RecordReader` reads records (structure, targets, provenance) through one open handle;
:func:`open_read` and :func:`read_named` let a reader that opens the file itself (the graph dataset of
``ase_etgnn.dataset``, once per DataLoader worker) read records by their group name.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import io
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from .conventions import fsync_dir
from .properties import PROPERTIES

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DatasetFormatError",
    "append_record",
    "append_records",
    "content_key",
    "record_keys",
    "read_record",
    "read_named",
    "iter_records",
    "open_read",
    "RecordReader",
    "RecordSet",
    "count_records",
    "dataset_summary",
    "validate_targets",
]

FORMAT_NAME = "ase_etgnn-dataset"
FORMAT_VERSION = 1
_RECORDS = "records"


class DatasetFormatError(ValueError):
    """A dataset file is missing, not HDF5, not an ase_etgnn dataset or has an invalid record."""


# ----------------------------------------------------------------------------------------- validation
def _as_float_array(value: Any, where: str, per_atom: bool = False) -> np.ndarray:
    """``value`` as float64 (unchanged values); ``ValueError`` naming ``where`` (and the atom when
    ``per_atom``: axis 0 counts atoms) for non-numeric or non-finite entries."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{where}: cannot convert to an array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{where}: expected real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)  # lossless for float16/32/64 and ints < 2**53
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))
        at = (f"atom {bad[0][0]}" + (f", component {tuple(int(i) for i in bad[0][1:])}" if arr.ndim > 1 else "")
              if per_atom and arr.ndim >= 1 else f"index {tuple(int(i) for i in bad[0])}")
        raise ValueError(f"{where}: contains NaN or inf at {at} ({len(bad)} bad values)")
    return arr


def validate_targets(targets: Mapping[str, Any], n_atoms: int, where: str = "targets") -> Dict[str, np.ndarray]:
    """Check names, shapes and finiteness of ``targets``; return float64 copies (values unchanged).

    Raises ``ValueError`` naming ``where``, the offending target and, for per-atom targets, the atom.
    """
    out: Dict[str, np.ndarray] = {}
    for name, value in targets.items():
        if name not in PROPERTIES:
            raise ValueError(f"{where}: unknown target {name!r}; known targets: {sorted(PROPERTIES)}")
        spec = PROPERTIES[name]
        expected = spec.shape(n_atoms)
        arr = _as_float_array(value, f"{where}: target {name!r}", per_atom=spec.per_atom)
        if arr.shape != expected:
            raise ValueError(
                f"{where}: target {name!r} has shape {arr.shape}, expected {expected} ({spec.units}"
                + (f", {n_atoms} atoms" if spec.per_atom else "") + ")"
            )
        out[name] = arr
    return out


def _validate_atoms(atoms, where: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    numbers = np.asarray(atoms.get_atomic_numbers())
    if numbers.ndim != 1 or len(numbers) == 0:
        raise ValueError(f"{where}: structure has no atoms")
    if np.any(numbers <= 0) or np.any(numbers > 118):
        raise ValueError(f"{where}: invalid atomic numbers {sorted(set(numbers.tolist()))}")
    positions = _as_float_array(atoms.get_positions(), f"{where}: positions", per_atom=True)
    cell = _as_float_array(np.asarray(atoms.get_cell()), f"{where}: cell")
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    if pbc.all() and abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(f"{where}: periodic structure with a singular cell")
    return numbers.astype(np.int32), positions, cell, pbc


def _content_key(numbers, positions, cell, pbc, targets: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha1()
    for arr in (numbers, positions, cell, pbc):
        h.update(np.ascontiguousarray(arr).tobytes())
    for name in sorted(targets):
        h.update(name.encode())
        h.update(np.ascontiguousarray(targets[name]).tobytes())
    return "sha1:" + h.hexdigest()


def content_key(atoms, targets: Mapping[str, Any], where: str = "content_key") -> str:
    """The default record key: SHA1 of the structure and targets exactly as they would be stored.

    Two records with equal keys hold identical numbers; importers use it to skip duplicates whatever key
    the copy already in a data set was stored under.  ``where`` (e.g. ``"a.xyz frame 3"``) starts the
    message of a validation error.
    """
    numbers, positions, cell, pbc = _validate_atoms(atoms, where)
    return _content_key(numbers, positions, cell, pbc, validate_targets(targets, len(numbers), where))


# ------------------------------------------------------------------------------------------ file open
def _h5py():
    import h5py

    return h5py


def open_read(path: str):
    """Open ``path`` read-only (an ``h5py.File``, closed by the caller) and check that it is an ase_etgnn
    dataset of a supported version."""
    h5py = _h5py()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset file {path!r} does not exist")
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise DatasetFormatError(
            f"{path}: cannot be opened as HDF5 (corrupt, truncated or not an HDF5 file): {exc}"
        ) from None
    try:
        _check_header(f, path)
    except Exception:
        f.close()
        raise
    return f


def _check_header(f, path: str) -> None:
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        raise DatasetFormatError(f"{path}: HDF5 file is not an ase_etgnn dataset (format attribute {fmt!r})")
    version = int(f.attrs.get("format_version", -1))
    if version > FORMAT_VERSION or version < 1:
        raise DatasetFormatError(
            f"{path}: dataset format version {version} is not supported (this reader: <= {FORMAT_VERSION})"
        )
    if _RECORDS not in f:
        raise DatasetFormatError(f"{path}: missing '/{_RECORDS}' group")


def _complete_names(f) -> List[str]:
    """Names of complete records, in append order."""
    grp = f[_RECORDS]
    names = [n for n in grp.keys() if bool(grp[n].attrs.get("complete", False))]
    names.sort()
    return names


def _record_key(g, path: str, name: str) -> str:
    """The ``key`` attribute of record group ``g`` (``DatasetFormatError`` naming the record if absent)."""
    try:
        return _attr_str(g.attrs["key"])
    except Exception as exc:
        raise DatasetFormatError(f"{path}: record {name!r}: no readable 'key' attribute ({exc})") from None


def _attr_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _init_file(f) -> None:
    f.attrs["format"] = FORMAT_NAME
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["units"] = json.dumps(
        {"positions": "Angstrom", "cell": "Angstrom", **{n: s.units for n, s in PROPERTIES.items()}}
    )
    f.attrs["next_id"] = 0
    f.create_group(_RECORDS)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    lock_path = path + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass(frozen=True)
class _Prepared:
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    targets: Dict[str, np.ndarray]
    provenance: str
    key: str


def _prepare(atoms, targets: Mapping[str, Any], provenance: Optional[Mapping[str, Any]], key: Optional[str],
             where: str) -> _Prepared:
    numbers, positions, cell, pbc = _validate_atoms(atoms, where)
    tgt = validate_targets(targets, len(numbers), where)
    try:
        prov = json.dumps(dict(provenance) if provenance is not None else {}, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: provenance is not JSON-serialisable: {exc}") from None
    if key is None:
        key = _content_key(numbers, positions, cell, pbc, tgt)
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: key must be a non-empty string, got {key!r}")
    return _Prepared(numbers, positions, cell, pbc, tgt, prov, key)


def _write_record(f, rec: _Prepared) -> str:
    next_id = int(f.attrs.get("next_id", 0))
    grp_all = f[_RECORDS]
    # never reuse a name (also skips names of incomplete leftovers)
    while f"r{next_id:08d}" in grp_all:
        next_id += 1
    name = f"r{next_id:08d}"
    g = grp_all.create_group(name)
    g.create_dataset("numbers", data=rec.numbers)
    g.create_dataset("positions", data=rec.positions)
    g.create_dataset("cell", data=rec.cell)
    g.create_dataset("pbc", data=rec.pbc)
    tg = g.create_group("targets")
    for tname, arr in rec.targets.items():
        ds = tg.create_dataset(tname, data=arr)
        ds.attrs["units"] = PROPERTIES[tname].units
    g.attrs["key"] = rec.key
    g.attrs["provenance"] = rec.provenance
    g.attrs["n_atoms"] = int(len(rec.numbers))
    g.attrs["complete"] = True  # completion marker: written last
    f.attrs["next_id"] = next_id + 1
    return name


def append_records(path, items: Iterable[Tuple[Any, Mapping[str, Any], Optional[Mapping[str, Any]], Optional[str]]],
                   on_duplicate: str = "error") -> List[int]:
    """Append several ``(atoms, targets, provenance, key)`` records in ONE atomic transaction.

    All records are validated before anything is written; either all are appended or none.
    ``on_duplicate``: ``"error"`` (raise ``ValueError`` on a key already present) or ``"skip"``.
    Returns the indices (positions among complete records) of the appended records (skipped: none).
    """
    if on_duplicate not in ("error", "skip"):
        raise ValueError(f"on_duplicate must be 'error' or 'skip', got {on_duplicate!r}")
    # a symlink is resolved once: lock and write go to its target, the link itself is kept
    path = os.path.realpath(os.fspath(path))
    prepared = [
        _prepare(atoms, targets, prov, key, f"{path}: new record " + (repr(key) if key else f"#{i}"))
        for i, (atoms, targets, prov, key) in enumerate(items)
    ]
    _h5py()  # a clear error before any work if h5py is missing
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    with _locked(path):
        base = os.path.basename(path)
        for stale in glob.glob(os.path.join(directory, f".{base}.*.tmp")):  # left by a crashed writer
            with contextlib.suppress(OSError):
                os.remove(stale)
        exists = os.path.exists(path)
        image: Optional[bytes] = None
        if exists:
            open_read(path).close()  # refuse to append to a corrupt / foreign file
            with open(path, "rb") as fh:
                image = fh.read()
        # HDF5 works on an in-memory image only: a write error (full disk) then surfaces as a plain
        # OSError from Python below, never inside the HDF5 library (which floods stderr and can crash)
        indices: List[int] = []
        with _in_memory(image) as f:
            if image is None:
                _init_file(f)
            names = _complete_names(f)
            keys = {_record_key(f[_RECORDS][n], path, n) for n in names}
            n_complete = len(names)
            for rec in prepared:
                if rec.key in keys:
                    if on_duplicate == "skip":
                        continue
                    raise ValueError(f"{path}: a record with key {rec.key!r} already exists")
                _write_record(f, rec)
                keys.add(rec.key)
                indices.append(n_complete)
                n_complete += 1
            f.flush()
            new_image = f.id.get_file_image()
        if not indices and exists:
            return indices  # only duplicates: nothing to write
        fd, tmp = _create_tmp(directory, base)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(new_image)
                fh.flush()
                os.fsync(fh.fileno())
            if exists:
                shutil.copymode(path, tmp)
            os.replace(tmp, path)
            fsync_dir(directory)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if isinstance(exc, OSError):
                size = len(new_image)
                raise OSError(exc.errno, f"{path}: cannot append {len(indices)} records: {exc.strerror or exc} while "
                              f"writing a {size / 1e6:.3g} MB copy in {directory} (needs that much free space); "
                              f"the data set is unchanged") from None
            raise
    return indices


def _in_memory(image: Optional[bytes]):
    """An HDF5 file held in memory, opened read-write: a copy of ``image``, or a new empty file."""
    h5py = _h5py()
    if hasattr(h5py.File, "in_memory"):  # h5py >= 3.12: core driver, fast
        return h5py.File.in_memory(image) if image is not None else h5py.File.in_memory(libver=("v110", "latest"))
    bio = io.BytesIO(image or b"")  # older h5py: file-like object driver
    return h5py.File(bio, "r+") if image is not None else h5py.File(bio, "w", libver=("v110", "latest"))


def _create_tmp(directory: str, base: str) -> Tuple[int, str]:
    """A new ``.<base>.<random>.tmp`` in ``directory`` opened for writing, mode 0666 minus the umask."""
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def append_record(path, atoms, targets: Mapping[str, Any], provenance: Optional[Mapping[str, Any]] = None,
                  key: Optional[str] = None) -> int:
    """Append one structure and its targets to the HDF5 dataset ``path`` (created if missing).

    Args:
        path: dataset file.
        atoms: ``ase.Atoms`` (numbers, positions, cell, pbc are stored).
        targets: any subset of the registry properties, in registry units and shapes
            (``energy`` scalar eV, ``forces`` (N,3) eV/A, ``stress`` (3,3) eV/A^3 ASE sign,
            ``born_effective_charges`` (N,3,3) e, ``dielectric_tensor`` (3,3),
            ``piezoelectric_tensor`` (3,3,3) C/m^2).  Values are stored as float64, unchanged.
        provenance: JSON-serialisable dict (code, inputs, parameters, ...).
        key: unique record key (default: SHA1 of structure + targets).  A duplicate raises ``ValueError``.

    Returns:
        index of the new record (position among complete records, usable with :func:`read_record`).

    Crash-safe and process-safe (``fcntl.flock`` on ``path + ".lock"``, copy + atomic ``os.replace``).
    """
    return append_records(path, [(atoms, targets, provenance, key)])[0]


# -------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class RecordSet:
    """Which complete records of a data set file, by record group name, in order.

    Holds no file handle (cheap to pickle to DataLoader workers); made by :meth:`RecordReader.records`, so
    that a graph dataset over it need not open the file again to list the records.
    """

    path: str
    names: Tuple[str, ...]

    def subset(self, indices: Sequence[int]) -> "RecordSet":
        """The records at positions ``indices`` of this set (``IndexError`` naming those out of range)."""
        n = len(self.names)
        bad = [int(i) for i in indices if not -n <= int(i) < n]
        if bad:
            raise IndexError(f"{self.path}: indices {bad[:5]} are out of range ({n} records); was the split made "
                             "for another data set?")
        return RecordSet(self.path, tuple(self.names[int(i)] for i in indices))


class RecordReader:
    """Plain reader of a data set's complete records: ``(atoms, targets, provenance)``, no graphs.

    Opens the file once, in ``__init__`` (``FileNotFoundError`` / ``DatasetFormatError`` there), and holds
    that handle until :meth:`close` (use it as a context manager).  The set of records is fixed at opening.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = open_read(self.path)
        self._names: Tuple[str, ...] = tuple(_complete_names(self._file))

    def __len__(self) -> int:
        return len(self._names)

    def __enter__(self) -> "RecordReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
        self._file = None

    def _group(self, index: int):
        if not -len(self._names) <= index < len(self._names):
            raise IndexError(f"{self.path}: record index {index} out of range ({len(self._names)} records)")
        name = self._names[index]
        return self._file[_RECORDS][name], name

    def read(self, index: int, properties: Optional[Sequence[str]] = None
             ) -> Tuple[Any, Dict[str, np.ndarray], Dict[str, Any]]:
        """``(atoms, targets, provenance)`` of record ``index`` (negative: from the end); ``properties``
        limits the targets read.  ``provenance`` carries the record ``key`` (see :func:`read_record`)."""
        g, name = self._group(index)
        return _read_group(g, self.path, name, properties)

    def key(self, index: int) -> str:
        """The key of record ``index``, without reading the record."""
        g, name = self._group(index)
        return _record_key(g, self.path, name)

    def records(self, indices: Optional[Sequence[int]] = None) -> RecordSet:
        """The records ``indices`` (default: all) as a :class:`RecordSet` (for ``ase_etgnn.dataset.ETGNNDataset``)."""
        every = RecordSet(os.path.abspath(self.path), self._names)
        return every if indices is None else every.subset(indices)


def count_records(path) -> int:
    """Number of complete records in ``path``."""
    with RecordReader(path) as reader:
        return len(reader)


def record_keys(path) -> Set[str]:
    """Keys of the complete records in ``path`` (empty set when the file does not exist)."""
    if not os.path.exists(os.fspath(path)):
        return set()
    with RecordReader(path) as reader:
        return {reader.key(i) for i in range(len(reader))}


_STRUCTURE = {"numbers": "int", "positions": "(N, 3)", "cell": "(3, 3)", "pbc": "(3,)"}


def _read_group(g, path: str, name: str, properties: Optional[Sequence[str]] = None):
    """``(atoms, targets, provenance)`` of record group ``g``; ``DatasetFormatError`` naming the record
    (group name and key) and what is wrong with it."""
    try:
        key: Optional[str] = _attr_str(g.attrs["key"])
    except Exception:
        key = None
    where = f"{path}: record {name!r}" + (f" (key {key!r})" if key is not None else "")
    if key is None:
        raise DatasetFormatError(f"{where}: no readable 'key' attribute")
    missing = [m for m in _STRUCTURE if m not in g]
    if missing:
        raise DatasetFormatError(f"{where}: missing member(s) {missing} (a record holds numbers, positions, "
                                 "cell, pbc and targets/)")
    try:
        numbers = np.asarray(g["numbers"][()], dtype=np.int64)
        positions = np.asarray(g["positions"][()], dtype=np.float64)
        cell = np.asarray(g["cell"][()], dtype=np.float64)
        pbc = np.asarray(g["pbc"][()], dtype=bool)
        targets: Dict[str, np.ndarray] = {}
        tg = g["targets"] if "targets" in g else {}
        for tname in tg.keys():
            if properties is not None and tname not in properties:
                continue
            targets[tname] = np.asarray(tg[tname][()], dtype=np.float64)
        prov_raw = g.attrs.get("provenance", "{}")
        provenance = json.loads(_attr_str(prov_raw))
    except DatasetFormatError:
        raise
    except Exception as exc:
        raise DatasetFormatError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
    n = len(numbers) if numbers.ndim == 1 else -1
    expected = {"numbers": (n,), "positions": (n, 3), "cell": (3, 3), "pbc": (3,)}
    for member, arr in (("numbers", numbers), ("positions", positions), ("cell", cell), ("pbc", pbc)):
        if arr.shape != expected[member] or n <= 0:
            raise DatasetFormatError(f"{where}: {member!r} has shape {arr.shape}, expected "
                                     f"{expected[member] if n > 0 else '(N,) with N >= 1'}"
                                     + (f" ({n} atoms)" if n > 0 and member != "numbers" else ""))
    if "n_atoms" in g.attrs and int(g.attrs["n_atoms"]) != n:
        raise DatasetFormatError(f"{where}: attribute n_atoms = {int(g.attrs['n_atoms'])} but 'numbers' "
                                 f"holds {n} atoms")
    try:
        targets = validate_targets(targets, n, where)
    except ValueError as exc:
        raise DatasetFormatError(str(exc)) from None
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
    provenance = dict(provenance)
    provenance.setdefault("key", key)
    return atoms, targets, provenance




def read_named(f, path: str, name: str, properties: Optional[Sequence[str]] = None
               ) -> Tuple[Any, Dict[str, np.ndarray], Dict[str, Any]]:
    """``(atoms, targets, provenance)`` of the record with group name ``name`` (a :class:`RecordSet` entry)
    in ``f``, a file of ``path`` opened by :func:`open_read`; ``properties`` limits the targets read."""
    return _read_group(f[_RECORDS][name], path, name, properties)

def read_record(path, index: int) -> Tuple[Any, Dict[str, np.ndarray], Dict[str, Any]]:
    """Return ``(atoms, targets, provenance)`` of the complete record number ``index``.

    ``provenance`` additionally carries the record ``key`` (under ``"key"`` unless the provenance
    already had one).  Negative indices count from the end.
    """
    with RecordReader(path) as reader:
        return reader.read(index)


def iter_records(path, properties: Optional[Sequence[str]] = None):
    """Yield ``(atoms, targets, provenance)`` for every complete record (one open handle)."""
    with RecordReader(path) as reader:
        for i in range(len(reader)):
            yield reader.read(i, properties)


def dataset_summary(path) -> Dict[str, Any]:
    """Counts for ``etgnn dataset info``: records, atoms, per-target and per-element counts.

    Every record is read and checked; damaged ones are listed under ``bad_records`` (``{"record", "key",
    "error"}``) and left out of the counts instead of failing the whole summary.
    """
    path = os.fspath(path)
    per_target: Dict[str, int] = {n: 0 for n in PROPERTIES}
    per_element_atoms: Dict[str, int] = {}
    per_element_structures: Dict[str, int] = {}
    n_atoms_total = 0
    sizes: List[int] = []
    bad: List[Dict[str, Any]] = []
    with open_read(path) as f:
        grp = f[_RECORDS]
        names = _complete_names(f)
        n_incomplete = len(grp) - len(names)
        for name in names:
            g = grp[name]
            try:
                atoms, targets, _ = _read_group(g, path, name)
            except DatasetFormatError as exc:
                key: Optional[str] = None
                with contextlib.suppress(Exception):
                    key = _attr_str(g.attrs["key"])
                bad.append({"record": name, "key": key, "error": str(exc)})
                continue
            numbers = atoms.numbers
            sizes.append(len(numbers))
            n_atoms_total += len(numbers)
            uniq, counts = np.unique(numbers, return_counts=True)
            for z, c in zip(uniq.tolist(), counts.tolist()):
                sym = chemical_symbols[z]
                per_element_atoms[sym] = per_element_atoms.get(sym, 0) + int(c)
                per_element_structures[sym] = per_element_structures.get(sym, 0) + 1
            for t in targets:
                per_target[t] = per_target.get(t, 0) + 1
        version = int(f.attrs["format_version"])
    return {
        "path": path,
        "format_version": version,
        "n_records": len(names),
        "n_incomplete_records": n_incomplete,
        "bad_records": bad,
        "n_atoms": n_atoms_total,
        "atoms_per_structure": {"min": min(sizes, default=0), "max": max(sizes, default=0),
                                "mean": float(np.mean(sizes)) if sizes else 0.0},
        "per_target": {k: v for k, v in per_target.items() if v},
        "per_element_atoms": dict(sorted(per_element_atoms.items())),
        "per_element_structures": dict(sorted(per_element_structures.items())),
    }
