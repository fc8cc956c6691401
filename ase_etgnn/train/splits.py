"""Train/validation/test splits of a data set's records: seeded random splits, grown splits that keep an older
split's records where they were, and split files (JSON ``{"train": [...], "val": [...], "test": [...]}``
of record indices) checked against a data set.  Used by ``etgnn train`` and ``etgnn dataset split``.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..records import count_records

__all__ = ["SUBSETS", "valid_fractions", "split_indices", "extend_split", "carry_split", "read_split",
           "check_split_fits", "load_split", "indices_from_spec", "bootstrap_sample"]

#: the subsets of a split, in order
SUBSETS = ("train", "val", "test")


def valid_fractions(fractions: Sequence[float]) -> bool:
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


def bootstrap_sample(indices: Sequence[int], seed: int) -> List[int]:
    """``len(indices)`` draws from ``indices`` with replacement, seeded (sorted; repeats kept): the training
    records of a bootstrap committee member (``TrainConfig.bootstrap``)."""
    rng = np.random.default_rng([int(seed), 0xB007])  # a stream of its own: not the split's or the shuffle's
    return sorted(int(i) for i in rng.choice(np.asarray(indices, dtype=np.int64), size=len(indices), replace=True))


def extend_split(previous: Mapping[str, Sequence[int]], n: int, fractions: Sequence[float], seed: int,
                 groups: Optional[Sequence[Any]] = None) -> Dict[str, List[int]]:
    """A split of ``range(n)`` that keeps every record of ``previous`` where it was and splits the others
    (records appended since) by ``fractions``: a grown data set whose old test set stays unseen.

    ``groups`` ([n] labels, e.g. provenance tags): new records are split per group, so that every group
    with enough new records reaches validation and test.
    """
    if not valid_fractions(fractions):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    old = {name: [int(i) for i in previous.get(name, [])] for name in SUBSETS}
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


def carry_split(origins: Sequence[Optional[Tuple[str, str]]],
                sources: Mapping[str, Mapping[str, str]]) -> Dict[str, List[int]]:
    """Subsets of a merged data set's records taken from the splits of the data sets they came from: record
    ``i`` with ``origins[i] = (source, key)`` goes where ``sources[source][key]`` (a subset name) puts it; records
    of other sources, or not in their source's split, stay unassigned (``extend_split`` places them). A joint
    model trained on the result never sees a record that one of the separate models was tested on.
    """
    out: Dict[str, List[int]] = {name: [] for name in SUBSETS}
    for i, origin in enumerate(origins):
        if origin is not None and origin[0] in sources and origin[1] in sources[origin[0]]:
            out[sources[origin[0]][origin[1]]].append(i)
    return out


def read_split(path: str) -> Dict[str, List[int]]:
    """The ``train``/``val``/``test`` integer index lists of a split JSON file (format checks only; see
    :func:`check_split_fits` for the check against a data set)."""
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"split_file {path}: cannot read a JSON split ({e})") from None
    if not isinstance(raw, dict) or not set(SUBSETS) <= set(raw):
        raise ValueError(f"split_file {path}: expected an object with 'train', 'val' and 'test' index lists")
    split = {}
    for name in SUBSETS:
        idx = raw[name]
        if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise ValueError(f"split_file {path}: '{name}' must be a list of integer record indices")
        split[name] = sorted(idx)
    return split


def check_split_fits(split: Mapping[str, Sequence[int]], n_records: int, split_path: str,
                     data_path: Optional[str] = None) -> None:
    """``ValueError`` (one line naming the split file and the data set) unless every index of ``split`` is a
    record of a data set of ``n_records`` records, no record is in two subsets and no validation or test
    record is listed twice.  A training record listed k times is drawn k times per epoch (oversampling).

    A split made for another (larger) data set fails here instead of deep inside a data loader; a split of
    fewer records than the data set is accepted (records appended since stay unused, by design).
    """
    on = f" ({data_path})" if data_path else ""
    seen: Dict[int, str] = {}
    for name in SUBSETS:
        idx = [int(i) for i in split.get(name, [])]
        bad = [i for i in idx if not 0 <= i < n_records]
        if bad:
            raise ValueError(f"split_file {split_path}: '{name}' has indices outside the dataset's {n_records} "
                             f"records{on}: {bad[:5]}{' ...' if len(bad) > 5 else ''} (highest {max(bad)}); "
                             "was the split made for another data set?")
        for i in idx:
            if i in seen and (seen[i] != name or name != "train"):
                where = f"twice in '{name}'" if seen[i] == name else f"in both '{seen[i]}' and '{name}'"
                raise ValueError(f"split_file {split_path}: record {i} is {where} (only 'train' may repeat a "
                                 "record, to oversample it)")
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


def indices_from_spec(spec: Optional[str], data: str) -> Optional[List[int]]:
    """Record indices of ``SPLIT_JSON[:NAME]`` (NAME default ``test``), checked against ``data``'s records."""
    if not spec:
        return None
    path, _, name = spec.rpartition(":")
    if not path:
        path, name = spec, "test"
    try:
        with open(path) as fh:
            split = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"split file {path}: not JSON ({exc})") from None
    if not isinstance(split, dict) or name not in split:
        raise ValueError(f"split file {path}: no split {name!r} (has {sorted(split) if isinstance(split, dict) else '?'})")
    idx = split[name]
    if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
        raise ValueError(f"split file {path}: {name!r} must be a list of integer record indices")
    n = count_records(data)
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"split file {path} does not fit data set {data}: {name!r} has {len(bad)} indices outside "
                         f"its {n} records (e.g. {bad[:3]}); was the split made for another data set?")
    return idx
