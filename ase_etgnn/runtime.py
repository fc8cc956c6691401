"""Process-level runtime settings that make the CPU forward pass fast: explicit, opt-in, idempotent.

Nothing here runs at import. Two problems measured on the project's CPU (issue 20):

* **Page-fault storm.** glibc serves every allocation above its mmap threshold (at most 32 MiB) with a
  fresh ``mmap`` and returns it with ``munmap`` on free, so each large temporary of the forward pass
  ([n_triplets, hidden] float32 tensors are 10-100 MB at a few hundred atoms) is faulted in page by page
  on every step. ``configure_allocator()`` calls glibc's ``mallopt`` so that large blocks come from the
  heap and stay mapped between steps (``M_MMAP_MAX = 0``, a large ``M_TRIM_THRESHOLD``). The cost is a
  resident set that stays near the peak of the previous step instead of shrinking between steps.
  Linux/glibc only; elsewhere (macOS, Windows, musl) it does nothing and says so.
  Opt out with the environment variable ``ASE_ETGNN_NO_MALLOPT=1`` (or by not calling it).
* **OpenMP spin-waiting.** libgomp reads ``OMP_WAIT_POLICY`` once, when the library is loaded, which
  happens at ``import torch``. ``ase_etgnn`` itself imports torch, so no function in this package can
  change the policy of the running process: ``openmp_wait_policy()`` reports what is in effect and
  ``set_openmp_wait_policy()`` only helps in a launcher that calls it before anything imports torch.
  From a shell: ``OMP_WAIT_POLICY=PASSIVE python my_md.py`` (or ``OMP_NUM_THREADS=1`` on a shared
  machine, see README "Threads").
* **Optional compilation.** ``compile_trunk(model, batch)`` compiles the trunk blocks with
  ``torch.compile`` (opt-in, off by default), checked against eager on an example batch, with the eager
  modules restored and the reason reported if it fails.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:
    from .graph import GraphBatch

__all__ = [
    "AllocatorStatus",
    "CompileStatus",
    "compile_trunk",
    "configure_allocator",
    "allocator_status",
    "openmp_wait_policy",
    "set_openmp_wait_policy",
]

# glibc <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

#: default trim threshold, bytes: free memory at the top of the heap is kept up to this size
DEFAULT_TRIM_THRESHOLD = 1 << 30  # 1 GiB


@dataclass(frozen=True)
class AllocatorStatus:
    """What ``configure_allocator`` did.

    Attributes:
        applied: the mallopt settings are in effect in this process.
        reason: one line why (or why not).
        trim_threshold: M_TRIM_THRESHOLD set, bytes (None if not applied).
    """

    applied: bool
    reason: str
    trim_threshold: Optional[int] = None


_status: Optional[AllocatorStatus] = None  # set by the first configure_allocator() call only


def _glibc() -> Optional[ctypes.CDLL]:
    """The process's glibc, or None when not on Linux with glibc."""
    if not sys.platform.startswith("linux"):
        return None
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def configure_allocator(trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> AllocatorStatus:
    """Keep large temporaries mapped between forward passes (glibc ``mallopt``); idempotent.

    Sets ``M_MMAP_MAX = 0`` (large blocks from the heap, not one ``mmap`` each) and ``M_TRIM_THRESHOLD
    = trim_threshold`` bytes (free heap top returned to the OS only beyond this). Measured on the
    project's CPU (``benchmarks/forward_speed.py``, 576-atom quartz, shipped model): 0.2 M page faults
    per step to none, 1.3x faster. Affects the whole process (all malloc users), which is
    why it is never done at import: the calculator or the user calls it.

    Returns an ``AllocatorStatus``; a no-op (``applied=False`` with the reason) when
    ``ASE_ETGNN_NO_MALLOPT`` is set to a non-empty value other than ``0``, or off Linux/glibc.
    Calling it again returns the first call's status and changes nothing.
    """
    global _status
    if _status is not None:
        return _status
    if os.environ.get("ASE_ETGNN_NO_MALLOPT", "") not in ("", "0"):
        _status = AllocatorStatus(False, "disabled by ASE_ETGNN_NO_MALLOPT")
        return _status
    if int(trim_threshold) <= 0 or int(trim_threshold) >= 2**31:
        raise ValueError(f"trim_threshold must be in (0, 2**31) bytes, got {trim_threshold}")
    libc = _glibc()
    if libc is None:
        _status = AllocatorStatus(False, f"not Linux/glibc ({sys.platform}, {platform.libc_ver()[0] or 'unknown libc'})")
        return _status
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    ok_mmap = libc.mallopt(_M_MMAP_MAX, 0) == 1
    if not (ok_trim and ok_mmap):
        _status = AllocatorStatus(False, "glibc mallopt refused the settings")
        return _status
    _status = AllocatorStatus(True, "glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD set", int(trim_threshold))
    return _status


def allocator_status() -> Optional[AllocatorStatus]:
    """The status of the first ``configure_allocator()`` call, or None if it was never called."""
    return _status


def openmp_wait_policy() -> Optional[str]:
    """The ``OMP_WAIT_POLICY`` of this process's environment (None if unset: libgomp then spins)."""
    return os.environ.get("OMP_WAIT_POLICY")


def set_openmp_wait_policy(policy: str = "PASSIVE") -> bool:
    """Set ``OMP_WAIT_POLICY`` if it is unset and torch is not imported yet; True if it will take effect.

    libgomp reads the variable once, when ``import torch`` loads it, so after that (and ``import
    ase_etgnn`` imports torch) this returns False and changes nothing; a value the user set is never
    overwritten (returns True only if it equals ``policy``). For a launcher script, or use the shell:
    ``OMP_WAIT_POLICY=PASSIVE python ...``.
    """
    policy = policy.upper()
    if policy not in ("PASSIVE", "ACTIVE"):
        raise ValueError(f"OMP_WAIT_POLICY must be 'PASSIVE' or 'ACTIVE', got {policy!r}")
    current = os.environ.get("OMP_WAIT_POLICY")
    if current is not None:
        return current.upper() == policy
    if "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = policy
    return True


@dataclass(frozen=True)
class CompileStatus:
    """What ``compile_trunk`` did.

    Attributes:
        compiled: names of the trunk modules now compiled (empty if compilation failed).
        reason: one line: success, or the error that made it keep the eager modules.
        max_abs_diff: largest output difference compiled vs eager on the example batch (None on failure).
    """

    compiled: tuple
    reason: str
    max_abs_diff: Optional[float] = None


def _trunk_modules(model) -> dict:
    """The trunk blocks of an ``ETGNN`` by attribute path (heads stay eager)."""
    mods = {"edge_embedding": model.edge_embedding}
    mods.update({f"edge_blocks.{i}": b for i, b in enumerate(model.edge_blocks)})
    for name in ("triplet_embedding", "node_output"):
        if hasattr(model, name):
            mods[name] = getattr(model, name)
    if hasattr(model, "triplet_blocks"):
        mods.update({f"triplet_blocks.{i}": b for i, b in enumerate(model.triplet_blocks)})
    return mods


def compile_trunk(model, example_batch: "GraphBatch", rtol: float = 1e-4) -> CompileStatus:
    """Opt-in: ``torch.compile`` the trunk blocks of ``model`` in place, module by module (dynamic shapes).

    Parameter names and the state dict do not change (``nn.Module.compile``). The example batch (from
    ``collate_graphs``) is run eager and compiled; if compilation raises, or the outputs differ by more
    than ``rtol`` times their largest value, the eager modules are restored and the status says why
    (nothing is left half-compiled). Whole-model compilation fails in torch 2.13 (the scatter into the
    energy buffer), hence per module. Inference only: the training path's double backward is not
    supported by compiled modules. Measured on the project's CPU (576-atom quartz, ``models/sio2.pt``,
    one thread, ``benchmarks/forward_speed.py --compile``): 0.96x and 1.08x the eager CPU time per step
    in two runs, so it does not pay there; it is kept as an opt-in for other hardware.
    """
    mods = _trunk_modules(model)
    with torch.no_grad():
        ref = model(example_batch)
    try:
        for mod in mods.values():
            mod.compile(dynamic=True)
        with torch.no_grad():
            out = model(example_batch)
        diff = max(float((out[k] - ref[k]).abs().max()) for k in ref)
        scale = max(float(ref[k].abs().max()) for k in ref)
        if not diff <= rtol * max(scale, 1.0):
            raise RuntimeError(f"compiled outputs differ from eager by {diff:.3g} (scale {scale:.3g})")
    except Exception as exc:  # any compiler failure: back to the eager modules, reported
        for mod in mods.values():
            mod._compiled_call_impl = None
        return CompileStatus((), f"kept eager modules: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return CompileStatus(tuple(mods), "compiled with torch.compile(dynamic=True)", diff)
