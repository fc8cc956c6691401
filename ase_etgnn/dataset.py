"""The training-side dataset: graphs of data set records for torch, and their collation into batches.

:class:`ETGNNDataset` is a torch ``Dataset`` over an HDF5 data set (``ase_etgnn.records``) that builds
graphs (``ase_etgnn.graph``); it never keeps an HDF5 handle in the parent process: it opens the file
lazily in each process (DataLoader worker) that reads from it.  :func:`collate_batch` stacks its items
into a :class:`Batch` (model input graph, targets and masks of missing targets).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .graph import atoms_to_graph, collate_graphs
from .properties import get_property_spec
from .records import RecordReader, RecordSet, open_read, read_named

__all__ = [
    "ETGNNDataset",
    "dataset_item",
    "Batch",
    "collate_batch",
]


def dataset_item(graph, n_atoms: int, targets: Mapping[str, np.ndarray], index: int,
                 key: Optional[str]) -> Dict[str, Any]:
    """One structure as :func:`collate_batch` takes it: ``{"graph", "targets", "n_atoms", "index", "key"}``."""
    return {"graph": graph, "targets": dict(targets), "n_atoms": int(n_atoms), "index": int(index), "key": key}


class ETGNNDataset:
    """Torch ``Dataset`` of graphs over an HDF5 file: item ``i`` is a :func:`dataset_item` dict
    ``{"graph": atoms_to_graph(atoms), "targets": {name: float64 ndarray}, "n_atoms": int, "index": int,
    "key": str}``; missing targets are simply absent (masked at collation).  Records without graphs:
    :class:`RecordReader`.

    The HDF5 file is opened lazily, once per process (safe with ``DataLoader(num_workers>0)``); the
    constructor opens it only to list the records when given a path, not when given a :class:`RecordSet`.
    The set of records is fixed at construction (records appended later are not seen).

    Args:
        source: dataset file, or a :class:`RecordSet` of it (from an open :class:`RecordReader`).
        cutoff, triplet_cutoff: graph cutoffs (Angstrom): the model's ``config.cutoff`` and
            ``config.effective_triplet_cutoff``.
        properties: targets to load (default: all registry properties present).
        indices: optional subset of record indices (e.g. a train split), positions in ``source``.
        cache_graphs: keep built graphs in memory (per process) to avoid rebuilding every epoch.
        graph_fn: override of ``ase_etgnn.graph.atoms_to_graph`` (testing).
    """

    def __init__(self, source, cutoff: float, triplet_cutoff: Optional[float] = None,
                 properties: Optional[Sequence[str]] = None, indices: Optional[Sequence[int]] = None,
                 cache_graphs: bool = True, graph_fn: Optional[Callable[..., Any]] = None):
        if not isinstance(source, RecordSet):
            with RecordReader(source) as reader:
                source = reader.records()
        if indices is not None:
            source = source.subset(indices)
        self.path = os.path.abspath(source.path)
        self.cutoff = float(cutoff)
        self.triplet_cutoff = None if triplet_cutoff is None else float(triplet_cutoff)
        if properties is not None:
            for p in properties:
                get_property_spec(p)
        self.properties = None if properties is None else tuple(properties)
        self._names: Tuple[str, ...] = source.names
        self.cache_graphs = bool(cache_graphs)
        self._graph_fn = atoms_to_graph if graph_fn is None else graph_fn
        self._file = None
        self._pid: Optional[int] = None
        self._cache: Dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._names)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        state["_cache"] = {}
        return state

    def _handle(self):
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            self._file = open_read(self.path)
            self._pid = pid
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                self._file.close()
        self._file = None

    def __del__(self):  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()

    def __getitem__(self, i: int) -> Dict[str, Any]:
        i = int(i)
        if i < 0:
            i += len(self)
        name = self._names[i]
        atoms, targets, prov = read_named(self._handle(), self.path, name, self.properties)
        if self.cache_graphs and i in self._cache:
            graph = self._cache[i]
        else:
            graph = self._graph_fn(atoms, cutoff=self.cutoff, triplet_cutoff=self.triplet_cutoff)
            if self.cache_graphs:
                self._cache[i] = graph
        return dataset_item(graph, len(atoms), targets, i, prov.get("key"))


@dataclass(frozen=True)
class Batch:
    """A collated mini-batch.

    Attributes:
        graph: ``collate_graphs(...)`` output (model input).
        targets: ``{name: tensor}``; per-atom properties ``[N_total, ...]`` (atoms concatenated in batch
            order), per-structure ``[B, ...]``.  Entries where the target is missing are 0 and masked.
        masks: ``{name: bool tensor}`` ``[N_total]`` or ``[B]``: True where the target is present.
        n_atoms: ``[B]`` long tensor of atoms per structure.
        indices: dataset indices of the structures.
    """

    graph: Any
    targets: Dict[str, Any]
    masks: Dict[str, Any]
    n_atoms: Any
    indices: Tuple[int, ...] = field(default_factory=tuple)

    def to(self, device) -> "Batch":
        def mv(x):
            if isinstance(x, torch.Tensor):
                return x.to(device)
            if isinstance(x, dict):
                return {k: mv(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return type(x)(mv(v) for v in x)
            return x

        return Batch(mv(self.graph), mv(self.targets), mv(self.masks), mv(self.n_atoms), self.indices)


def collate_batch(items: Sequence[Mapping[str, Any]], dtype=None, device=None,
                  properties: Optional[Sequence[str]] = None, collate_fn: Optional[Callable[..., Any]] = None) -> Batch:
    """Collate :class:`ETGNNDataset` items into a :class:`Batch` (targets + masks alongside the graph).

    ``properties`` fixes which target keys appear (default: union over the items); a property absent
    from every item still gets an all-False mask so that batches have a stable structure.
    """
    if dtype is None:
        dtype = torch.float32
    if collate_fn is None:
        collate_fn = collate_graphs
    graph = collate_fn([it["graph"] for it in items], dtype=dtype, device=device)
    n_atoms = [int(it["n_atoms"]) for it in items]
    n_total = sum(n_atoms)
    names = list(properties) if properties is not None else sorted({k for it in items for k in it["targets"]})
    targets: Dict[str, torch.Tensor] = {}
    masks: Dict[str, torch.Tensor] = {}
    for name in names:
        spec = get_property_spec(name)
        cart = (3,) * spec.rank
        if spec.per_atom:
            val = np.zeros((n_total,) + cart)
            mask = np.zeros(n_total, dtype=bool)
            start = 0
            for it, n in zip(items, n_atoms):
                if name in it["targets"]:
                    val[start:start + n] = it["targets"][name]
                    mask[start:start + n] = True
                start += n
        else:
            val = np.zeros((len(items),) + cart)
            mask = np.zeros(len(items), dtype=bool)
            for b, it in enumerate(items):
                if name in it["targets"]:
                    val[b] = it["targets"][name]
                    mask[b] = True
        targets[name] = torch.as_tensor(val, dtype=dtype, device=device)
        masks[name] = torch.as_tensor(mask, device=device)
    return Batch(graph, targets, masks, torch.as_tensor(n_atoms, dtype=torch.long, device=device),
                 tuple(int(it.get("index", -1)) for it in items))
