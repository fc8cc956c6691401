"""Training of ETGNN models on HDF5 datasets (single process or ``torchrun`` DistributedDataParallel).

Defaults follow the paper (Table S2 for SiO2: AdamW, lr 5e-4, lr decay 0.5 on plateau, batch 40;
appendix A: Euclidean-distance loss ``mean_t ||pred_t - target_t||``, not squared).

Modules, in the order a run uses them:

* ``config``: :class:`TrainConfig` (TOML/YAML keys), ``--set`` overrides;
* ``splits``: train/val/test splits and split files (also ``etgnn dataset split``);
* ``provenance``: where the model comes from (fresh, ``init_from``, ``--resume``), resolved once;
* ``normalization``: target normalisation fitted on the training split, loss scales;
* ``losses``: predictions per ``forces_mode``, loss terms, the Euclidean loss;
* ``distributed``: process group and DDP helpers;
* ``rundir``: the output directory (files, log, refusal to overwrite an earlier run);
* ``trainer``: :func:`train` and the epoch loop, validation, checkpoints, best-model export.
"""
from .config import TrainConfig, load_train_config, parse_overrides
from .losses import euclidean_loss
from .normalization import compute_normalization
from .splits import check_split_fits, extend_split, load_split, read_split, split_indices
from .trainer import TrainResult, train

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
