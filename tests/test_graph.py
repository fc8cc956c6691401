"""Geometry: neighbour lists, triplets, reverse edges, batching (pure functions, tested alone)."""
import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from ase_etgnn.graph import atoms_to_graph, collate_graphs, neighbour_edges, reverse_edge_index


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


def test_neighbour_shifts_are_integers(quartz_perturbed):
    """Issue 17 (verify): shifts are integer lattice translations, not Cartesian offsets."""
    q = quartz_perturbed
    src, dst, shift = neighbour_edges(q.positions, q.cell.array, q.pbc, 5.0)
    assert shift.dtype == np.int64 and atoms_to_graph(quartz_perturbed, 5.0).edge_shift.dtype == np.int64


# --- issue 17: 2D cells, absurd sizes, overlaps ----------------------------------------------------------

def _same_graph(a, b):
    for name in ("edge_src", "edge_dst", "edge_shift", "edge_reverse", "trip_in", "trip_out"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("build", ["graphene", "mx2"])
def test_hexagonal_2d_cell_with_zero_c_gives_the_vacuum_graph(build):
    """ase.build.graphene()/mx2() have pbc (T, T, F) and a zero third cell vector (matscipy: LinAlgError)."""
    import ase.build

    flat = getattr(ase.build, build)()
    assert tuple(flat.pbc) == (True, True, False) and np.all(flat.cell[2] == 0)
    vac = flat.copy()
    vac.cell[2] = [0, 0, 20.0]
    g0, g20 = atoms_to_graph(flat, 6.0, 4.0), atoms_to_graph(vac, 6.0, 4.0)
    _same_graph(g0, g20)
    i, j, S = neighbor_list("ijS", vac, 6.0)
    assert _edge_set(g0.edge_src, g0.edge_dst, g0.edge_shift) == _edge_set(i, j, S)
    assert g0.n_edges > 0 and g0.n_triplets > 0


def test_size_estimate_agrees_with_real_graphs(quartz_perturbed):
    import ase.build

    from ase_etgnn.graph import estimate_graph_size

    for atoms in (quartz_perturbed.repeat(2), ase.build.graphene(), bulk("Si", "diamond", a=5.43), molecule("C6H6")):
        est = estimate_graph_size(atoms.positions, atoms.cell.array, atoms.pbc, 6.0, 4.0)
        g = atoms_to_graph(atoms, 6.0, 4.0)
        assert 0.5 < est.edges / g.n_edges < 2.0, atoms
        assert 0.3 < est.triplets / g.n_triplets < 3.0, atoms


@pytest.mark.parametrize("case", ["quartz_in_nm", "half_angstrom_cell"])
def test_absurd_density_refused_before_allocating(quartz_perturbed, case):
    """Issue 17: quartz in nm ran out of memory (61.8 GiB), a 0.5 A one-atom cell ran 10 min to 4.9 GB."""
    from ase_etgnn.graph import check_graph_size

    if case == "quartz_in_nm":
        atoms = quartz_perturbed.copy()
        atoms.set_cell(atoms.cell * 0.1, scale_atoms=True)
    else:
        atoms = Atoms("Si", positions=[[0, 0, 0]], cell=np.eye(3) * 0.5, pbc=True)
    for fn in (atoms_to_graph, check_graph_size):
        with pytest.raises(ValueError, match=r"A apart on average.*in nm instead of A.*edges.*triplets") as err:
            fn(atoms, 6.0, 4.0)
    spacing = float(str(err.value).split("atoms ")[1].split(" A apart")[0])
    assert np.isclose(spacing, (atoms.get_volume() / len(atoms)) ** (1 / 3), rtol=0.05)


def test_piled_up_atoms_refused_by_exact_triplet_count(monkeypatch):
    """Atoms crowded in one spot of a big box pass the density estimate; the exact count catches them."""
    import ase_etgnn.graph as graph_mod

    rng = np.random.default_rng(0)
    atoms = Atoms("Si120", positions=5.0 + rng.uniform(0, 0.5, (120, 3)), cell=np.eye(3) * 30.0, pbc=True)
    expected = 120 * 119 * 118  # every atom neighbours the other 119; minus the back edge
    assert atoms_to_graph(atoms, 3.0).n_triplets == expected
    monkeypatch.setattr(graph_mod, "MAX_TRIPLETS", expected - 1)
    with pytest.raises(ValueError, match=re.escape(f"{expected:.3g} triplets") + ".*has 119 neighbours within 3 A"):
        atoms_to_graph(atoms, 3.0)


def test_min_pair_distance_matches_brute_force(quartz_perturbed):
    from ase_etgnn.graph import min_pair_distance, prune_graph

    atoms = quartz_perturbed.repeat((2, 1, 1))
    atoms.positions[3] += [0.3, -0.2, 0.1]
    d_all = atoms.get_all_distances(mic=True) + np.eye(len(atoms)) * 1e9
    d, i, j, shift = min_pair_distance(atoms_to_graph(atoms, 4.0))
    assert np.isclose(d, d_all.min()) and np.isclose(d_all[i, j], d)
    # on a reused graph (built with a skin at other positions) it sees the new positions
    skinned = atoms_to_graph(quartz_perturbed.repeat((2, 1, 1)), 4.0, skin=1.0)
    d2, i2, j2, _ = min_pair_distance(prune_graph(skinned, atoms.positions))
    assert (d2, i2, j2) == (d, i, j)


def test_overlaps_on_a_reused_graph_warn_then_raise(quartz_perturbed):
    """Issue 17: atoms 0.1 A apart gave F = 17.5 eV/A silently; the check was skipped on reused graphs."""
    from ase_etgnn.graph import OverlapWarning, check_overlaps, prune_graph

    skinned = atoms_to_graph(quartz_perturbed, 6.0, 4.0, skin=4.0)
    assert check_overlaps(skinned) > 1.0  # a normal crystal: silent
    d = quartz_perturbed.get_distances(0, range(1, 9), mic=True, vector=True)  # [8, 3]
    j = 1 + int(np.argmin(np.linalg.norm(d, axis=1)))
    u = d[j - 1] / np.linalg.norm(d[j - 1])
    pair = rf"atoms? ({j}|0) and (the periodic image \[.*\] of atom )?({j}|0)"
    for gap in (0.1, 1e-4):
        moved = quartz_perturbed.positions.copy()
        moved[j] = moved[0] + gap * u - (d[j - 1] - (quartz_perturbed.positions[j] - moved[0]))  # same image
        assert np.linalg.norm(moved[j] - quartz_perturbed.positions[j]) < 2.0  # within skin / 2: graph reused
        pruned = prune_graph(skinned, moved)
        if gap == 0.1:
            with pytest.warns(OverlapWarning, match=pair + r" are only 0.1 A apart \(< 0.5 A"):
                assert np.isclose(check_overlaps(pruned), 0.1)
        else:
            with pytest.raises(ValueError, match=pair + r" overlap: 0.0001 A apart"):
                check_overlaps(pruned)
    # a periodic image too close is named as such
    tiny = Atoms("Si", positions=[[0, 0, 0]], cell=[0.3, 5, 5], pbc=True)
    with pytest.warns(OverlapWarning, match=r"atom 0 and its own periodic image \[-?1, 0, 0\] are only 0.3 A"):
        check_overlaps(atoms_to_graph(tiny, 3.0))


def test_collated_graphs_carry_their_radii(quartz_perturbed):
    a = atoms_to_graph(quartz_perturbed, 4.0, 3.0)
    b = atoms_to_graph(bulk("Si", "diamond", a=5.43), 4.0, 3.0, skin=0.5)
    batch = collate_graphs([a, b], dtype=torch.float64)
    assert (batch["cutoff"], batch["triplet_cutoff"]) == (4.0, 3.0)
    assert atoms_to_graph(quartz_perturbed, 4.0, 7.0).triplet_cutoff == 4.0  # effective: at most the cutoff
    with pytest.raises(ValueError, match=r"different \(cutoff, triplet_cutoff\) radii: \[\(4.0, 2.5\), \(4.0, 3.0\)\]"):
        collate_graphs([a, atoms_to_graph(quartz_perturbed, 4.0, 2.5)])
