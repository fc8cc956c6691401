"""Geometry: neighbour lists, triplets, reverse edges, batching (pure functions, tested alone)."""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from ase_etgnn.graph import atoms_to_graph, build_triplets, collate_graphs, neighbour_edges, reverse_edge_index


def _edge_set(src, dst, shift):
    return {(int(a), int(b), *map(int, s)) for a, b, s in zip(src, dst, shift)}


@pytest.mark.parametrize("pbc", [True, False, (True, False, True)])
def test_neighbour_list_matches_ase(quartz_perturbed, pbc):
    atoms = quartz_perturbed.copy()
    atoms.pbc = pbc
    src, dst, shift = neighbour_edges(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    i, j, S = neighbor_list("ijS", atoms, 5.0)
    assert _edge_set(src, dst, shift) == _edge_set(i, j, S)


def test_edge_vector_points_from_src_to_dst(quartz_perturbed):
    g = atoms_to_graph(quartz_perturbed, 4.0)
    vec = g.positions[g.edge_dst] - g.positions[g.edge_src] + g.edge_shift @ g.cell
    _, _, D = neighbor_list("ijD", quartz_perturbed, 4.0)
    assert np.allclose(np.sort(np.linalg.norm(vec, axis=1)), np.sort(np.linalg.norm(D, axis=1)))
    # the reverse of every edge is the opposite vector
    assert np.allclose(vec[g.edge_reverse], -vec)
    assert np.array_equal(g.edge_reverse[g.edge_reverse], np.arange(g.n_edges))


def test_small_cell_keeps_self_images_and_excludes_only_true_back_edge():
    atoms = Atoms("Si", positions=[[0, 0, 0]], cell=np.eye(3) * 2.0, pbc=True)
    g = atoms_to_graph(atoms, 3.0)
    # neighbours: 6 at 2.0 A and 12 at 2.83 A, all images of the atom itself
    assert g.n_edges == 18 and np.all(g.edge_src == 0) and np.all(g.edge_dst == 0)
    # every pair of edges is a triplet except the back edge: 18 * 17
    assert g.n_triplets == 18 * 17
    s_in, s_out = g.edge_shift[g.trip_in], g.edge_shift[g.trip_out]
    assert not np.any(np.all(s_in + s_out == 0, axis=1))
    # k == i with different images is kept (e.g. going on straight through the atom)
    assert np.any(np.all(s_in == s_out, axis=1))


def test_triplets_brute_force(quartz_perturbed):
    g = atoms_to_graph(quartz_perturbed, 4.0, 3.0)
    vec = g.positions[g.edge_dst] - g.positions[g.edge_src] + g.edge_shift @ g.cell
    short = np.linalg.norm(vec, axis=1) < 3.0
    expected = set()
    for a in np.nonzero(short)[0]:
        for b in np.nonzero(short)[0]:
            if g.edge_dst[a] != g.edge_src[b]:
                continue
            if g.edge_src[a] == g.edge_dst[b] and np.all(g.edge_shift[a] + g.edge_shift[b] == 0):
                continue
            expected.add((a, b))
    assert set(zip(g.trip_in.tolist(), g.trip_out.tolist())) == expected


def test_isolated_atoms_and_molecule():
    far = Atoms("SiO", positions=[[0, 0, 0], [50, 0, 0]])
    g = atoms_to_graph(far, 6.0)
    assert g.n_edges == 0 and g.n_triplets == 0
    h2o = molecule("H2O")
    g = atoms_to_graph(h2o, 6.0)
    assert g.n_edges == 6 and g.n_triplets == 6  # each atom: 2 in-edges x 2 out-edges minus back edges


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(numbers=[14], positions=[[np.nan, 0, 0]], cell=np.eye(3), pbc=True), "NaN"),
        (dict(numbers=[14], positions=[[0, 0, 0]], cell=np.zeros((3, 3)), pbc=True), "cell"),
        (dict(numbers=[14, 8], positions=[[0, 0, 0], [1, 0, 0]], cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True),
         "linearly dependent"),
        (dict(numbers=[], positions=np.zeros((0, 3)), cell=np.eye(3), pbc=True), "no atoms"),
    ],
)
def test_bad_structures(kwargs, message):
    with pytest.raises(ValueError, match=message):
        atoms_to_graph(cutoff=3.0, **{k: np.asarray(v, dtype=float if k != "numbers" else int) for k, v in kwargs.items()})


def test_reverse_index_detects_asymmetric_list():
    src, dst, shift = np.array([0]), np.array([1]), np.zeros((1, 3), dtype=int)
    with pytest.raises(RuntimeError):
        reverse_edge_index(src, dst, shift)


def test_collate_offsets(quartz_perturbed):
    a = atoms_to_graph(quartz_perturbed, 3.0)
    b = atoms_to_graph(bulk("Si", "diamond", a=5.43), 3.0)
    batch = collate_graphs([a, b], dtype=torch.float64)
    n = a.n_atoms
    assert batch["edge_src"][a.n_edges:].min() >= n
    assert torch.equal(batch["edge_reverse"][a.n_edges:] - a.n_edges, torch.as_tensor(b.edge_reverse))
    assert torch.equal(batch["trip_in"][a.n_triplets:] - a.n_edges, torch.as_tensor(b.trip_in))
    assert batch["cell"].shape == (2, 3, 3) and batch["batch"].tolist() == [0] * n + [1] * b.n_atoms


def test_prune_graph_equals_fresh_graph(quartz_perturbed):
    from ase_etgnn.graph import prune_graph

    skinned = atoms_to_graph(quartz_perturbed, 4.0, 3.0, skin=1.0)
    fresh0 = atoms_to_graph(quartz_perturbed, 4.0, 3.0)
    assert skinned.n_edges > fresh0.n_edges and skinned.n_triplets > fresh0.n_triplets
    moved = quartz_perturbed.copy()
    moved.positions += np.random.default_rng(0).normal(scale=0.15, size=moved.positions.shape)
    assert np.linalg.norm(moved.positions - quartz_perturbed.positions, axis=1).max() < 0.5
    pruned, fresh = prune_graph(skinned, moved.positions), atoms_to_graph(moved, 4.0, 3.0)
    for name in ("edge_src", "edge_dst", "edge_shift", "edge_reverse", "trip_in", "trip_out", "positions"):
        assert np.array_equal(getattr(pruned, name), getattr(fresh, name)), name
