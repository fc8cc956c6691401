"""Periodic crystal graphs: neighbour lists, triplets and batching (pure functions).

Conventions (tested in ``tests/test_graph.py``):

* An *edge* ``e = (src, dst, shift)`` joins atom ``src`` to the periodic image ``shift`` (integer
  lattice translation) of atom ``dst``. Its vector points **from src to dst**:
  ``vec_e = r_dst - r_src + shift @ cell`` (A). In the paper's notation an edge ``k -> j`` is
  ``src = k``, ``dst = j`` and ``e_kj = vec / |vec|`` is the unit vector from atom k to atom j.
  Per-atom tensors of atom ``j`` sum over the edges whose ``dst`` is ``j`` (Eqs. 3 and 5).
* The list is symmetric: every edge ``(k, j, S)`` has its reverse ``(j, k, -S)``.
* A *triplet* ``k -> j -> i`` pairs an incoming edge ``kj`` (``dst == j``) with an outgoing edge ``ji``
  (``src == j``). Only the true back-edge is excluded: ``i == k`` *and* ``S_kj + S_ji == 0``, so in a
  small cell an atom can form a triplet with its own periodic image.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, TypedDict

import numpy as np
import torch

__all__ = [
    "Graph",
    "GraphBatch",
    "neighbour_edges",
    "build_triplets",
    "reverse_edge_index",
    "atoms_to_graph",
    "collate_graphs",
    "prune_graph",
    "validate_structure",
    "GraphSizeEstimate",
    "estimate_graph_size",
    "effective_triplet_cutoff",
    "check_graph_size",
    "min_pair_distance",
    "check_overlaps",
    "OverlapWarning",
    "MAX_EDGES",
    "MAX_TRIPLETS",
    "MIN_VOLUME_PER_ATOM",
    "MIN_DISTANCE_HARD",
    "MIN_DISTANCE_WARN",
]

#: Refuse graphs estimated (before allocation) to have more edges / triplets than this. 5e7 edges is a
#: 700,000-atom quartz cell at a 6 A cutoff; the model needs ~1-3 kB per triplet, so 1e8 triplets is
#: already far beyond a large machine (the graph arrays alone take ~10 GiB while being built).
MAX_EDGES = 50_000_000
MAX_TRIPLETS = 100_000_000
#: Volume per atom (A^3) below which a structure is unphysical: the densest solids have ~5.7 (diamond);
#: alpha-quartz has 12.6. Below this the graph is refused when the cutoff sphere holds > 1000 atoms.
MIN_VOLUME_PER_ATOM = 1.0
#: Pair distances (A): below ``MIN_DISTANCE_HARD`` unit vectors are undefined (``check_overlaps`` raises);
#: below ``MIN_DISTANCE_WARN`` atoms are closer than any chemical bond (H2: 0.74 A), so far outside any
#: training data that the prediction is meaningless (``check_overlaps`` warns).
MIN_DISTANCE_HARD = 1e-3
MIN_DISTANCE_WARN = 0.5
# bytes per edge / triplet while the graph arrays are built (measured peak, numpy temporaries included)
_BYTES_PER_EDGE = 450
_BYTES_PER_TRIPLET = 80


@dataclass(frozen=True)
class Graph:
    """One structure's graph, numpy-backed (cheap to build in DataLoader workers).

    Attributes:
        numbers: [n_atoms] atomic numbers.
        positions: [n_atoms, 3] Cartesian positions, A.
        cell: [3, 3] lattice vectors as rows, A (zeros allowed along non-periodic axes).
        pbc: [3] periodic flags.
        edge_src, edge_dst: [n_edges] atom indices.
        edge_shift: [n_edges, 3] integer image shifts of ``dst``.
        edge_reverse: [n_edges] index of the reverse edge.
        trip_in: [n_triplets] index of edge ``k -> j``.
        trip_out: [n_triplets] index of edge ``j -> i``.
        cutoff, triplet_cutoff: the radii it was built with, A (``triplet_cutoff`` at most ``cutoff``: the
            effective triplet cutoff of a model, ``ETGNNConfig.effective_triplet_cutoff``).
        skin: extra radius (A) the lists were built with; ``prune_graph`` drops what lies beyond.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_shift: np.ndarray
    edge_reverse: np.ndarray
    trip_in: np.ndarray
    trip_out: np.ndarray
    cutoff: float
    triplet_cutoff: float
    skin: float = 0.0

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    @property
    def n_edges(self) -> int:
        return int(len(self.edge_src))

    @property
    def n_triplets(self) -> int:
        return int(len(self.trip_in))


def effective_triplet_cutoff(cutoff: float, triplet_cutoff: Optional[float]) -> float:
    """The triplet cutoff actually used, A: ``triplet_cutoff`` capped at ``cutoff``; ``None`` means ``cutoff``."""
    return float(cutoff if triplet_cutoff is None else min(triplet_cutoff, cutoff))


def validate_structure(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise ``ValueError`` naming the problem for structures no graph can be built from."""
    if len(numbers) == 0:
        raise ValueError("the structure has no atoms")
    if positions.shape != (len(numbers), 3):
        raise ValueError(f"positions must have shape ({len(numbers)}, 3), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise ValueError(f"positions contain NaN or inf (atoms {bad.tolist()[:10]})")
    if not np.all(np.isfinite(cell)):
        raise ValueError("the cell contains NaN or inf")
    if np.any(pbc):
        per = cell[pbc]  # [n_periodic, 3]
        sv = np.linalg.svd(per, compute_uv=False)
        if sv.min() < 1e-6 * max(1.0, sv.max()):
            axes = np.nonzero(pbc)[0].tolist()
            raise ValueError(
                f"pbc is True along axes {axes} but the cell vectors there are zero or linearly dependent "
                f"(cell={cell.tolist()}); set a proper cell or pbc=False"
            )


def _neighbour_cell(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """A non-singular cell for matscipy: periodic vectors kept, degenerate non-periodic ones replaced.

    Vectors along non-periodic axes only bound the binning box (their shifts are always zero), so
    replacing them changes no edge.
    """
    cell = np.array(cell, dtype=float)  # [3, 3]
    if abs(np.linalg.det(cell)) > 1e-8:
        return cell
    extent = float(np.ptp(positions, axis=0).max()) + 2.0 * cutoff + 1.0 if len(positions) else 1.0
    out = cell.copy()
    for a, v in zip(_non_periodic_axes(pbc), _vacuum_directions(cell, pbc)):
        out[a] = v * extent
    return out


def _non_periodic_axes(pbc: np.ndarray) -> list[int]:
    return [a for a in range(3) if not pbc[a]]


def _vacuum_directions(cell: np.ndarray, pbc: np.ndarray) -> list[np.ndarray]:
    """Unit vectors, one per non-periodic axis, orthogonal to the periodic cell vectors and to each other.

    Gram-Schmidt over the periodic vectors first (they need not be orthogonal: hexagonal cells are at
    120 degrees), then over trial axes; [3] each.
    """
    basis: list[np.ndarray] = []
    for a in range(3):
        if pbc[a]:
            v = cell[a] - sum(np.dot(cell[a], b) * b for b in basis)
            basis.append(v / np.linalg.norm(v))  # validate_structure guarantees independence
    out = []
    for _ in _non_periodic_axes(pbc):
        for trial in np.eye(3):
            v = trial - sum(np.dot(trial, b) * b for b in basis)
            if np.linalg.norm(v) > 1e-3:
                v = v / np.linalg.norm(v)
                break
        basis.append(v)
        out.append(v)
    return out


@dataclass(frozen=True)
class GraphSizeEstimate:
    """Expected size of a structure's graph from its number density (before anything is allocated).

    Attributes:
        n_atoms: atoms in the structure.
        volume_per_atom: A^3; along non-periodic axes the box is the atoms' extent, at least 2 cutoffs.
        edges, triplets: expected counts (uniform density; within a factor ~2 for real solids).
        nbytes: expected peak memory while building the graph arrays (the model needs much more).
    """

    n_atoms: int
    volume_per_atom: float
    edges: float
    triplets: float
    nbytes: float

    @property
    def mean_spacing(self) -> float:
        """Cube root of the volume per atom, A."""
        return self.volume_per_atom ** (1.0 / 3.0)


def estimate_graph_size(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, triplet_cutoff: Optional[float] = None
) -> GraphSizeEstimate:
    """Edges ~ N * n * (4/3 pi rc^3) and triplets ~ N * k_t^2 with k_t = n * (4/3 pi rt^3), n = N / V.

    ``V`` is the periodic cell's volume; along non-periodic axes the atoms' extent (at least 2 r for radius r)
    replaces the cell vector. ``cutoff``/``triplet_cutoff`` in A (skin included); positions [N, 3], cell [3, 3].
    """
    positions = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    n = len(positions)
    rt = effective_triplet_cutoff(cutoff, triplet_cutoff)

    def volume_per_atom(r: float) -> float:  # A^3; a finite axis spans the atoms, at least the sphere (2 r)
        box = cell.copy()  # [3, 3]
        for a, v in zip(_non_periodic_axes(pbc), _vacuum_directions(cell, pbc)):
            extent = float(np.ptp(positions @ v)) if n else 0.0
            box[a] = v * max(extent, 2.0 * r)
        return abs(float(np.linalg.det(box))) / max(n, 1)

    vpa = volume_per_atom(float(cutoff))
    k_e = (4.0 / 3.0) * math.pi * float(cutoff) ** 3 / vpa  # expected neighbours per atom
    k_t = (4.0 / 3.0) * math.pi * rt**3 / volume_per_atom(rt)  # within the triplet cutoff
    if not np.any(pbc):  # a finite structure: at most N - 1 neighbours
        k_e, k_t = min(k_e, n - 1.0), min(k_t, n - 1.0)
    edges = n * k_e
    triplets = n * k_t * max(k_t - 1.0, 0.0)
    return GraphSizeEstimate(n, vpa, edges, triplets, edges * _BYTES_PER_EDGE + triplets * _BYTES_PER_TRIPLET)


def _size_problem(est: GraphSizeEstimate, cutoff: float, triplet_cutoff: float) -> Optional[str]:
    """The reason to refuse a graph of this estimated size, or None."""
    dense = est.volume_per_atom < MIN_VOLUME_PER_ATOM and est.edges > 1000 * max(est.n_atoms, 1)
    if not (dense or est.edges > MAX_EDGES or est.triplets > MAX_TRIPLETS):
        return None
    what = (
        f"about {est.edges:.2g} edges and {est.triplets:.2g} triplets (cutoffs {cutoff:g} / {triplet_cutoff:g} A, "
        f"{est.n_atoms} atoms; ~{est.nbytes / 2**30:.3g} GiB to build the graph, the model needs more)"
    )
    if est.volume_per_atom < MIN_VOLUME_PER_ATOM:
        return (
            f"the structure is unphysically dense: {est.volume_per_atom:.3g} A^3 per atom, i.e. atoms "
            f"{est.mean_spacing:.2g} A apart on average (solids have 5-50 A^3 per atom, alpha-quartz 12.6). "
            f"Are positions and cell in nm instead of A (ASE uses A; multiply by 10), or is the cell scaled "
            f"wrongly? Its graph would have {what}"
        )
    return (
        f"the graph is too large: {what}, above the limits of {MAX_EDGES:.2g} edges / {MAX_TRIPLETS:.2g} "
        f"triplets (ase_etgnn.graph.MAX_EDGES / MAX_TRIPLETS). Use a smaller structure, or check the cutoffs "
        f"and the cell ({est.volume_per_atom:.3g} A^3 per atom)"
    )


def check_graph_size(
    atoms, cutoff: float, triplet_cutoff: Optional[float] = None, skin: float = 0.0
) -> GraphSizeEstimate:
    """Raise ``ValueError`` saying what is probably wrong if ``atoms``' graph would be absurdly large.

    ``atoms_to_graph`` does this itself; this is for callers that want to check before other work.
    Returns the estimate (``GraphSizeEstimate``). Cutoffs and skin in A.
    """
    tcut = effective_triplet_cutoff(cutoff, triplet_cutoff)
    est = estimate_graph_size(atoms.positions, atoms.cell.array, atoms.pbc, cutoff + skin, tcut + skin)
    problem = _size_problem(est, cutoff + skin, tcut + skin)
    if problem:
        raise ValueError(problem)
    return est


def neighbour_edges(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs within ``cutoff`` (A) with matscipy, periodic images included, no nearest-N cut.

    Returns ``(src, dst, shift)``: [n_edges], [n_edges], [n_edges, 3] int64, sorted by (dst, src).
    Self-pairs with a non-zero shift (an atom and its own image in a small cell) are kept.
    """
    from matscipy.neighbours import neighbour_list

    positions = np.asarray(positions, dtype=float)
    pbc = np.asarray(pbc, dtype=bool)
    if len(positions) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros((0, 3), dtype=np.int64)
    nl_cell = _neighbour_cell(positions, cell, pbc, cutoff)
    src, dst, shift = neighbour_list("ijS", positions=positions, cell=nl_cell, pbc=pbc, cutoff=float(cutoff))
    src = src.astype(np.int64)
    dst = dst.astype(np.int64)
    shift = shift.astype(np.int64)  # [n_edges, 3]
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], src, dst))
    return src[order], dst[order], shift[order]


def reverse_edge_index(src: np.ndarray, dst: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Index of the reverse edge ``(dst, src, -shift)`` of every edge; [n_edges] int64."""
    n = len(src)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    fwd = np.concatenate([src[:, None], dst[:, None], shift], axis=1)  # [n_edges, 5]
    rev = np.concatenate([dst[:, None], src[:, None], -shift], axis=1)  # [n_edges, 5]
    keys, inv = np.unique(np.concatenate([fwd, rev]), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    lookup = np.full(len(keys), -1, dtype=np.int64)
    lookup[inv[:n]] = np.arange(n)
    out = lookup[inv[n:]]
    if np.any(out < 0):
        raise RuntimeError("neighbour list is not symmetric: an edge has no reverse")
    return out


def build_triplets(
    src: np.ndarray, dst: np.ndarray, shift: np.ndarray, edge_mask: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Triplets ``k -> j -> i`` as pairs (edge kj, edge ji) sharing the central atom j.

    Args:
        src, dst, shift: the edge list ([n_edges], [n_edges], [n_edges, 3]).
        edge_mask: [n_edges] bool, edges allowed in triplets (e.g. shorter than the triplet cutoff).

    Returns ``(trip_in, trip_out)``, [n_triplets] each: ``trip_in`` indexes edge ``k -> j`` and
    ``trip_out`` edge ``j -> i``. Excludes only the true back-edge (``i == k`` and the shifts cancel).
    """
    n_edges = len(src)
    idx = np.arange(n_edges, dtype=np.int64)
    if edge_mask is not None:
        idx = idx[np.asarray(edge_mask, dtype=bool)]
    if len(idx) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z
    n_atoms = int(max(src.max(), dst.max())) + 1
    # incoming edges grouped by their dst atom
    in_sorted = idx[np.argsort(dst[idx], kind="stable")]  # [n_sel]
    in_count = np.bincount(dst[idx], minlength=n_atoms)  # [n_atoms]
    in_start = np.concatenate([[0], np.cumsum(in_count)[:-1]])  # [n_atoms]
    # every outgoing edge j -> i pairs with every incoming edge k -> j
    out_edges = idx  # edges j -> i with j = src
    reps = in_count[src[out_edges]]  # [n_sel]
    trip_out = np.repeat(out_edges, reps)  # [n_trip_raw]
    offsets = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
    trip_in = in_sorted[np.repeat(in_start[src[out_edges]], reps) + offsets]  # [n_trip_raw]
    back = (src[trip_in] == dst[trip_out]) & np.all(shift[trip_in] + shift[trip_out] == 0, axis=1)
    keep = ~back
    trip_in, trip_out = trip_in[keep], trip_out[keep]
    order = np.lexsort((trip_in, trip_out))
    return trip_in[order], trip_out[order]


def atoms_to_graph(
    atoms=None,
    cutoff: float = 6.0,
    triplet_cutoff: Optional[float] = None,
    *,
    numbers: Optional[np.ndarray] = None,
    positions: Optional[np.ndarray] = None,
    cell: Optional[np.ndarray] = None,
    pbc: Optional[Sequence[bool]] = None,
    skin: float = 0.0,
) -> Graph:
    """Build the crystal graph of an ``ase.Atoms`` (or of explicit arrays).

    Args:
        atoms: the structure; alternatively pass numbers/positions/cell/pbc.
        cutoff: edge cutoff radius, A.
        triplet_cutoff: only edges shorter than this enter triplets (A); ``None`` = ``cutoff``.
        skin: extra radius (A) added to both cutoffs so the graph stays valid while atoms move
            less than ``skin / 2`` (contributions beyond the cutoffs are exactly zero).
    """
    if atoms is not None:
        numbers = atoms.numbers
        positions = atoms.positions
        cell = atoms.cell.array
        pbc = atoms.pbc
    numbers = np.asarray(numbers, dtype=np.int64)
    positions = np.asarray(positions, dtype=float)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=float).reshape(3, 3)
    pbc = np.zeros(3, dtype=bool) if pbc is None else np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    validate_structure(numbers, positions, cell, pbc)
    tcut = effective_triplet_cutoff(cutoff, triplet_cutoff)
    rc = float(cutoff) + skin
    rt = tcut + skin
    est = estimate_graph_size(positions, cell, pbc, rc, rt)
    problem = _size_problem(est, rc, rt)
    if problem:
        raise ValueError(problem)
    src, dst, shift = neighbour_edges(positions, cell, pbc, rc)
    vec = positions[dst] - positions[src] + shift @ cell  # [n_edges, 3]
    length = np.linalg.norm(vec, axis=1)  # [n_edges]
    short = length < rt  # [n_edges]
    # exact triplet count before allocating them: sum_j k_j^2 minus one back edge per short edge
    k = np.bincount(dst[short], minlength=len(numbers))  # [n_atoms]
    n_trip = int(np.sum(k.astype(np.float64) ** 2)) - int(short.sum())
    if n_trip > MAX_TRIPLETS:
        j = int(np.argmax(k))
        raise ValueError(
            f"the graph would have {n_trip:.3g} triplets (limit {MAX_TRIPLETS:.2g}, ase_etgnn.graph.MAX_TRIPLETS; "
            f"~{n_trip * _BYTES_PER_TRIPLET / 2**30:.3g} GiB to build): atom {j} has {int(k[j])} neighbours within "
            f"{rt:g} A ({est.volume_per_atom:.3g} A^3 per atom on average). Are atoms piled up, or positions "
            f"in the wrong unit?"
        )
    trip_in, trip_out = build_triplets(src, dst, shift, edge_mask=short)
    return Graph(
        numbers=numbers,
        positions=positions.copy(),
        cell=cell.copy(),
        pbc=pbc,
        edge_src=src,
        edge_dst=dst,
        edge_shift=shift,
        edge_reverse=reverse_edge_index(src, dst, shift),
        trip_in=trip_in,
        trip_out=trip_out,
        cutoff=float(cutoff),
        triplet_cutoff=tcut,
        skin=float(skin),
    )


def prune_graph(graph: Graph, positions: np.ndarray) -> Graph:
    """The graph at new ``positions`` (same cell), keeping only edges within ``cutoff`` and triplets
    within ``triplet_cutoff`` of a graph built with a skin (Verlet-list reuse).

    Edges and triplets keep their relative order, so the result equals ``atoms_to_graph`` at these
    positions as long as no atom moved more than ``skin / 2`` since the graph was built.
    """
    positions = np.asarray(positions, dtype=float)
    vec = positions[graph.edge_dst] - positions[graph.edge_src] + graph.edge_shift @ graph.cell  # [E, 3]
    length = np.linalg.norm(vec, axis=1)  # [E]
    keep = length < graph.cutoff  # [E]; the reverse edge has the same length, so pairs stay together
    new_index = np.cumsum(keep) - 1  # [E]
    short = length < graph.triplet_cutoff
    tkeep = short[graph.trip_in] & short[graph.trip_out]  # [T]
    return dataclasses.replace(
        graph,
        positions=positions.copy(),
        edge_src=graph.edge_src[keep],
        edge_dst=graph.edge_dst[keep],
        edge_shift=graph.edge_shift[keep],
        edge_reverse=new_index[graph.edge_reverse[keep]],
        trip_in=new_index[graph.trip_in[tkeep]],
        trip_out=new_index[graph.trip_out[tkeep]],
        skin=0.0,
    )


class OverlapWarning(UserWarning):
    """Two atoms are closer than any chemical bond: the structure is outside any training data."""


def min_pair_distance(graph: Graph, positions: Optional[np.ndarray] = None) -> tuple[float, int, int, np.ndarray]:
    """The shortest edge of ``graph`` at ``positions`` ([n_atoms, 3], A; default ``graph.positions``).

    Returns ``(distance_A, src, dst, shift)``; ``(inf, -1, -1, zeros(3))`` when there is no edge. Costs
    one pass over the edges, so it can run every MD step on a reused (pruned) graph. Valid while
    ``graph`` is valid at ``positions`` (built there, or with a skin and no atom moved > skin / 2):
    any pair closer than the cutoff is then an edge.
    """
    pos = graph.positions if positions is None else np.asarray(positions, dtype=float)  # [n_atoms, 3]
    if graph.n_edges == 0:
        return math.inf, -1, -1, np.zeros(3, dtype=np.int64)
    vec = pos[graph.edge_dst] - pos[graph.edge_src] + graph.edge_shift @ graph.cell  # [n_edges, 3]
    d2 = np.einsum("ij,ij->i", vec, vec)  # [n_edges], A^2
    e = int(np.argmin(d2))
    return math.sqrt(float(d2[e])), int(graph.edge_src[e]), int(graph.edge_dst[e]), graph.edge_shift[e].copy()


def check_overlaps(
    graph: Graph,
    positions: Optional[np.ndarray] = None,
    *,
    hard: float = MIN_DISTANCE_HARD,
    warn: Optional[float] = MIN_DISTANCE_WARN,
) -> float:
    """Raise ``ValueError`` if two atoms are closer than ``hard`` (A); warn (``OverlapWarning``) below ``warn``.

    ``positions`` as in ``min_pair_distance``. The message names both atoms, the periodic image and the
    distance. Returns the shortest pair distance, A (inf without edges). ``warn=None`` never warns.
    """
    d, i, j, shift = min_pair_distance(graph, positions)
    if d >= hard and (warn is None or d >= warn):
        return d
    if shift.any():
        pair = f"atom {i} and the periodic image {shift.tolist()} of atom {j}" if i != j else (
            f"atom {i} and its own periodic image {shift.tolist()}"
        )
    else:
        pair = f"atoms {i} and {j}"
    if d < hard:
        raise ValueError(
            f"{pair} overlap: {d:.3g} A apart (< {hard:g} A, directions undefined); fix the structure"
        )
    warnings.warn(
        f"{pair} are only {d:.3g} A apart (< {warn:g} A, shorter than any chemical bond): the structure is "
        f"outside any training data and the prediction is meaningless",
        OverlapWarning,
        stacklevel=2,
    )
    return d


class GraphBatch(TypedDict):
    """Several graphs batched into one disconnected graph: the model's input (``collate_graphs``).

    A plain dict at run time (``dict(batch)``, ``{k: ... for k in batch}`` and ``Batch.to`` keep it whole).
    Tensors (indices offset per structure): ``numbers`` [N], ``positions`` [N, 3] (A), ``cell`` [B, 3, 3]
    (A), ``batch`` [N] (structure of each atom), ``n_atoms`` [B], ``edge_src``/``edge_dst``/``edge_reverse``
    [E], ``edge_shift`` [E, 3] (float, for ``shift @ cell``), ``edge_batch`` [E], ``trip_in``/``trip_out``
    [T]. Floats: ``cutoff`` and ``triplet_cutoff`` (A), the radii every graph was built with (``Graph``),
    which the model checks against its own.
    """

    numbers: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    edge_reverse: torch.Tensor
    edge_shift: torch.Tensor
    edge_batch: torch.Tensor
    trip_in: torch.Tensor
    trip_out: torch.Tensor
    cutoff: float
    triplet_cutoff: float


def collate_graphs(
    graphs: Iterable[Graph],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = "cpu",
) -> GraphBatch:
    """Batch graphs into one disconnected graph (indices offset), as torch tensors on ``device`` (None = CPU).

    Keys: see ``GraphBatch``. All graphs must have been built with the same ``cutoff`` and ``triplet_cutoff``
    (``ValueError`` otherwise); a graph built with a skin may be batched unpruned (what lies beyond the radii
    contributes exactly zero).
    """
    graphs = list(graphs)
    if not graphs:
        raise ValueError("collate_graphs needs at least one graph")
    radii = sorted({(float(g.cutoff), float(g.triplet_cutoff)) for g in graphs})
    if len(radii) > 1:
        raise ValueError(f"cannot batch graphs built with different (cutoff, triplet_cutoff) radii: {radii} A")
    atom_off = np.cumsum([0] + [g.n_atoms for g in graphs[:-1]])
    edge_off = np.cumsum([0] + [g.n_edges for g in graphs[:-1]])

    def cat(arrs: list) -> np.ndarray:
        return np.concatenate(arrs) if arrs else np.zeros(0)

    out_np = {
        "numbers": cat([g.numbers for g in graphs]),
        "positions": cat([g.positions for g in graphs]).reshape(-1, 3),
        "cell": np.stack([g.cell for g in graphs]),
        "batch": cat([np.full(g.n_atoms, b, dtype=np.int64) for b, g in enumerate(graphs)]),
        "n_atoms": np.array([g.n_atoms for g in graphs], dtype=np.int64),
        "edge_src": cat([g.edge_src + o for g, o in zip(graphs, atom_off)]).astype(np.int64),
        "edge_dst": cat([g.edge_dst + o for g, o in zip(graphs, atom_off)]).astype(np.int64),
        "edge_reverse": cat([g.edge_reverse + o for g, o in zip(graphs, edge_off)]).astype(np.int64),
        "edge_shift": cat([g.edge_shift for g in graphs]).reshape(-1, 3),
        "edge_batch": cat([np.full(g.n_edges, b, dtype=np.int64) for b, g in enumerate(graphs)]),
        "trip_in": cat([g.trip_in + o for g, o in zip(graphs, edge_off)]).astype(np.int64),
        "trip_out": cat([g.trip_out + o for g, o in zip(graphs, edge_off)]).astype(np.int64),
    }
    floats = {"positions", "cell", "edge_shift"}
    cpu = {k: torch.as_tensor(v, dtype=dtype if k in floats else torch.long) for k, v in out_np.items()}
    device = torch.device("cpu" if device is None else device)
    if device.type != "cuda":
        tensors = {k: v.to(device) for k, v in cpu.items()}
    else:  # page-locked host memory: the copies are asynchronous and overlap with the queued kernels
        tensors = {k: v.pin_memory().to(device, non_blocking=True) for k, v in cpu.items()}
    cutoff, triplet_cutoff = radii[0]
    return GraphBatch(**tensors, cutoff=cutoff, triplet_cutoff=triplet_cutoff)
