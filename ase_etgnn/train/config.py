"""Training settings: :class:`TrainConfig` (every key of a TOML/YAML training config), ``--set`` overrides,
and which settings a resumed run may change.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from ..properties import FORCES_CONSERVATIVE, LOSS_TARGETS, PROPERTIES, TENSOR_HEADS
from .splits import valid_fractions

try:
    import tomllib
except ImportError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib  # type: ignore

__all__ = ["FORCES_MODES", "RESUMABLE", "TrainConfig", "load_train_config", "parse_overrides", "resume_changes"]

#: training force modes (see ``TrainConfig.forces_mode``)
FORCES_MODES = ("direct", "conservative", "joint")

#: settings a resumed run may change (everything else must equal the checkpoint's run)
RESUMABLE = ("epochs", "early_stopping_patience", "progress", "num_workers", "device", "output_dir", "torch_threads")


@dataclass(frozen=True)
class TrainConfig:
    """All settings of a training run (TOML/YAML keys have the same names).

    Attributes:
        data: HDF5 dataset (``docs/dataset_format.md``).
        output_dir: run directory (config.json, split.json, log.jsonl, checkpoint.pt, best.pt).
        heads: properties the model predicts; ``None`` = every head with training targets.
        species: element symbols; ``None`` = elements present in the dataset.
        loss_weights: ``{property: weight}``; missing heads get weight 1.  ``stress`` is allowed with
            ``forces_mode="conservative"``.
        normalize_loss: divide each property's loss by its normalisation scale.
        forces_mode: "direct" (force head, paper), "conservative" (-dE/dr of the energy head) or "joint"
            (both against the force labels: loss terms ``forces`` for the direct head and
            ``forces_conservative`` for -dE/dr, each with its own weight; stress allowed).
        model: hyper-parameters passed to ``build_model`` (``cutoff``, ``hidden``, ``n_blocks``, ...).
        seed: model initialisation and shuffling seed.  split, split_seed: train/val/test fractions.
        split_file: JSON with ``train``/``val``/``test`` record-index lists (a run's ``split.json``, e.g.
            ``models/sio2_split.json``); replaces ``split``/``split_seed``.  Records not listed are unused,
            so a model can be retrained on the records it saw after the file has grown.  A training record
            listed k times is drawn k times per epoch (oversampling a scarce kind of structure).
        init_from: model file (``save_model`` format) whose weights and target normalisation start the run:
            fine-tuning a shipped model on more data.  Its species, heads and architecture are used;
            ``species``/``heads``/``[model]`` may be left out and must agree with the file if given.
        init_member: with a composed ``init_from`` file (``etgnn compose``), the member that starts the run
            (e.g. ``"m1"``, the energy and forces member of ``models/sio2_md.pt``).
        reinit_heads: heads of the ``init_from`` model whose weights are drawn afresh from ``seed`` (its
            normalisation kept): committee members that share a trunk but not their heads.
        train_heads: heads of the ``init_from`` model whose weights alone are trained; the trunk and every
            other head keep the file's weights exactly (e.g. refit the Born-charge and dielectric heads of a
            model whose forces must not change).  Empty: every weight is trained.
        bootstrap: train on a resample of the training split drawn with replacement from ``seed`` (as many
            draws as records; about 63 % distinct): committee members that saw different data.
        lr, weight_decay: AdamW.  lr_factor, lr_patience, min_lr: ReduceLROnPlateau on the val loss.
        batch_size: structures per optimisation step (per process under DDP).
        eval_batch_size: validation batch size (default: batch_size).
        epochs: maximum epochs.  early_stopping_patience: stop after this many epochs without a better
            validation loss (0 = never).
        grad_clip: max gradient norm (None = no clipping).
        device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...  dtype: "float32" | "float64".
        num_workers: DataLoader worker processes (each opens the HDF5 file itself).
        torch_threads: if set, ``torch.set_num_threads`` for this process (a process-wide setting, applied
            by ``train`` only when given).  Small graphs on a busy CPU train much faster with 1-2 threads.
        progress: print a progress bar and one line per epoch (rank 0).
    """

    data: str
    output_dir: str = "runs/etgnn"
    heads: Optional[Tuple[str, ...]] = None
    species: Optional[Tuple[str, ...]] = None
    loss_weights: Mapping[str, float] = field(default_factory=dict)
    normalize_loss: bool = True
    forces_mode: str = "direct"
    model: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    split: Tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0
    split_file: Optional[str] = None
    init_from: Optional[str] = None
    init_member: Optional[str] = None
    reinit_heads: Tuple[str, ...] = ()
    train_heads: Tuple[str, ...] = ()
    bootstrap: bool = False
    lr: float = 5e-4
    weight_decay: float = 0.0
    lr_factor: float = 0.5
    lr_patience: int = 10
    min_lr: float = 1e-6
    batch_size: int = 40
    eval_batch_size: Optional[int] = None
    epochs: int = 300
    early_stopping_patience: int = 50
    grad_clip: Optional[float] = None
    device: str = "auto"
    dtype: str = "float32"
    num_workers: int = 0
    torch_threads: Optional[int] = None
    progress: bool = True

    def __post_init__(self) -> None:
        # coerce containers coming from TOML/YAML lists
        for name in ("reinit_heads", "train_heads"):
            v = getattr(self, name)
            object.__setattr__(self, name, tuple(str(x) for x in ([v] if isinstance(v, str) else v)))
        for name in ("heads", "species"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(str(x) for x in ([v] if isinstance(v, str) else v)))
        object.__setattr__(self, "split", tuple(float(x) for x in self.split))
        object.__setattr__(self, "loss_weights", {str(k): float(v) for k, v in dict(self.loss_weights).items()})
        object.__setattr__(self, "model", dict(self.model))
        object.__setattr__(self, "data", os.fspath(self.data))
        object.__setattr__(self, "output_dir", os.fspath(self.output_dir))
        for name in ("split_file", "init_from"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        errs = []
        if not valid_fractions(self.split):
            errs.append(f"split must be three non-negative fractions summing to 1, got {self.split}")
        if self.heads is not None:
            for h in self.heads:
                if h not in TENSOR_HEADS:
                    errs.append(f"heads: {h!r} is not a model head (choose from {list(TENSOR_HEADS)})")
        for k in self.loss_weights:
            if k not in PROPERTIES and k not in LOSS_TARGETS:
                errs.append(f"loss_weights: unknown property {k!r} (known: {sorted(PROPERTIES)})")
            elif self.loss_weights[k] < 0:
                errs.append(f"loss_weights: weight of {k!r} must be >= 0")
        if "stress" in self.loss_weights and self.loss_weights["stress"] > 0 and self.forces_mode == "direct":
            errs.append("loss_weights: 'stress' needs forces_mode = 'conservative' or 'joint'")
        if FORCES_CONSERVATIVE in self.loss_weights and self.forces_mode != "joint":
            errs.append(f"loss_weights: '{FORCES_CONSERVATIVE}' needs forces_mode = 'joint'")
        if self.init_member is not None and self.init_from is None:
            errs.append("init_member needs init_from (the composed model file it is a member of)")
        if self.reinit_heads and self.init_from is None:
            errs.append("reinit_heads needs init_from (the model whose other weights are kept)")
        if self.train_heads and self.init_from is None:
            errs.append("train_heads needs init_from (the model whose other weights are kept)")
        for key in ("reinit_heads", "train_heads"):
            for h in getattr(self, key):
                if h not in TENSOR_HEADS:
                    errs.append(f"{key}: {h!r} is not a model head (choose from {list(TENSOR_HEADS)})")
        if self.forces_mode not in FORCES_MODES:
            errs.append(f"forces_mode must be one of {list(FORCES_MODES)}, got {self.forces_mode!r}")
        for k in ("species", "heads", "seed", "dtype", "device"):
            if k in self.model:
                errs.append(f"model: set {k!r} at the top level, not in [model]")
        if self.dtype not in ("float32", "float64"):
            errs.append(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for k in ("batch_size", "epochs"):
            if int(getattr(self, k)) < 1:
                errs.append(f"{k} must be >= 1")
        if self.lr <= 0:
            errs.append("lr must be > 0")
        if not 0 < self.lr_factor < 1:
            errs.append("lr_factor must be in (0, 1)")
        if errs:
            raise ValueError("invalid training configuration:\n  " + "\n  ".join(errs))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("heads", "species", "split", "reinit_heads", "train_heads"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _parse_value(text: str) -> Any:
    """Parse a ``--set`` value: JSON, then TOML scalar/array, else the raw string (``none``/``null`` -> None)."""
    t = text.strip()
    if t.lower() in ("none", "null"):
        return None
    try:
        return json.loads(t)
    except ValueError:
        pass
    try:
        return tomllib.loads(f"v = {t}")["v"]
    except Exception:
        return t


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``["lr=1e-3", "model.hidden=64", "loss_weights.forces=2"]`` -> nested dict."""
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise ValueError(f"--set {item!r}: {p!r} is not a table")
        d[parts[-1]] = _parse_value(value)
    return out


def _merge(base: Dict[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_train_config(path: Optional[str] = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file, apply ``overrides``, validate.

    Relative ``data`` and ``output_dir`` paths in a file are taken relative to the current directory.
    """
    raw: Dict[str, Any] = {}
    if path is not None:
        ext = os.path.splitext(path)[1].lower()
        try:
            if ext == ".toml":
                with open(path, "rb") as fh:
                    raw = tomllib.load(fh)
            elif ext in (".yaml", ".yml"):
                with open(path) as fh:
                    raw = yaml.safe_load(fh) or {}
            else:
                raise ValueError(f"{path}: config files must end in .toml, .yaml or .yml")
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read training config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: top level must be a table/mapping")
    raw = _merge(raw, overrides or {})
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown training config keys {unknown}; known keys: {sorted(_FIELDS)}")
    if "data" not in raw:
        raise ValueError("training config needs 'data' (path of the HDF5 dataset)")
    return TrainConfig(**raw)


def resume_changes(checkpoint_config: Mapping[str, Any], config: TrainConfig) -> List[str]:
    """Names of the settings of ``config`` that differ from a checkpoint's run and may not (sorted)."""
    new = config.to_dict()
    # a setting added to TrainConfig after the checkpoint was written counts as its default there
    old = {**TrainConfig(data=config.data).to_dict(), **checkpoint_config}
    return sorted(k for k in _FIELDS if k not in RESUMABLE and old.get(k) != new.get(k))
