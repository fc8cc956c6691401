"""Training of ETGNN models on HDF5 datasets (single process or ``torchrun`` DistributedDataParallel).

Defaults follow the paper (Table S2 for SiO2: AdamW, lr 5e-4, lr decay 0.5 on plateau, batch 40;
appendix A: Euclidean-distance loss ``mean_t ||pred_t - target_t||``, not squared).

Loss: ``sum_p w_p * L_p`` with ``L_p`` the mean over the present (masked) tensors of property ``p`` of the
Euclidean / Frobenius norm of the error (energy: absolute error per atom), divided by the property's
normalisation scale when ``normalize_loss`` (default), so that weights compare dimensionless numbers.

Normalisation (fitted on the training split, stored in the model's buffers via
``model.set_normalization``): energy -- per-species eV/atom reference from a least-squares fit of total
energies on composition, scale = std of the per-atom residual; forces -- rms component; Born charges --
per-species mean isotropic part (trace/3) as reference, std of the remainder as scale; dielectric --
mean trace/3 reference, std of the remainder as scale; piezoelectric -- rms component.

Reproducibility: no global RNG is used.  The model is initialised from ``seed``; the split from
``split_seed``; the shuffling order of epoch ``e`` from ``(seed, e)`` (``DistributedSampler`` seeding), so
a run resumed from a checkpoint (model, optimizer, scheduler, early-stopping state, epoch) continues
exactly as the uninterrupted run would.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .conventions import atomic_torch_save, atomic_write_text, resolve_device, resolve_dtype
from .model_file import save_model
from .properties import LOSS_TARGETS, PROPERTIES, TENSOR_HEADS, loss_target

__all__ = [
    "TrainConfig",
    "TrainResult",
    "load_train_config",
    "parse_overrides",
    "split_indices",
    "read_split",
    "check_split_fits",
    "load_split",
    "compute_normalization",
    "extend_split",
    "euclidean_loss",
    "train",
]

#: training force modes (see ``TrainConfig.forces_mode``)
FORCES_MODES = ("direct", "conservative", "joint")
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
LOG_NAME = "log.jsonl"


# ------------------------------------------------------------------------------------------- config
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
            so a model can be retrained on the records it saw after the file has grown.
        init_from: model file (``save_model`` format) whose weights and target normalisation start the run:
            fine-tuning a shipped model on more data.  Its species, heads and architecture are used;
            ``species``/``heads``/``[model]`` may be left out and must agree with the file if given.
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
        if not _valid_fractions(self.split):
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
        if "forces_conservative" in self.loss_weights and self.forces_mode != "joint":
            errs.append("loss_weights: 'forces_conservative' needs forces_mode = 'joint'")
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
        for k in ("heads", "species", "split"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


@dataclass(frozen=True)
class TrainResult:
    output_dir: str
    best_path: str
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    history: Tuple[Dict[str, Any], ...]
    world_size: int = 1


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
        import tomllib
    except ImportError:  # pragma: no cover - Python < 3.11
        import tomli as tomllib  # type: ignore
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
                try:
                    import tomllib
                except ImportError:  # pragma: no cover
                    import tomli as tomllib  # type: ignore
                with open(path, "rb") as fh:
                    raw = tomllib.load(fh)
            elif ext in (".yaml", ".yml"):
                import yaml

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


# ------------------------------------------------------------------------------------ data helpers
def _valid_fractions(fractions: Sequence[float]) -> bool:
    """Three non-negative train/val/test fractions summing to 1."""
    return len(fractions) == 3 and min(fractions) >= 0 and math.isclose(sum(fractions), 1.0, abs_tol=1e-6)


def split_indices(n: int, fractions: Sequence[float], seed: int) -> Dict[str, List[int]]:
    """Deterministic random split of ``range(n)`` into train/val/test (val gets >= 1 when n >= 2)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n).tolist()
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if n >= 2 and fractions[1] > 0 and n_val == 0:
        n_val = 1
    n_train = min(n_train, n - n_val)
    if n >= 1 and n_train == 0:
        raise ValueError(f"split {tuple(fractions)} of {n} structures leaves no training structure")
    return {"train": sorted(perm[:n_train]), "val": sorted(perm[n_train:n_train + n_val]),
            "test": sorted(perm[n_train + n_val:])}


def extend_split(previous: Mapping[str, Sequence[int]], n: int, fractions: Sequence[float], seed: int,
                 groups: Optional[Sequence[Any]] = None) -> Dict[str, List[int]]:
    """A split of ``range(n)`` that keeps every record of ``previous`` where it was and splits the others
    (records appended since) by ``fractions``: a grown data set whose old test set stays unseen.

    ``groups`` ([n] labels, e.g. provenance tags): new records are split per group, so that every group
    with enough new records reaches validation and test.
    """
    if not _valid_fractions(fractions):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    old = {name: [int(i) for i in previous.get(name, [])] for name in ("train", "val", "test")}
    placed = {i for v in old.values() for i in v}
    new = [i for i in range(n) if i not in placed]
    labels = [None] * n if groups is None else list(groups)
    if len(labels) != n:
        raise ValueError(f"extend_split: {len(labels)} group labels for {n} records")
    out = {name: list(v) for name, v in old.items()}
    for g in sorted({labels[i] for i in new}, key=str):
        members = [i for i in new if labels[i] == g]
        part = split_indices(len(members), fractions, seed)
        for name in out:
            out[name].extend(members[j] for j in part[name])
    return {name: sorted(v) for name, v in out.items()}


def read_split(path: str) -> Dict[str, List[int]]:
    """The ``train``/``val``/``test`` integer index lists of a split JSON file (format checks only; see
    :func:`check_split_fits` for the check against a data set)."""
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"split_file {path}: cannot read a JSON split ({e})") from None
    if not isinstance(raw, dict) or not {"train", "val", "test"} <= set(raw):
        raise ValueError(f"split_file {path}: expected an object with 'train', 'val' and 'test' index lists")
    split = {}
    for name in ("train", "val", "test"):
        idx = raw[name]
        if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise ValueError(f"split_file {path}: '{name}' must be a list of integer record indices")
        split[name] = sorted(idx)
    return split


def check_split_fits(split: Mapping[str, Sequence[int]], n_records: int, split_path: str,
                     data_path: Optional[str] = None) -> None:
    """``ValueError`` (one line naming the split file and the data set) unless every index of ``split`` is a
    record of a data set of ``n_records`` records and no record is in two subsets.

    A split made for another (larger) data set fails here instead of deep inside a data loader; a split of
    fewer records than the data set is accepted (records appended since stay unused, by design).
    """
    on = f" ({data_path})" if data_path else ""
    seen: Dict[int, str] = {}
    for name in ("train", "val", "test"):
        idx = [int(i) for i in split.get(name, [])]
        bad = [i for i in idx if not 0 <= i < n_records]
        if bad:
            raise ValueError(f"split_file {split_path}: '{name}' has indices outside the dataset's {n_records} "
                             f"records{on}: {bad[:5]}{' ...' if len(bad) > 5 else ''} (highest {max(bad)}); "
                             "was the split made for another data set?")
        for i in idx:
            if i in seen:
                raise ValueError(f"split_file {split_path}: record {i} is in both '{seen[i]}' and '{name}'")
            seen[i] = name


def load_split(path: str, n: int, data_path: Optional[str] = None) -> Dict[str, List[int]]:
    """Train/val/test record indices from a JSON file (see ``TrainConfig.split_file``), checked against a
    dataset of ``n`` records (``data_path`` names it in messages): integer indices in range, no index in
    two subsets, a non-empty train set."""
    split = read_split(path)
    check_split_fits(split, n, path, data_path)
    if not split["train"]:
        raise ValueError(f"split_file {path}: the 'train' list is empty")
    return split


def _scan(dataset, species: Optional[Sequence[str]] = None):
    """Targets and compositions of all items of an ETGNNDataset (no graphs built)."""
    numbers, targets = [], []
    for i in range(len(dataset)):
        atoms, t, _ = dataset.get_atoms_targets(i)
        numbers.append(atoms.get_atomic_numbers())
        targets.append(t)
    return numbers, targets


def compute_normalization(numbers: Sequence[np.ndarray], targets: Sequence[Mapping[str, np.ndarray]],
                          species: Sequence[str], heads: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Normalisation per head from training data: ``{name: {"scale": float, "reference": ...}}``.

    ``reference`` is a per-species list (energy eV/atom, Born-charge isotropic part), a float
    (dielectric isotropic part) or None.  Scales that would be zero fall back to 1.
    """
    from ase.data import atomic_numbers

    z_of = [atomic_numbers[s] for s in species]
    out: Dict[str, Dict[str, Any]] = {}

    def safe(x: float) -> float:
        return float(x) if np.isfinite(x) and x > 1e-8 else 1.0

    for h in heads:
        sel = [(num, t[h]) for num, t in zip(numbers, targets) if h in t]
        if not sel:
            continue
        if h == "energy":
            comp = np.array([[np.sum(num == z) for z in z_of] for num, _ in sel], dtype=float)  # [S, n_species]
            e = np.array([float(v) for _, v in sel])  # [S]
            ref, *_ = np.linalg.lstsq(comp, e, rcond=None)  # eV/atom per species
            n_at = comp.sum(axis=1)
            resid = (e - comp @ ref) / n_at
            scale = safe(np.std(resid)) if len(sel) > 1 else 1.0
            out[h] = {"scale": scale, "reference": ref.tolist()}
        elif h == "born_effective_charges":
            num = np.concatenate([n for n, _ in sel])
            z = np.concatenate([v for _, v in sel])  # [N, 3, 3]
            iso = np.trace(z, axis1=1, axis2=2) / 3.0  # [N]
            ref = np.array([iso[num == zz].mean() if np.any(num == zz) else 0.0 for zz in z_of])
            unknown = sorted(set(num.tolist()) - set(z_of))
            if unknown:
                raise ValueError(f"atomic numbers {unknown} are not in species {list(species)}")
            idx = np.array([z_of.index(int(k)) for k in num])  # [N] species index
            rest = z - ref[idx][:, None, None] * np.eye(3)  # [N, 3, 3]
            out[h] = {"scale": safe(np.std(rest)), "reference": ref.tolist()}
        elif h == "dielectric_tensor":
            eps = np.stack([v for _, v in sel])  # [S, 3, 3]
            ref = float(np.mean(np.trace(eps, axis1=1, axis2=2) / 3.0))
            out[h] = {"scale": safe(np.std(eps - ref * np.eye(3))), "reference": ref}
        else:  # forces, piezoelectric_tensor: rms component
            vals = np.concatenate([np.asarray(v).reshape(-1) for _, v in sel])
            out[h] = {"scale": safe(np.sqrt(np.mean(vals ** 2))), "reference": None}
    return out


# ------------------------------------------------------------------------------------------ losses
def euclidean_loss(pred, target, mask, n_atoms=None):
    """Masked Euclidean-distance loss: mean over present tensors of ``||pred_t - target_t||``.

    ``pred``/``target``: ``[n, *cart]``; ``mask``: ``[n]`` bool.  With ``n_atoms`` ([n], energy) the error
    is taken per atom.  Returns ``(loss, sum_of_norms, count)``; gradients are finite also for zero errors.
    """
    import torch

    diff = (pred - target).reshape(pred.shape[0], -1)  # [n, 3**rank]
    if n_atoms is not None:
        diff = diff / n_atoms.to(diff.dtype).unsqueeze(-1)
    sq = (diff * diff).sum(dim=-1)  # [n]
    ok = mask & (sq > 0)
    norm = torch.where(ok, torch.sqrt(torch.where(ok, sq, torch.ones_like(sq))), torch.zeros_like(sq))  # [n]
    total = norm.sum()
    count = mask.sum()
    return total / count.clamp(min=1).to(total.dtype), total, count


# -------------------------------------------------------------------------------------------- model
class _Predictor:
    """Builds a callable nn.Module wrapping the model's prediction for a ``forces_mode`` (for DDP): direct
    heads; conservative (``forces`` = -dE/dr); joint (``forces`` direct, ``forces_conservative`` = -dE/dr)."""

    @staticmethod
    def make(model, forces_mode: str, stress: bool):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.model = m

            def forward(self, graph):
                if forces_mode == "direct":
                    return self.model(graph)
                out = self.model.energy_and_derivatives(graph, stress=stress)
                if forces_mode == "conservative":
                    out["forces"] = out.pop("forces_conservative")
                return out

        return Wrapper(model)


# ---------------------------------------------------------------------------------------- training
def _append_line(path: str, line: str) -> None:
    """Append one line to ``path`` and fsync it (the epoch log)."""
    with open(path, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


#: files of a run directory; a fresh run refuses to start where any of them exists (see ``train``)
RUN_FILES = ("config.json", "split.json", LOG_NAME, CHECKPOINT_NAME, BEST_NAME, "summary.json")


def _move_run_aside(out_dir: str, names: Sequence[str]) -> str:
    """Move the files ``names`` of a previous run into ``out_dir/replaced-<UTC time>/``; returns that folder."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = os.path.join(out_dir, f"replaced-{stamp}")
    k = 1
    while os.path.exists(dest):
        k += 1
        dest = os.path.join(out_dir, f"replaced-{stamp}-{k}")
    os.makedirs(dest)
    for n in names:
        os.replace(os.path.join(out_dir, n), os.path.join(dest, n))
    return dest


def _progress(i: int, n: int, epoch: int, loss: float, t0: float) -> None:
    width = 28
    done = int(width * i / max(n, 1))
    rate = i / max(time.perf_counter() - t0, 1e-9)
    sys.stderr.write(f"\repoch {epoch:4d} [{'#' * done}{'.' * (width - done)}] {i}/{n} batches "
                     f"train loss {loss:.4g} {rate:.1f} batches/s")
    sys.stderr.flush()


def _dist_state():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_(tensor):
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def _maybe_init_distributed(device_name: str) -> bool:
    """Initialise the default process group from torchrun's environment; True if this call did it."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    use_cuda = device_name != "cpu" and torch.cuda.is_available() and not device_name.startswith("cpu")
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return True


def _evaluate(wrapper, loader, weights, scales, normalize, device, dtype, heads_eval) -> Dict[str, Any]:
    """Validation sums, all-reduced over ranks: loss and per-property MAE (component-wise)."""
    import torch

    names = list(heads_eval)
    sums = torch.zeros(len(names), 4, dtype=torch.float64)  # [norm_sum, count, abs_sum, n_components]
    wrapper.eval()
    for batch in loader:
        batch = batch.to(device)
        if any(n in ("stress",) for n in names) or getattr(wrapper, "_conservative", False):
            out = wrapper(batch.graph)
        else:
            with torch.no_grad():
                out = wrapper(batch.graph)
        for k, name in enumerate(names):
            tgt = loss_target(name)
            mask = batch.masks[tgt]
            spec = PROPERTIES[tgt]
            n_at = batch.n_atoms if name == "energy" else None
            _, tot, cnt = euclidean_loss(out[name].detach(), batch.targets[tgt], mask, n_at)
            absdiff = (out[name].detach() - batch.targets[tgt]).abs().reshape(mask.shape[0], -1)
            sums[k, 0] += float(tot)
            sums[k, 1] += float(cnt)
            sums[k, 2] += float((absdiff * mask.unsqueeze(-1)).sum())
            sums[k, 3] += float(cnt) * (3 ** spec.rank)
    _all_reduce_(sums)
    wrapper.train()
    loss = 0.0
    mae: Dict[str, float] = {}
    for k, name in enumerate(names):
        norm_sum, cnt, abs_sum, ncomp = sums[k].tolist()
        if cnt == 0:
            continue
        lp = norm_sum / cnt
        if normalize:
            lp /= scales.get(name, 1.0)
        loss += weights.get(name, 0.0) * lp
        mae[name] = abs_sum / ncomp
    return {"loss": loss, "mae": mae}


_SHORT = {"energy": "E", "forces": "F", "born_effective_charges": "Z*", "dielectric_tensor": "eps",
          "piezoelectric_tensor": "e_piezo", "stress": "S", "forces_conservative": "-dE/dr"}


def _fmt_epoch(rec: Mapping[str, Any], epochs: int) -> str:
    """One progress line: losses (dimensionless), validation MAE per property with units, timing."""
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


def _load_init_model(config: TrainConfig, device, dtype):
    """The ``init_from`` model, checked against the run's ``species``, ``heads`` and ``[model]`` settings."""
    from .model_file import load_model

    model = load_model(config.init_from, device=device, dtype=dtype)
    have = model.config.to_dict()
    wanted = dict(config.model)
    if config.species is not None:
        wanted["species"] = list(config.species)
    if config.heads is not None:
        wanted["heads"] = list(config.heads)
    differ = [f"{k}: run {v!r}, file {have.get(k)!r}" for k, v in sorted(wanted.items()) if have.get(k) != v]
    if differ:
        raise ValueError(f"init_from {config.init_from}: settings differ from the model file's "
                         f"(leave them out to take the file's):\n  " + "\n  ".join(differ))
    return model


def train(config: TrainConfig, resume: bool = False, log=print, overwrite: bool = False) -> TrainResult:
    """Train a model as described by ``config``; see the module docstring.

    A fresh run (``resume=False``) refuses an output directory that already holds a run (any of
    ``RUN_FILES``) unless ``overwrite``, which first moves those files to ``output_dir/replaced-<time>/``:
    nothing of an earlier run is truncated or overwritten unasked.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised here (gloo on CPU, nccl on
    CUDA) and the model wrapped in ``DistributedDataParallel``; rank 0 writes all files.

    Output directory: ``config.json``, ``split.json``, ``log.jsonl`` (one JSON object per epoch),
    ``checkpoint.pt`` (latest state, atomic), ``best.pt`` (``save_model`` of the best validation loss),
    ``summary.json``.
    """
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from . import build_model
    from .data import ETGNNDataset, collate_batch, count_records

    initialised_here = _maybe_init_distributed(config.device)
    try:
        rank, world = _dist_state()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(config.device, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dtype = resolve_dtype(config.dtype)
        out_dir = os.path.abspath(config.output_dir)
        ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
        best_path = os.path.join(out_dir, BEST_NAME)
        log_path = os.path.join(out_dir, LOG_NAME)
        quiet = rank != 0 or not config.progress
        if config.torch_threads:
            torch.set_num_threads(int(config.torch_threads))

        def say(msg: str) -> None:
            if not quiet:
                log(msg)

        # ---------------------------------------------------------------- resume or fresh state
        if resume and overwrite:
            raise ValueError("--resume continues the run in the output directory, --overwrite replaces it: "
                             "choose one")
        ckpt = None
        if resume:
            if not os.path.exists(ckpt_path):
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            old = json.loads(ckpt["config_json"])
            changed = [k for k in _FIELDS if k not in ("epochs", "early_stopping_patience", "progress",
                                                       "num_workers", "device", "output_dir", "torch_threads")
                       and old.get(k) != config.to_dict().get(k)]
            if changed:
                raise ValueError(f"--resume: settings differ from the checkpoint's run: {sorted(changed)} "
                                 f"(only epochs, early_stopping_patience, progress, num_workers, device may change)")
        old_files = [] if resume else [n for n in RUN_FILES if os.path.exists(os.path.join(out_dir, n))]
        if old_files and not overwrite:
            raise ValueError(
                f"{out_dir} already holds a training run ({', '.join(old_files)}); continue it with --resume, "
                f"choose another --output-dir, or pass --overwrite to move its files to "
                f"{os.path.join(out_dir, 'replaced-<time>')}/ and start afresh")
        if rank == 0:
            os.makedirs(out_dir, exist_ok=True)

        n_records = count_records(config.data)
        if ckpt is not None:
            split = json.loads(ckpt["split_json"])
            check_split_fits(split, n_records, f"{ckpt_path} (the run's split)", config.data)
        elif config.split_file is not None:
            split = load_split(config.split_file, n_records, config.data)
        else:
            split = split_indices(n_records, config.split, config.split_seed)
        probe = ETGNNDataset(config.data, cutoff=1.0, indices=split["train"], cache_graphs=False)
        numbers, targets = _scan(probe)
        probe.close()
        present = {k for t in targets for k in t}
        init_model = None
        if config.init_from is not None:  # on --resume too: it fixes the architecture
            init_model = _load_init_model(config, device, dtype)
        if init_model is not None:
            species = tuple(init_model.config.species)
        elif config.species is not None:
            species = tuple(config.species)
        else:
            from ase.data import chemical_symbols

            everything = ETGNNDataset(config.data, cutoff=1.0, cache_graphs=False)
            allnum = _scan(everything)[0]
            everything.close()
            species = tuple(chemical_symbols[z] for z in sorted({int(z) for n in allnum for z in n}))
        if init_model is not None:
            heads = tuple(init_model.config.heads)  # heads without targets here keep their weights untrained
        elif config.heads is not None:
            heads = tuple(config.heads)
            missing = [h for h in heads if h not in present]
            if missing:
                raise ValueError(f"{config.data}: no training targets for heads {missing} "
                                 f"(training split has {sorted(present)})")
        else:
            heads = tuple(h for h in TENSOR_HEADS if h in present)
            if config.forces_mode == "conservative":
                heads = tuple(h for h in heads if h != "forces")
                if "energy" not in heads:
                    raise ValueError("forces_mode = 'conservative' needs energy targets")
            if not heads:
                raise ValueError(f"{config.data}: the training split has no targets a head can learn")
        loss_names = [h for h in heads if h in present] if init_model is not None else list(heads)
        if config.forces_mode == "joint":
            if "energy" not in heads or "forces" not in heads:
                raise ValueError("forces_mode = 'joint' needs a model with both an energy and a forces head")
            if "forces" in present:
                loss_names.append("forces_conservative")
        if config.forces_mode in ("conservative", "joint"):
            if "forces" in present and "forces" not in loss_names:
                loss_names.append("forces")
            if config.loss_weights.get("stress", 0) > 0:
                loss_names.append("stress")
        weights = {n: config.loss_weights.get(n, 1.0) for n in loss_names}
        loss_names = [n for n in loss_names if weights[n] > 0]
        if init_model is not None:  # keep the normalisation the weights were trained with
            norm = {h: {"scale": float(init_model.heads_[h].scale),
                        "reference": init_model.heads_[h].reference.detach().cpu().double().tolist()}
                    for h in heads}
        else:
            norm = compute_normalization(numbers, targets, species, heads)
        scales = {n: norm[n]["scale"] for n in norm}
        if "forces" in loss_names and "forces" not in scales:  # conservative forces
            scales["forces"] = compute_normalization(numbers, targets, species, ["forces"])["forces"]["scale"]
        if "forces_conservative" in loss_names:
            scales["forces_conservative"] = scales["forces"]
        if "stress" in loss_names:
            scales["stress"] = compute_normalization(numbers, targets, species, ["stress"]).get(
                "stress", {"scale": 1.0})["scale"]

        if init_model is not None:
            model = init_model
            say(f"initial weights from {config.init_from}")
        else:
            hyper = dict(config.model)
            cutoff = float(hyper.pop("cutoff", 6.0))
            model = build_model(species=species, heads=heads, cutoff=cutoff, seed=config.seed, dtype=dtype,
                                device=device, **hyper)
            for name, nv in norm.items():
                model.set_normalization(name, nv["scale"], nv["reference"])
        conservative = config.forces_mode in ("conservative", "joint")
        wrapper = _Predictor.make(model, config.forces_mode, "stress" in loss_names)
        wrapper._conservative = conservative
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # masked losses keep every head in the graph; only heads without a loss term are unused
            unused = any(h not in loss_names for h in heads)
            ddp = DDP(wrapper, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=unused)
            ddp._conservative = conservative
            net = ddp
        else:
            net = wrapper
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=config.lr_factor,
                                                           patience=config.lr_patience, min_lr=config.min_lr)
        start_epoch = 0
        best_val = float("inf")
        best_epoch = 0
        since_best = 0
        history: List[Dict[str, Any]] = []
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            start_epoch = int(ckpt["epoch"])
            best_val = float(ckpt["best_val"])
            best_epoch = int(ckpt["best_epoch"])
            since_best = int(ckpt["since_best"])
            if os.path.exists(log_path):
                with open(log_path) as fh:
                    history = [json.loads(line) for line in fh if line.strip()]
                history = [h for h in history if h.get("epoch", 0) <= start_epoch]
            if rank == 0:
                atomic_write_text(log_path, "".join(json.dumps(h) + "\n" for h in history))
            say(f"resuming {out_dir} after epoch {start_epoch}")
        elif rank == 0:
            if old_files:  # --overwrite: moved aside only now that the new run's settings and data checked out
                dest = _move_run_aside(out_dir, old_files)
                say(f"--overwrite: the previous run's {', '.join(old_files)} moved to {dest}")
            atomic_write_text(os.path.join(out_dir, "config.json"), json.dumps(config.to_dict(), indent=2) + "\n")
            atomic_write_text(os.path.join(out_dir, "split.json"), json.dumps(split) + "\n")
            atomic_write_text(log_path, "")

        # ---------------------------------------------------------------- data
        dataset_kw = dict(cutoff=model.config.cutoff, triplet_cutoff=model.config.triplet_cutoff,
                          properties=tuple(sorted({loss_target(n) for n in loss_names} | set(heads))))
        train_ds = ETGNNDataset(config.data, indices=split["train"], **dataset_kw)
        val_idx = split["val"][rank::world]
        val_ds = ETGNNDataset(config.data, indices=val_idx, **dataset_kw) if val_idx else None
        collate_props = tuple(sorted({loss_target(n) for n in loss_names}))
        import functools

        collate = functools.partial(collate_batch, dtype=dtype, properties=collate_props)
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=config.seed,
                                     drop_last=False)
        loader_kw: Dict[str, Any] = dict(num_workers=config.num_workers, collate_fn=collate,
                                         persistent_workers=config.num_workers > 0)
        train_loader = DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler, **loader_kw)
        val_loader = (DataLoader(val_ds, batch_size=config.eval_batch_size or config.batch_size, shuffle=False,
                                 **loader_kw) if val_ds is not None else [])
        n_params = sum(p.numel() for p in model.parameters())
        say(f"ETGNN: species {list(species)}, heads {list(heads)}, {n_params} parameters, device {device}, "
            f"{config.dtype}, world size {world}; data {config.data}: {len(split['train'])} train / "
            f"{len(split['val'])} val / {len(split['test'])} test structures")

        # ---------------------------------------------------------------- epochs
        rec0 = None
        if ckpt is None:  # validation of the untrained model, for reference ("epoch 0")
            val0 = _evaluate(net, val_loader, weights, scales, config.normalize_loss, device, dtype, loss_names)
            # fine-tuning: the file's weights are the first candidate, so best.pt is never worse than them
            start_is_best = init_model is not None and bool(val0["mae"])
            rec0 = {"epoch": 0, "lr": float(opt.param_groups[0]["lr"]), "train_loss": None,
                    "val_loss": float(val0["loss"]), "val_mae": val0["mae"], "best": start_is_best, "time_s": 0.0,
                    "train_structures_per_s": None}
            if start_is_best:
                best_val, best_epoch = float(val0["loss"]), 0
            history.append(rec0)
            if rank == 0:
                _append_line(log_path, json.dumps(rec0))
                say(_fmt_epoch(rec0, config.epochs))
        stopped_early = False
        show_bar = config.progress and rank == 0 and sys.stderr.isatty()
        epoch = start_epoch
        metadata_base = {
            "trained_by": "ase_etgnn.train", "data": os.path.abspath(config.data), "split": {k: len(v) for k, v in split.items()},
            "normalization": norm, "train_config": config.to_dict(), "world_size": world,
        }
        if init_model is not None:
            metadata_base["init_from"] = {"path": config.init_from, "metadata": init_model.metadata}
        if rec0 is not None and rec0["best"] and rank == 0:
            save_model(model, best_path, {**metadata_base, "epoch": 0, "val_loss": rec0["val_loss"],
                                          "val_mae": rec0["val_mae"]})
        for epoch in range(start_epoch + 1, config.epochs + 1):
            if config.early_stopping_patience and since_best >= config.early_stopping_patience:
                stopped_early = True
                epoch -= 1
                break
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            net.train()
            loss_sum = torch.zeros(2, dtype=torch.float64)  # [sum of batch losses, n_batches]
            n_batches = len(train_loader)
            n_struct = 0
            for bi, batch in enumerate(train_loader):
                batch = batch.to(device)
                out = net(batch.graph)
                loss = torch.zeros((), dtype=dtype, device=device)
                for name in loss_names:
                    n_at = batch.n_atoms if name == "energy" else None
                    tgt = loss_target(name)
                    lp, _, _ = euclidean_loss(out[name], batch.targets[tgt], batch.masks[tgt], n_at)
                    if config.normalize_loss:
                        lp = lp / scales[name]
                    loss = loss + weights[name] * lp
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                loss_sum[0] += float(loss.detach())
                loss_sum[1] += 1
                n_struct += int(batch.n_atoms.shape[0])
                if show_bar:
                    _progress(bi + 1, n_batches, epoch, float(loss_sum[0] / loss_sum[1]), t0)
            if show_bar:
                sys.stderr.write("\r" + " " * 100 + "\r")
            t_train = time.perf_counter() - t0
            _all_reduce_(loss_sum)
            n_struct_t = _all_reduce_(torch.tensor([float(n_struct)], dtype=torch.float64))
            val = _evaluate(net, val_loader, weights, scales, config.normalize_loss, device, dtype, loss_names)
            val_loss = val["loss"] if val["mae"] else float(loss_sum[0] / loss_sum[1])
            sched.step(val_loss)
            is_best = val_loss < best_val
            if is_best:
                best_val, best_epoch, since_best = val_loss, epoch, 0
            else:
                since_best += 1
            rec = {
                "epoch": epoch, "lr": float(opt.param_groups[0]["lr"]),
                "train_loss": float(loss_sum[0] / max(float(loss_sum[1]), 1.0)),
                "val_loss": float(val_loss), "val_mae": val["mae"], "best": bool(is_best),
                "time_s": time.perf_counter() - t0,
                "train_structures_per_s": float(n_struct_t[0]) / max(t_train, 1e-9),
            }
            history.append(rec)
            if rank == 0:
                if is_best:
                    save_model(model, best_path, {**metadata_base, "epoch": epoch, "val_loss": val_loss,
                                                  "val_mae": val["mae"]})
                state = {
                    "format": "ase_etgnn-checkpoint", "epoch": epoch,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "best_val": best_val, "best_epoch": best_epoch, "since_best": since_best,
                    "config_json": json.dumps(config.to_dict()), "split_json": json.dumps(split),
                    "normalization_json": json.dumps(norm),
                    # shuffling is derived from (seed, epoch): no generator state needs saving
                    "rng": {"shuffle_seed": config.seed, "next_epoch": epoch + 1},
                }
                atomic_torch_save(state, ckpt_path)
                _append_line(log_path, json.dumps(rec))
                say(_fmt_epoch(rec, config.epochs))
        epochs_run = epoch if history else start_epoch

        # ranks must hold identical weights
        agree = True
        if world > 1:
            flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])
            chk = torch.tensor([float(flat.sum()), float((flat * flat).sum())], dtype=torch.float64)
            gathered = [torch.zeros_like(chk) for _ in range(world)]
            dist.all_gather(gathered, chk)
            agree = all(torch.allclose(g, gathered[0], rtol=1e-10, atol=0) for g in gathered)
        if rank == 0:
            summary = {"best_epoch": best_epoch, "best_val_loss": best_val, "epochs_run": epochs_run,
                       "stopped_early": stopped_early, "world_size": world, "ranks_agree": agree,
                       "best_model": best_path, "heads": list(heads), "species": list(species),
                       "normalization": norm}
            atomic_write_text(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
            if stopped_early:
                say(f"early stopping: no improvement for {config.early_stopping_patience} epochs")
            say(f"best validation loss {best_val:.4e} at epoch {best_epoch}; model written to {best_path}")
        if not agree:
            raise RuntimeError("DDP ranks ended with different weights")
        train_ds.close()
        if val_ds is not None:
            val_ds.close()
        return TrainResult(out_dir, best_path, best_epoch, best_val, epochs_run, stopped_early, tuple(history),
                           world)
    finally:
        if initialised_here:
            dist.destroy_process_group()
