"""The training loop: ``train(config)`` sets a run up (run directory, model provenance, loss terms, data
loaders, optimiser) and a :class:`Trainer` runs its epochs, validation, checkpoints and best-model export.

Reproducibility: no global RNG is used.  The model is initialised from ``seed``; the split from
``split_seed``; the shuffling order of epoch ``e`` from ``(seed, e)`` (``DistributedSampler`` seeding), so
a run resumed from a checkpoint (model, optimizer, scheduler, early-stopping state, epoch) continues
exactly as the uninterrupted run would.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .. import save_model
from ..conventions import atomic_torch_save, resolve_device, resolve_dtype
from ..dataset import ETGNNDataset, collate_batch
from ..records import RecordReader, RecordSet
from ..properties import PROPERTIES, loss_target
from .config import TrainConfig
from .distributed import all_reduce_, process_group, rank_and_world, ranks_agree, wrap_ddp
from .losses import LossTerms, Predictor, select_loss_terms
from .normalization import loss_scales
from .provenance import Provenance, read_checkpoint, resolve_provenance
from .splits import bootstrap_sample
from .rundir import RunDir, erase_progress_bar, format_epoch, progress_bar

__all__ = ["TrainResult", "Trainer", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns: the run directory, the exported model (``best.pt``) with its epoch and
    validation loss, the epochs run, whether early stopping ended the run, the logged epochs (epoch 0: the
    starting weights, before training) and the number of processes."""

    output_dir: str
    best_path: str
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    history: Tuple[Dict[str, Any], ...]
    world_size: int = 1


@dataclass
class BestSoFar:
    """Early-stopping state: the best validation loss, its epoch, and epochs since."""

    val_loss: float = math.inf
    epoch: int = 0
    since: int = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch's validation loss; True if it is the best so far."""
        if val_loss < self.val_loss:
            self.val_loss, self.epoch, self.since = val_loss, epoch, 0
            return True
        self.since += 1
        return False


def trainable_parameters(model, train_heads: Sequence[str]) -> List[torch.nn.Parameter]:
    """Every parameter of ``model``, or only those of the heads ``train_heads``: the others are frozen
    (``requires_grad = False``), so they keep their values exactly."""
    if not train_heads:
        return list(model.parameters())
    missing = [h for h in train_heads if h not in model.heads_]
    if missing:
        raise ValueError(f"train_heads: the model has no head {missing[0]!r} (heads: {list(model.heads_)})")
    keep = {id(p) for h in train_heads for p in model.heads_[h].parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return [p for p in model.parameters() if id(p) in keep]


class Trainer:
    """Epochs, validation, checkpoints and ``best.pt`` of one run (built by :func:`train`).

    Every rank runs the same steps; rank 0 writes the files.  ``say`` prints (rank 0, ``progress``).
    """

    def __init__(self, config: TrainConfig, origin: Provenance, terms: LossTerms, run_dir: RunDir,
                 records: Dict[str, RecordSet], device: torch.device, dtype: torch.dtype, rank: int, world: int,
                 say: Callable[[str], None]):
        self.config, self.origin, self.terms, self.run_dir = config, origin, terms, run_dir
        self.device, self.dtype, self.rank, self.world, self.say = device, dtype, rank, world, say
        self.model = origin.model
        predictor = Predictor(self.model, config.forces_mode, "stress" in terms.names)
        self.conservative = predictor.conservative
        # masked losses keep every head in the graph; only heads without a loss term are unused
        self.net = (wrap_ddp(predictor, device, any(h not in terms.names for h in origin.heads)) if world > 1
                    else predictor)
        self.opt = torch.optim.AdamW(trainable_parameters(self.model, config.train_heads), lr=config.lr,
                                     weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="min", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr)
        self.best = BestSoFar()
        self.start_epoch = 0
        ckpt = origin.checkpoint
        if ckpt is not None:
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.start_epoch = int(ckpt["epoch"])
            self.best = BestSoFar(float(ckpt["best_val"]), int(ckpt["best_epoch"]), int(ckpt["since_best"]))
        # graphs as the calculator builds them: the model's cutoff and effective triplet cutoff
        cfg = self.model.config
        dataset_kw = dict(cutoff=cfg.cutoff, triplet_cutoff=cfg.effective_triplet_cutoff,
                          properties=tuple(sorted(set(terms.targets) | set(origin.heads))))
        self.train_ds = ETGNNDataset(records["train"], **dataset_kw)
        self.val_ds = ETGNNDataset(records["val"], **dataset_kw) if records["val"].names else None
        collate = functools.partial(collate_batch, dtype=dtype, properties=terms.targets)
        self.sampler = DistributedSampler(self.train_ds, num_replicas=world, rank=rank, shuffle=True,
                                          seed=config.seed, drop_last=False)
        loader_kw: Dict[str, Any] = dict(num_workers=config.num_workers, collate_fn=collate,
                                         persistent_workers=config.num_workers > 0)
        self.train_loader = DataLoader(self.train_ds, batch_size=config.batch_size, sampler=self.sampler, **loader_kw)
        self.val_loader = (DataLoader(self.val_ds, batch_size=config.eval_batch_size or config.batch_size,
                                      shuffle=False, **loader_kw) if self.val_ds is not None else [])
        self.metadata = {
            "trained_by": "ase_etgnn.train", "data": os.path.abspath(config.data),
            "split": {k: len(v) for k, v in origin.split.items()}, "normalization": origin.normalization,
            "train_config": config.to_dict(), "world_size": world,
            # per epoch: records drawn and distinct ones (they differ under ``bootstrap``)
            "train_structures": {"drawn": len(records["train"].names), "distinct": len(set(records["train"].names))},
        }
        if origin.init_from is not None:
            self.metadata["init_from"] = origin.init_from

    def close(self) -> None:
        self.train_ds.close()
        if self.val_ds is not None:
            self.val_ds.close()

    # ----------------------------------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int, show_bar: bool) -> Tuple[torch.Tensor, float, float]:
        """One pass over the training split: ``(loss sums [sum of batch losses, n_batches] over ranks,
        structures over ranks, seconds)``."""
        t0 = time.perf_counter()
        self.sampler.set_epoch(epoch)
        self.net.train()
        loss_sum = torch.zeros(2, dtype=torch.float64)  # [sum of batch losses, n_batches]
        n_batches = len(self.train_loader)
        n_struct = 0
        for bi, batch in enumerate(self.train_loader):
            batch = batch.to(self.device)
            loss = self.terms.total(self.net(batch.graph), batch, self.dtype)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.opt.step()
            loss_sum[0] += float(loss.detach())
            loss_sum[1] += 1
            n_struct += int(batch.n_atoms.shape[0])
            if show_bar:
                progress_bar(bi + 1, n_batches, epoch, float(loss_sum[0] / loss_sum[1]), t0)
        if show_bar:
            erase_progress_bar()
        seconds = time.perf_counter() - t0
        all_reduce_(loss_sum)
        n_struct_t = all_reduce_(torch.tensor([float(n_struct)], dtype=torch.float64))
        return loss_sum, float(n_struct_t[0]), seconds

    def evaluate(self) -> Dict[str, Any]:
        """Validation over all ranks: ``{"loss": weighted loss, "mae": {term: component-wise MAE}}`` (terms
        without validation labels are left out of both)."""
        names = self.terms.names
        sums = torch.zeros(len(names), 4, dtype=torch.float64)  # [norm_sum, count, abs_sum, n_components]
        self.net.eval()
        for batch in self.val_loader:
            batch = batch.to(self.device)
            if self.conservative:  # -dE/dr needs autograd
                out = self.net(batch.graph)
            else:
                with torch.no_grad():
                    out = self.net(batch.graph)
            for k, name in enumerate(names):
                tgt = loss_target(name)
                mask = batch.masks[tgt]  # [n]
                pred = out[name].detach()
                _, tot, cnt = self.terms.term(pred, batch, name)
                absdiff = (pred - batch.targets[tgt]).abs().reshape(mask.shape[0], -1)  # [n, 3**rank]
                sums[k, 0] += float(tot)
                sums[k, 1] += float(cnt)
                sums[k, 2] += float((absdiff * mask.unsqueeze(-1)).sum())
                sums[k, 3] += float(cnt) * (3 ** PROPERTIES[tgt].rank)
        all_reduce_(sums)
        self.net.train()
        loss = 0.0
        mae: Dict[str, float] = {}
        for k, name in enumerate(names):
            norm_sum, cnt, abs_sum, ncomp = sums[k].tolist()
            if cnt == 0:
                continue
            lp = norm_sum / cnt
            if self.terms.normalize:
                lp /= self.terms.scales.get(name, 1.0)
            loss += self.terms.weights.get(name, 0.0) * lp
            mae[name] = abs_sum / ncomp
        return {"loss": loss, "mae": mae}

    # ---------------------------------------------------------------------------------------- files
    def export_best(self, epoch: int, val_loss: float, val_mae: Dict[str, float]) -> None:
        """Write ``best.pt`` (rank 0 calls it)."""
        save_model(self.model, self.run_dir.best, {**self.metadata, "epoch": epoch, "val_loss": val_loss,
                                                   "val_mae": val_mae})

    def save_checkpoint(self, epoch: int) -> None:
        """Write ``checkpoint.pt``: everything a resumed run needs to continue exactly (rank 0 calls it)."""
        state = {
            "format": "ase_etgnn-checkpoint", "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "best_val": self.best.val_loss, "best_epoch": self.best.epoch, "since_best": self.best.since,
            "config_json": json.dumps(self.config.to_dict()), "split_json": json.dumps(self.origin.split),
            "normalization_json": json.dumps(self.origin.normalization),
            # shuffling is derived from (seed, epoch): no generator state needs saving
            "rng": {"shuffle_seed": self.config.seed, "next_epoch": epoch + 1},
        }
        atomic_torch_save(state, self.run_dir.checkpoint)

    def log(self, rec: Dict[str, Any]) -> None:
        if self.rank == 0:
            self.run_dir.append_log(rec)
            self.say(format_epoch(rec, self.config.epochs))

    # ------------------------------------------------------------------------------------------ run
    def validate_start(self) -> Dict[str, Any]:
        """Epoch 0: validation of the starting weights, for reference; fine-tuning makes them the first
        candidate for ``best.pt``, so that it is never worse than the file."""
        val0 = self.evaluate()
        start_is_best = self.origin.start_is_candidate and bool(val0["mae"])
        rec0 = {"epoch": 0, "lr": float(self.opt.param_groups[0]["lr"]), "train_loss": None,
                "val_loss": float(val0["loss"]), "val_mae": val0["mae"], "best": start_is_best, "time_s": 0.0,
                "train_structures_per_s": None}
        if start_is_best:
            self.best.val_loss, self.best.epoch = float(val0["loss"]), 0
        self.log(rec0)
        if start_is_best and self.rank == 0:
            self.export_best(0, rec0["val_loss"], rec0["val_mae"])
        return rec0

    def fit(self, history: List[Dict[str, Any]]) -> TrainResult:
        """Run the epochs after ``start_epoch`` (``history``: the epochs logged so far) and write the summary."""
        config = self.config
        if self.origin.checkpoint is None:
            history.append(self.validate_start())
        stopped_early = False
        show_bar = config.progress and self.rank == 0 and sys.stderr.isatty()
        epoch = self.start_epoch
        for epoch in range(self.start_epoch + 1, config.epochs + 1):
            if config.early_stopping_patience and self.best.since >= config.early_stopping_patience:
                stopped_early = True
                epoch -= 1
                break
            t0 = time.perf_counter()
            loss_sum, n_struct, t_train = self.train_epoch(epoch, show_bar)
            val = self.evaluate()
            val_loss = val["loss"] if val["mae"] else float(loss_sum[0] / loss_sum[1])
            self.sched.step(val_loss)
            is_best = self.best.update(epoch, val_loss)
            rec = {
                "epoch": epoch, "lr": float(self.opt.param_groups[0]["lr"]),
                "train_loss": float(loss_sum[0] / max(float(loss_sum[1]), 1.0)),
                "val_loss": float(val_loss), "val_mae": val["mae"], "best": bool(is_best),
                "time_s": time.perf_counter() - t0,
                "train_structures_per_s": n_struct / max(t_train, 1e-9),
            }
            history.append(rec)
            if self.rank == 0:
                if is_best:
                    self.export_best(epoch, val_loss, val["mae"])
                self.save_checkpoint(epoch)
            self.log(rec)
        epochs_run = epoch if history else self.start_epoch
        agree = ranks_agree(self.model, self.world)  # ranks must hold identical weights
        best_path = self.run_dir.best
        if self.rank == 0:
            self.run_dir.write_summary({
                "best_epoch": self.best.epoch, "best_val_loss": self.best.val_loss, "epochs_run": epochs_run,
                "stopped_early": stopped_early, "world_size": self.world, "ranks_agree": agree,
                "best_model": best_path, "heads": list(self.origin.heads), "species": list(self.origin.species),
                "normalization": self.origin.normalization})
            if stopped_early:
                self.say(f"early stopping: no improvement for {config.early_stopping_patience} epochs")
            self.say(f"best validation loss {self.best.val_loss:.4e} at epoch {self.best.epoch}; "
                     f"model written to {best_path}")
        if not agree:
            raise RuntimeError("DDP ranks ended with different weights")
        return TrainResult(self.run_dir.path, best_path, self.best.epoch, self.best.val_loss, epochs_run,
                           stopped_early, tuple(history), self.world)


def train(config: TrainConfig, resume: bool = False, log: Callable[[str], None] = print,
          overwrite: bool = False) -> TrainResult:
    """Train a model as described by ``config`` (package docstring).

    A fresh run (``resume=False``) refuses an output directory that already holds a run (any of
    ``RUN_FILES``) unless ``overwrite``, which first moves those files to ``output_dir/replaced-<time>/``:
    nothing of an earlier run is truncated or overwritten unasked.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised here (gloo on CPU, nccl on
    CUDA) and the model wrapped in ``DistributedDataParallel``; rank 0 writes all files.
    """
    with process_group(config.device):
        rank, world = rank_and_world()
        device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dtype = resolve_dtype(config.dtype)
        if config.torch_threads:
            torch.set_num_threads(int(config.torch_threads))

        def say(msg: str) -> None:
            if rank == 0 and config.progress:
                log(msg)

        run_dir = RunDir(os.path.abspath(config.output_dir))
        earlier = run_dir.earlier_run(resume, overwrite)
        checkpoint = read_checkpoint(run_dir.checkpoint, config) if resume else None
        if rank == 0:
            os.makedirs(run_dir.path, exist_ok=True)
        with RecordReader(config.data) as reader:  # the one pass over the records before training
            origin = resolve_provenance(config, reader, checkpoint, run_dir.checkpoint, device, dtype)
            train_idx = bootstrap_sample(origin.split["train"], config.seed) if config.bootstrap else origin.split["train"]
            records = {"train": reader.records(train_idx),
                       "val": reader.records(origin.split["val"][rank::world])}
        labels = origin.labels
        names, weights = select_loss_terms(origin.heads, labels.present, config.forces_mode, config.loss_weights)
        scales = loss_scales(origin.normalization, names, labels.numbers, labels.targets, origin.species)
        terms = LossTerms(tuple(names), weights, scales, config.normalize_loss)
        if origin.init_from is not None:
            say(f"initial weights from {config.init_from}")
        trainer = Trainer(config, origin, terms, run_dir, records, device, dtype, rank, world, say)
        try:
            history: List[Dict[str, Any]] = []
            if origin.checkpoint is not None:
                history = run_dir.read_history(trainer.start_epoch)
                if rank == 0:
                    run_dir.write_history(history)
                say(f"resuming {run_dir.path} after epoch {trainer.start_epoch}")
            elif rank == 0:
                if earlier:  # --overwrite: moved aside only now that the new run's settings and data checked out
                    dest = run_dir.move_aside(earlier)
                    say(f"--overwrite: the previous run's {', '.join(earlier)} moved to {dest}")
                run_dir.start(config, origin.split)
            n_params = sum(p.numel() for p in trainer.model.parameters())
            split = origin.split
            drawn = trainer.metadata["train_structures"]
            boot = (f" ({'bootstrap: ' if config.bootstrap else 'oversampled: '}{drawn['distinct']} distinct)"
                    if config.bootstrap or drawn["drawn"] != drawn["distinct"] else "")
            say(f"ETGNN: species {list(origin.species)}, heads {list(origin.heads)}, {n_params} parameters, "
                f"device {device}, {config.dtype}, world size {world}; data {config.data}: {len(split['train'])} "
                f"train{boot} / {len(split['val'])} val / {len(split['test'])} test structures")
            return trainer.fit(history)
        finally:
            trainer.close()
