"""A training run's directory: which files it holds, the refusal to start over an earlier run, the epoch
log (``log.jsonl``, one JSON object per epoch, fsync'd line by line) and what rank 0 prints.

Files: ``config.json``, ``split.json``, ``log.jsonl``, ``checkpoint.pt`` (latest state, atomic),
``best.pt`` (``save_model`` of the best validation loss), ``summary.json``.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping

from ..conventions import atomic_write_text
from ..properties import FORCES_CONSERVATIVE, PROPERTIES, loss_target
from .config import TrainConfig

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "LOG_NAME", "SUMMARY_NAME", "RUN_FILES", "RunDir", "format_epoch",
           "progress_bar", "erase_progress_bar"]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"
#: files of a run directory; a fresh run refuses to start where any of them exists
RUN_FILES = ("config.json", "split.json", LOG_NAME, CHECKPOINT_NAME, BEST_NAME, SUMMARY_NAME)


@dataclass(frozen=True)
class RunDir:
    """The output directory of a run (absolute ``path``)."""

    path: str

    @property
    def checkpoint(self) -> str:
        return os.path.join(self.path, CHECKPOINT_NAME)

    @property
    def best(self) -> str:
        return os.path.join(self.path, BEST_NAME)

    @property
    def log(self) -> str:
        return os.path.join(self.path, LOG_NAME)

    def earlier_run(self, resume: bool, overwrite: bool) -> List[str]:
        """The files of an earlier run that ``overwrite`` will move aside ([] when resuming or none exist);
        ``ValueError`` for ``resume`` with ``overwrite``, or for an earlier run without ``overwrite``."""
        if resume and overwrite:
            raise ValueError("--resume continues the run in the output directory, --overwrite replaces it: "
                             "choose one")
        old = [] if resume else [n for n in RUN_FILES if os.path.exists(os.path.join(self.path, n))]
        if old and not overwrite:
            raise ValueError(
                f"{self.path} already holds a training run ({', '.join(old)}); continue it with --resume, "
                f"choose another --output-dir, or pass --overwrite to move its files to "
                f"{os.path.join(self.path, 'replaced-<time>')}/ and start afresh")
        return old

    def move_aside(self, names: List[str]) -> str:
        """Move the files ``names`` into ``replaced-<UTC time>/`` of this directory; returns that folder."""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = os.path.join(self.path, f"replaced-{stamp}")
        k = 1
        while os.path.exists(dest):
            k += 1
            dest = os.path.join(self.path, f"replaced-{stamp}-{k}")
        os.makedirs(dest)
        for n in names:
            os.replace(os.path.join(self.path, n), os.path.join(dest, n))
        return dest

    def start(self, config: TrainConfig, split: Mapping[str, List[int]]) -> None:
        """A fresh run's first files: its settings, its split and an empty log."""
        atomic_write_text(os.path.join(self.path, "config.json"), json.dumps(config.to_dict(), indent=2) + "\n")
        atomic_write_text(os.path.join(self.path, "split.json"), json.dumps(split) + "\n")
        atomic_write_text(self.log, "")

    def read_history(self, last_epoch: int) -> List[Dict[str, Any]]:
        """The logged epochs up to ``last_epoch`` (a resumed run drops those after its checkpoint)."""
        if not os.path.exists(self.log):
            return []
        with open(self.log) as fh:
            history = [json.loads(line) for line in fh if line.strip()]
        return [h for h in history if h.get("epoch", 0) <= last_epoch]

    def write_history(self, history: List[Mapping[str, Any]]) -> None:
        """Replace the log by ``history`` (atomic)."""
        atomic_write_text(self.log, "".join(json.dumps(h) + "\n" for h in history))

    def append_log(self, record: Mapping[str, Any]) -> None:
        """Append one epoch to the log and fsync it."""
        with open(self.log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_text(os.path.join(self.path, SUMMARY_NAME), json.dumps(summary, indent=2) + "\n")


_SHORT = {"energy": "E", "forces": "F", "born_effective_charges": "Z*", "dielectric_tensor": "eps",
          "piezoelectric_tensor": "e_piezo", "stress": "S", FORCES_CONSERVATIVE: "-dE/dr"}


def format_epoch(rec: Mapping[str, Any], epochs: int) -> str:
    """One progress line: losses (dimensionless), validation MAE per loss term with units, timing."""
    def unit(k: str) -> str:
        u = PROPERTIES[loss_target(k)].units if loss_target(k) in PROPERTIES else ""
        return "" if u in ("", "1") else f" {u}"

    maes = ", ".join(f"{_SHORT.get(k, k)} {v:.4g}{unit(k)}" for k, v in rec["val_mae"].items())
    if rec["train_loss"] is None:
        return (f"epoch {rec['epoch']:4d}/{epochs} (before training) val loss {rec['val_loss']:.4e} | "
                f"val MAE {maes}" + (" *" if rec["best"] else ""))
    return (f"epoch {rec['epoch']:4d}/{epochs} lr {rec['lr']:.2e} train loss {rec['train_loss']:.4e} "
            f"val loss {rec['val_loss']:.4e} | val MAE {maes} | {rec['time_s']:.1f} s/epoch, "
            f"{rec['train_structures_per_s']:.1f} structures/s" + (" *" if rec["best"] else ""))


def progress_bar(i: int, n: int, epoch: int, loss: float, t0: float) -> None:
    """Redraw the progress bar on stderr after batch ``i`` of ``n`` (``t0``: ``perf_counter`` at the start)."""
    width = 28
    done = int(width * i / max(n, 1))
    rate = i / max(time.perf_counter() - t0, 1e-9)
    sys.stderr.write(f"\repoch {epoch:4d} [{'#' * done}{'.' * (width - done)}] {i}/{n} batches "
                     f"train loss {loss:.4g} {rate:.1f} batches/s")
    sys.stderr.flush()


def erase_progress_bar() -> None:
    sys.stderr.write("\r" + " " * 100 + "\r")
