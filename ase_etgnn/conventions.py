"""Conventions shared by the whole package, each written once.

* Voigt order: ASE's ``xx yy zz yz xz xy`` (``ase.stress`` converts stress; :data:`VOIGT_PAIRS` indexes the
  Voigt forms of the piezoelectric and elastic tensors in the same order, no factors of 2).
* Crystal systems from space-group numbers (International Tables ranges).
* Torch dtype and device names as users write them (``"float32"``, ``"auto"``).
* The charge-neutrality (acoustic) sum rule of Born charges, ``sum_a Z_a = 0``.
* Atomic, durable file writes: a temporary file beside the target, fsync'd, renamed over it, directory fsync'd.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "VOIGT_PAIRS",
    "CRYSTAL_SYSTEMS",
    "DTYPES",
    "crystal_system_from_number",
    "resolve_dtype",
    "resolve_device",
    "apply_sum_rule",
    "fsync_dir",
    "atomic_write",
    "atomic_write_text",
    "atomic_torch_save",
]

#: Voigt index -> Cartesian pair, ASE order (xx, yy, zz, yz, xz, xy).
VOIGT_PAIRS: Tuple[Tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
_LAST_SPACE_GROUP = (2, 15, 74, 142, 167, 194, 230)  # last space-group number of each crystal system

#: dtype names accepted by the calculator, training and the CLI.
DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def crystal_system_from_number(number: int) -> str:
    """Crystal system (``"triclinic"`` ... ``"cubic"``) of a space-group number 1-230."""
    if not 1 <= int(number) <= 230:
        raise ValueError(f"space-group number must be in 1..230, got {number}")
    return next(name for upper, name in zip(_LAST_SPACE_GROUP, CRYSTAL_SYSTEMS) if number <= upper)


@contextlib.contextmanager
def spglib_quietly() -> Iterator[None]:
    """Calls to spglib inside this block do not warn ``DeprecationWarning`` about ``OLD_ERROR_HANDLING``
    (spglib 2.x asks every caller to opt in to exceptions; its callers here check the returned value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def resolve_dtype(name: str) -> torch.dtype:
    """``"float32"`` / ``"float64"`` -> torch dtype; anything else is an error naming the choices."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def resolve_device(name: str, local_rank: Optional[int] = None) -> torch.device:
    """``"auto"`` = CUDA when available, else CPU; ``"cuda"`` without an index takes ``local_rank`` (DDP).

    A CUDA device on a machine or torch build without CUDA is an error (no silent fallback to the CPU).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
            raise ValueError(f"device={name!r} requested but {build}; use device='cpu' or 'auto'")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
    return dev


def apply_sum_rule(born: np.ndarray, atom_axis: int = -3) -> np.ndarray:
    """Charge-neutrality sum rule ``sum_a Z_a = 0``: subtract the mean Born charge over atoms (e).

    ``born``: ``(..., N, 3, 3)``; the atom axis is ``atom_axis`` (default the one before the 3x3 block).
    """
    z = np.asarray(born, dtype=np.float64)  # (..., N, 3, 3)
    return z - z.mean(axis=atom_axis, keepdims=True)


def fsync_dir(directory: str) -> None:
    """fsync a directory so that a rename in it survives a crash (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Write ``path`` atomically and durably.

    ``write(tmp)`` fills a temporary file beside ``path``; it gets the mode of the file it replaces, or the
    mode a plain ``open()`` would give (0666 less the umask), is fsync'd and renamed over ``path``, and the
    directory is fsync'd.  ``path`` is the old or the new file at every moment; a symbolic link is written
    through (its target is replaced, the link kept).
    """
    path = os.path.realpath(os.fspath(path))
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        fd = -1
        write(tmp)  # may replace tmp by a file of another mode
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of a text file."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """:func:`atomic_write` of ``torch.save(obj)`` (checkpoints; model files go through ``save_model``)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
