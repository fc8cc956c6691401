"""Physics of the network and its heads (float64 where exactness is claimed); the contracts every output keeps
(equivariance, permutation, batch, supercell) are in ``test_contracts.py``."""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, graphene, molecule

from ase_etgnn.layers import eq2_edge_expansion, eq6_triplet_expansion

from conftest import ALL_HEADS, predict, small_model

def _hbn():
    a = graphene(formula="BN", a=2.504, vacuum=8.0)
    return a


@pytest.mark.parametrize("name, atoms", [
    ("graphene", graphene(a=2.46, vacuum=8.0)),
    ("h-BN", _hbn()),
    ("diamond", bulk("C", "diamond", a=3.567, cubic=True)),
])
def test_table_s1_symmetric_zero_forces_float32(name, atoms):
    """Supplement Table S1: random-weight forces vanish on ideal graphene, h-BN and diamond."""
    model = small_model(species=("B", "C", "N"), heads=("forces",), dtype=torch.float32, seed=7, hidden=32)
    f = predict(model, [atoms], dtype=torch.float32)["forces"]
    assert np.abs(f).max() < 1e-6, name
    # a broken symmetry gives non-zero forces, so the check can fail
    rattled = atoms.copy()
    rattled.rattle(0.05, seed=1)
    assert np.abs(predict(model, [rattled], dtype=torch.float32)["forces"]).max() > 1e-4


@pytest.mark.parametrize("atoms", [bulk("NaCl", "rocksalt", a=5.64, cubic=True), bulk("Si", "diamond", a=5.43, cubic=True)])
def test_centrosymmetric_piezo_is_zero(atoms):
    model = small_model(species=("Na", "Cl", "Si"), heads=("piezoelectric_tensor",), seed=3)
    e = predict(model, [atoms])["piezoelectric_tensor"]
    assert np.abs(e).max() < 1e-12
    noncentro = atoms.copy()  # any two-atom cell is centrosymmetric: move one atom of the cubic cell
    noncentro.positions[0] += [0.05, 0.1, 0.02]
    assert np.abs(predict(model, [noncentro])["piezoelectric_tensor"]).max() > 1e-6


def test_piezo_symmetric_in_strain_indices_and_dielectric_symmetric(quartz_perturbed, model64):
    out = predict(model64, [quartz_perturbed])
    e = out["piezoelectric_tensor"][0]
    assert np.allclose(e, e.transpose(0, 2, 1), atol=1e-14)
    eps = out["dielectric_tensor"][0]
    assert np.allclose(eps, eps.T, atol=1e-14)
    z = out["born_effective_charges"]
    assert np.abs(z - z.transpose(0, 2, 1)).max() > 1e-6  # BEC is not forced symmetric (Eq. 6)


def test_tiny_cell_isolated_atoms_and_molecules():
    model = small_model(species=("Si", "O", "H"), heads=ALL_HEADS)
    tiny = Atoms("Si", positions=[[0, 0, 0]], cell=np.eye(3) * 2.2, pbc=True)
    far = Atoms("SiO", positions=[[0, 0, 0], [30, 0, 0]])
    water = molecule("H2O")
    out = predict(model, [tiny, far, water])
    for v in out.values():
        assert np.all(np.isfinite(v))
    assert np.abs(out["forces"][0]).max() < 1e-12  # cubic site symmetry
    assert np.abs(out["forces"][1:3]).max() == 0.0  # no neighbours: no force
    assert np.abs(out["piezoelectric_tensor"][1]).max() == 0.0
    # an isolated atom's energy is its species' reference: independent of where it is
    far2 = far.copy()
    far2.positions[1] = [0, 40, 0]
    assert np.isclose(predict(model, [far2])["energy"][0], out["energy"][1])


def test_smooth_at_cutoffs():
    """Every contribution vanishes continuously at the edge cutoff and at the triplet cutoff."""
    model = small_model(species=("Si", "O"), cutoff=4.0, triplet_cutoff=3.0)

    def trimer(d):
        return Atoms("SiOO", positions=[[0, 0, 0], [1.6, 0, 0], [0.3, d, 0.2]])

    for r0 in (4.0, 3.0):  # distance of the 3rd atom crossing the cutoff, triplet cutoff
        d = np.sqrt(r0**2 - 0.3**2 - 0.2**2)
        a, b = predict(model, [trimer(d - 1e-4)]), predict(model, [trimer(d + 1e-4)])
        for name in ALL_HEADS:
            assert np.abs(a[name] - b[name]).max() < 1e-5, (r0, name)


def test_zero_net_force_and_asr_options(quartz_perturbed):
    model = small_model(zero_net_force=True, bec_asr=True)
    atoms = quartz_perturbed.copy()
    atoms.rattle(0.1, seed=2)
    out = predict(model, [atoms, molecule("SiO")])
    assert np.abs(out["forces"][:9].sum(0)).max() < 1e-12
    assert np.abs(out["forces"][9:].sum(0)).max() < 1e-12
    assert np.abs(out["born_effective_charges"][:9].sum(0)).max() < 1e-12
    plain = predict(small_model(), [atoms])
    assert np.abs(plain["forces"].sum(0)).max() > 1e-6  # the option is what makes it zero


def test_pair_force_head_reads_both_atoms_and_keeps_eq3_properties(quartz_perturbed, tmp_path):
    """force_head = "pair": zero net force, Table S1 zeros, a file round trip, and t_kj depends on h_k and h_j."""
    from ase_etgnn.model import ETGNNConfig
    from ase_etgnn.model_file import load_model, save_model

    model = small_model(heads=("energy", "forces"), zero_net_force=True, force_head="pair")
    assert model.needs_nodes and model.heads_["forces"].node_mlp is None  # h feeds t_kj, no s_j term
    atoms = quartz_perturbed.copy()
    atoms.rattle(0.1, seed=2)
    f = predict(model, [atoms])["forces"]
    assert np.abs(f.sum(0)).max() < 1e-12 and np.abs(f).max() > 1e-4
    diamond = bulk("Si", "diamond", a=5.43, cubic=True)
    assert np.abs(predict(model, [diamond])["forces"]).max() < 1e-12  # Table S1: symmetric sites, zero force
    # the node features enter: zeroing the h part of the input layer changes the forces
    first = model.heads_["forces"].edge_mlp[0]
    n_m = model.config.n_blocks * model.config.hidden
    with torch.no_grad():
        saved = first.weight[:, n_m:].clone()
        first.weight[:, n_m:] = 0.0
        f_no_h = predict(model, [atoms])["forces"]
        first.weight[:, n_m:] = saved
    assert np.abs(f_no_h - f).max() > 1e-6
    path = save_model(model, tmp_path / "pair.pt")
    again = load_model(path, dtype=torch.float64)
    assert again.config.force_head == "pair"
    np.testing.assert_array_equal(predict(again, [atoms])["forces"], f)
    # files written before the option read as the paper's edge head; an unknown value is refused
    old = model.config.to_dict()
    del old["force_head"]
    assert ETGNNConfig.from_dict(old).force_head == "edge"
    with pytest.raises(ValueError, match="force_head"):
        small_model(force_head="node")


def test_index_conventions():
    """Edge k->j unit vector is the first factor of the triplet basis e_kj (x) e_ji (Eq. 6)."""
    ex, ey = torch.tensor([[1.0, 0, 0]]), torch.tensor([[0, 1.0, 0]])
    t = eq6_triplet_expansion(torch.ones(1), ex, ey, torch.zeros(1, dtype=torch.long), 1, 2)
    assert t[0, 0, 1] == 1 and t[0, 1, 0] == 0
    p = eq6_triplet_expansion(torch.ones(1), ex, ey, torch.zeros(1, dtype=torch.long), 1, 3)
    assert p[0, 0, 1, 1] == 1 and p.abs().sum() == 1
    f = eq2_edge_expansion(torch.tensor([2.0]), ex, torch.zeros(1, dtype=torch.long), 1, 1)
    assert torch.equal(f, torch.tensor([[2.0, 0, 0]]))


def test_conservative_forces_and_stress_match_finite_differences(quartz_perturbed, model64):
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    atoms = quartz_perturbed.copy()
    cfg = model64.config

    def energy(a):
        return predict(model64, [a])["energy"][0]

    g = collate_graphs([atoms_to_graph(atoms, cfg.cutoff, cfg.effective_triplet_cutoff)], dtype=torch.float64)
    out = model64(g, forces="conservative", stress=True)
    f = out["forces"].numpy()
    h = 1e-5
    for a, c in [(0, 0), (4, 2)]:
        p, m = atoms.copy(), atoms.copy()
        p.positions[a, c] += h
        m.positions[a, c] -= h
        assert np.isclose(f[a, c], -(energy(p) - energy(m)) / (2 * h), atol=1e-7)
    s = out["stress"].detach().numpy()[0]
    eps = np.zeros((3, 3))
    eps[0, 1] = eps[1, 0] = h
    p, m = atoms.copy(), atoms.copy()
    p.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    m.set_cell(atoms.cell.array @ (np.eye(3) - eps), scale_atoms=True)
    fd = (energy(p) - energy(m)) / (2 * h) / atoms.get_volume() / 2  # both (0,1) and (1,0) moved
    assert np.isclose(s[0, 1], fd, atol=1e-7)


def test_unknown_element_and_config_errors():
    model = small_model()
    with pytest.raises(ValueError, match=r"\['Fe'\].*Si"):
        predict(model, [bulk("Fe")])
    from ase_etgnn import build_model

    with pytest.raises(ValueError, match="no head can predict"):
        build_model(["Si"], heads=("stress_tensor",))
    with pytest.raises(ValueError, match="unknown element"):
        build_model(["Xx"])


def test_seed_determinism_no_global_rng():
    state = torch.random.get_rng_state()
    a, b = small_model(seed=5), small_model(seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    c = small_model(seed=6)
    assert not torch.equal(a.embedding.weight, c.embedding.weight)


def test_forces_modes_one_key(quartz_perturbed, model64):
    """``forces`` is always the key: direct (the head), conservative (-dE/dr), both (head + forces_conservative)."""
    from ase_etgnn.graph import atoms_to_graph, collate_graphs
    from ase_etgnn.properties import FORCES_CONSERVATIVE

    cfg = model64.config
    batch = collate_graphs([atoms_to_graph(quartz_perturbed, cfg.cutoff, cfg.effective_triplet_cutoff)],
                           dtype=torch.float64)
    with torch.no_grad():
        direct = model64(batch)
    cons = model64(batch, forces="conservative", stress=True)
    both = model64(batch, forces="both")
    assert set(direct) == set(ALL_HEADS)
    assert set(cons) == set(ALL_HEADS) | {"stress"}
    assert set(both) == set(ALL_HEADS) | {FORCES_CONSERVATIVE}
    assert torch.equal(both["forces"], direct["forces"])
    assert torch.equal(both[FORCES_CONSERVATIVE], cons["forces"])
    assert (cons["forces"] - direct["forces"]).abs().max() > 1e-6  # two different force fields
    assert not any(v.requires_grad for v in cons.values())  # eval mode: detached
    with pytest.raises(ValueError, match="stress"):
        model64(batch, stress=True)
    with pytest.raises(ValueError, match="forces must be one of"):
        model64(batch, forces="joint")
    energy_only = small_model(heads=("energy",))
    assert set(energy_only(batch, forces="both")) == {"energy", FORCES_CONSERVATIVE}


@pytest.mark.parametrize("cutoff, triplet_cutoff", [(3.5, 3.0), (4.0, 2.5), (4.0, 4.0), (4.5, 3.0)])
def test_model_refuses_graphs_built_with_other_radii(quartz_perturbed, model64, cutoff, triplet_cutoff):
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    batch = collate_graphs([atoms_to_graph(quartz_perturbed, cutoff, triplet_cutoff)], dtype=torch.float64)
    cfg = model64.config
    msg = (rf"cutoff {float(cutoff)} A and triplet cutoff {float(triplet_cutoff)} A.*needs cutoff {cfg.cutoff} A "
           rf"and triplet cutoff {cfg.effective_triplet_cutoff} A")
    for call in (lambda: model64(batch), lambda: model64(batch, forces="conservative"),
                 lambda: model64.trunk(batch)):
        with pytest.raises(ValueError, match=msg):
            call()
    no_radii = {k: v for k, v in batch.items() if k not in ("cutoff", "triplet_cutoff")}
    with pytest.raises(ValueError, match="collate_graphs"):
        model64(no_radii)


def test_radii_check_uses_the_effective_triplet_cutoff(quartz_perturbed):
    """A triplet cutoff above the cutoff (or None) means the cutoff: the raw and the effective value give the
    same graph, which the model accepts."""
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    for tcut in (None, 5.0):
        model = small_model(triplet_cutoff=tcut)
        assert model.config.effective_triplet_cutoff == 4.0
        for t in (tcut, model.config.effective_triplet_cutoff):
            batch = collate_graphs([atoms_to_graph(quartz_perturbed, 4.0, t)], dtype=torch.float64)
            assert batch["triplet_cutoff"] == 4.0
            with torch.no_grad():
                model(batch)


def test_recompute_gives_the_same_conservative_outputs_and_gradients(quartz_perturbed):
    """Activation checkpointing of the geometry and the edge blocks (``recompute=True``, the calculator's
    conservative pass) changes memory, not numbers: -dE/dr, stress and every head equal the plain pass, and
    so do parameter gradients of a loss on them (float64)."""
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    model = small_model()
    cfg = model.config
    batch = collate_graphs([atoms_to_graph(quartz_perturbed, cfg.cutoff, cfg.effective_triplet_cutoff)],
                           dtype=torch.float64)
    model.train()  # create_graph: the outputs can be differentiated again (force matching)
    results = []
    for recompute in (False, True):
        model.zero_grad()
        out, _ = model.conservative(batch, stress=True, recompute=recompute, forces="both")
        loss = sum((v**2).sum() for v in out.values())
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append(({k: v.detach() for k, v in out.items()}, grads))
    model.eval()
    (plain, g0), (ckpt, g1) = results
    assert set(plain) == set(ckpt) and {"forces", "forces_conservative", "stress"} <= set(plain)
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-12, atol=1e-12)
    assert len(g0) == len(g1) > 0
    for a, b in zip(g0, g1):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
