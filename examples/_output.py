"""Where the examples write (shared by the example scripts; not part of the package).

Policy: every example writes into ``--output-dir`` (default ``runs/examples/<name>`` under the current
directory, never the current directory itself).  Nothing existing is overwritten silently:

* default directory: when ``runs/examples/<name>`` already holds a file the example writes, the run goes to
  the first free ``runs/examples/<name>-2``, ``-3``, ... (so repeating a README command just works);
* a directory or file the user named: the example refuses (exit status 2, naming the file) unless
  ``--overwrite`` is given.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_ROOT = Path("runs") / "examples"


def output_dir(requested: Optional[str], name: str, files: Sequence[str], overwrite: bool = False) -> Path:
    """Create and return the directory to write ``files`` (names relative to it) into; see module docstring."""
    if requested is None:
        base = DEFAULT_ROOT / name
        out, k = base, 1
        while any((out / f).exists() for f in files):
            k += 1
            out = base.with_name(f"{name}-{k}")
    else:
        out = Path(requested)
        taken = [str(out / f) for f in files if (out / f).exists()]
        if taken and not overwrite:
            print(f"error: {taken[0]} exists; choose another --output-dir or pass --overwrite", file=sys.stderr)
            raise SystemExit(2)
    out.mkdir(parents=True, exist_ok=True)
    return out


def refuse_existing(path: Path, overwrite: bool = False) -> Path:
    """``path`` itself, after refusing (exit 2) if it exists and ``overwrite`` is off."""
    if path.exists() and not overwrite:
        print(f"error: {path} exists; choose another name or pass --overwrite", file=sys.stderr)
        raise SystemExit(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
