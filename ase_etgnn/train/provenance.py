"""Where a run's model comes from, resolved once before training: a fresh model, a model file
(``init_from``: fine-tuning) or this run's checkpoint (``--resume``).

Everything that depends on it is decided here and nowhere else: the split, the species and heads, the
target normalisation and the starting weights.

* fresh: species from ``config.species`` or every element of the data set; heads from ``config.heads`` or
  every head with labels in the training split; normalisation fitted on the training split
  (``normalization.compute_normalization``); weights initialised from ``seed``; split from ``split_file``
  or ``split``/``split_seed``.
* init_from: species, heads, architecture, normalisation and weights of the model file, or of its member
  ``init_member`` for a composed file (run settings given anyway must agree with the file); heads without
  labels here keep their weights untrained; the heads in ``reinit_heads`` are drawn afresh from ``seed``
  (normalisation kept) and may change their head-only settings (``model.HEAD_SETTINGS``, e.g.
  ``force_head``): a new force head on a trained trunk.
* resume: the split and weights of the checkpoint; species, heads and normalisation as the run that wrote
  it started (fresh or ``init_from``, which is read again: it fixes the architecture).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from ase.data import chemical_symbols

from .. import build_model, load_model
from ..composed import ComposedModel
from ..model import HEAD_SETTINGS, rebuild_heads, reinitialize_heads
from ..records import RecordReader
from ..properties import TENSOR_HEADS
from .config import TrainConfig, resume_changes
from .normalization import compute_normalization
from .splits import check_split_fits, load_split, split_indices

__all__ = ["TrainingLabels", "Provenance", "read_checkpoint", "resolve_provenance"]


@dataclass(frozen=True)
class TrainingLabels:
    """What one pass over the records found: the training split's compositions and labels, and the elements of
    the whole data set where the run needs them.

    Attributes:
        numbers: per training record, [n_atoms] atomic numbers.  targets: per training record, its labels.
        present: properties labelled in at least one training record.
        elements: sorted element symbols of every record (None when not scanned).
    """

    numbers: Tuple[np.ndarray, ...]
    targets: Tuple[Dict[str, np.ndarray], ...]
    present: FrozenSet[str]
    elements: Optional[Tuple[str, ...]]


@dataclass(frozen=True)
class Provenance:
    """A run's model and everything fixed by where it comes from.

    Attributes:
        kind: "fresh", "init_from" or "resume" (module docstring).
        model: the model with its starting weights and normalisation, on the run's device and dtype.
        species, heads: the model's.  normalization: ``{head: {"scale", "reference"}}`` the weights were
            (or will be) trained with; recorded in the exported model's metadata.
        split: ``{"train", "val", "test"}`` record indices.  labels: the scan of the records.
        init_from: ``{"path", "metadata"}`` of the ``init_from`` file (exported with the model), or None.
        checkpoint: resume only: the checkpoint (optimizer, scheduler, epoch and early-stopping state).
    """

    kind: str
    model: torch.nn.Module
    species: Tuple[str, ...]
    heads: Tuple[str, ...]
    normalization: Dict[str, Dict[str, Any]]
    split: Dict[str, List[int]]
    labels: TrainingLabels
    init_from: Optional[Dict[str, Any]]
    checkpoint: Optional[Dict[str, Any]]

    @property
    def start_is_candidate(self) -> bool:
        """The starting weights compete for ``best.pt`` (fine-tuning: never exported worse than the file)."""
        return self.kind == "init_from"


def read_checkpoint(path: str, config: TrainConfig) -> Dict[str, Any]:
    """The checkpoint at ``path``, checked to belong to a run with ``config``'s settings (``config.RESUMABLE``
    may differ)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    changed = resume_changes(json.loads(ckpt["config_json"]), config)
    if changed:
        raise ValueError(f"--resume: settings differ from the checkpoint's run: {changed} "
                         f"(only epochs, early_stopping_patience, progress, num_workers, device may change)")
    return ckpt


def _split(config: TrainConfig, n_records: int, checkpoint: Optional[Mapping[str, Any]],
           checkpoint_path: str) -> Dict[str, List[int]]:
    if checkpoint is not None:
        split = json.loads(checkpoint["split_json"])
        check_split_fits(split, n_records, f"{checkpoint_path} (the run's split)", config.data)
        return split
    if config.split_file is not None:
        return load_split(config.split_file, n_records, config.data)
    return split_indices(n_records, config.split, config.split_seed)


def _scan(reader: RecordReader, train: Sequence[int], all_elements: bool) -> TrainingLabels:
    """Read the training records (and, with ``all_elements``, every other record, after them)."""
    numbers, targets = [], []
    for i in train:
        atoms, t, _ = reader.read(i)
        numbers.append(atoms.get_atomic_numbers())
        targets.append(t)
    elements = None
    if all_elements:
        in_train = set(train)
        rest = [reader.read(i)[0].get_atomic_numbers() for i in range(len(reader)) if i not in in_train]
        elements = tuple(chemical_symbols[z] for z in sorted({int(z) for n in numbers + rest for z in n}))
    return TrainingLabels(tuple(numbers), tuple(targets), frozenset(k for t in targets for k in t), elements)


def _load_init_model(config: TrainConfig, device: torch.device, dtype: torch.dtype):
    """The ``init_from`` model, checked against the run's ``species``, ``heads`` and ``[model]`` settings."""
    model = load_model(config.init_from, device=device, dtype=dtype)
    if isinstance(model, ComposedModel):
        if config.init_member not in model.members:
            raise ValueError(f"init_from {config.init_from}: a composed model (several members) cannot be trained; "
                             f"name the member to start from with init_member (one of {list(model.members)}), "
                             f"got {config.init_member!r}")
        composed = model.metadata.get("composed_from", {}).get(config.init_member, {})
        model = model.members[config.init_member]
        model.metadata = {"member": config.init_member, "member_file": composed.get("file"),
                          **composed.get("metadata", {})}
    elif config.init_member is not None:
        raise ValueError(f"init_from {config.init_from}: init_member {config.init_member!r} names a member of a "
                         "composed model file, but this file holds one model")
    have = model.config.to_dict()
    wanted = dict(config.model)
    if config.species is not None:
        wanted["species"] = list(config.species)
    if config.heads is not None:
        wanted["heads"] = list(config.heads)
    changed = {k: v for k, v in sorted(wanted.items()) if have.get(k) != v}
    swap = {k: v for k, v in changed.items() if HEAD_SETTINGS.get(k) in config.reinit_heads}
    differ = [f"{k}: run {v!r}, file {have.get(k)!r}" for k, v in changed.items() if k not in swap]
    if differ:
        raise ValueError(f"init_from {config.init_from}: settings differ from the model file's "
                         f"(leave them out to take the file's; {sorted(HEAD_SETTINGS)} may change for a head in "
                         f"reinit_heads):\n  " + "\n  ".join(differ))
    return rebuild_heads(model, swap, config.seed) if swap else model


def _fresh_heads(config: TrainConfig, present: FrozenSet[str]) -> Tuple[str, ...]:
    """The heads of a fresh model: ``config.heads`` (each must have labels) or every head with labels."""
    if config.heads is not None:
        missing = [h for h in config.heads if h not in present]
        if missing:
            raise ValueError(f"{config.data}: no training targets for heads {missing} "
                             f"(training split has {sorted(present)})")
        return tuple(config.heads)
    heads = tuple(h for h in TENSOR_HEADS if h in present)
    if config.forces_mode == "conservative":
        heads = tuple(h for h in heads if h != "forces")
        if "energy" not in heads:
            raise ValueError("forces_mode = 'conservative' needs energy targets")
    if not heads:
        raise ValueError(f"{config.data}: the training split has no targets a head can learn")
    return heads


def resolve_provenance(config: TrainConfig, reader: RecordReader, checkpoint: Optional[Dict[str, Any]],
                       checkpoint_path: str, device: torch.device, dtype: torch.dtype) -> Provenance:
    """Decide the split, species, heads, normalisation and starting weights of a run (module docstring).

    ``reader``: the data set, open (its one pass over the records happens here); ``checkpoint``: from
    :func:`read_checkpoint` when resuming, else None.
    """
    split = _split(config, len(reader), checkpoint, checkpoint_path)
    fixed_by_file = config.init_from is not None  # on resume too: the file fixes the architecture
    labels = _scan(reader, split["train"], all_elements=not fixed_by_file and config.species is None)
    init_from = None
    if fixed_by_file:
        model = _load_init_model(config, device, dtype)
        species, heads = tuple(model.config.species), tuple(model.config.heads)
        norm = {h: {"scale": float(model.heads_[h].scale),
                    "reference": model.heads_[h].reference.detach().cpu().double().tolist()} for h in heads}
        init_from = {"path": config.init_from, "metadata": model.metadata}
        reinitialize_heads(model, config.reinit_heads, config.seed)
    else:
        species = tuple(config.species) if config.species is not None else labels.elements
        heads = _fresh_heads(config, labels.present)
        norm = compute_normalization(labels.numbers, labels.targets, species, heads)
        hyper = dict(config.model)
        cutoff = float(hyper.pop("cutoff", 6.0))
        model = build_model(species=species, heads=heads, cutoff=cutoff, seed=config.seed, dtype=dtype,
                            device=device, **hyper)
        for name, nv in norm.items():
            model.set_normalization(name, nv["scale"], nv["reference"])
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    kind = "resume" if checkpoint is not None else ("init_from" if fixed_by_file else "fresh")
    return Provenance(kind, model, species, heads, norm, split, labels, init_from, checkpoint)
