"""CommitteeCalculator: mean and spread of members, per-atom shapes, member checks, tensors on demand."""
import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError

from ase_etgnn import CommitteeCalculator, ETGNNCalculator, save_model
from ase_etgnn.committee import committee_from_files

from conftest import small_model

KW = dict(dtype="float64", device="cpu", symmetrize=False)


@pytest.fixture(scope="module")
def pair():
    return small_model(seed=0), small_model(seed=1)


def _single(model, atoms, name):
    return ETGNNCalculator(model, **KW).get_property(name, atoms.copy())


def test_identical_members_have_zero_spread_and_the_member_mean(quartz_perturbed, pair):
    atoms = quartz_perturbed.copy()
    atoms.calc = CommitteeCalculator([pair[0], pair[0]], **KW)
    n = len(atoms)
    for name, per_atom in (("forces", True), ("born_effective_charges", True), ("dielectric_tensor", False),
                           ("energy", False)):
        mean = atoms.calc.get_property(name, atoms)
        std = atoms.calc.get_property(name + "_std", atoms)
        assert np.array_equal(mean, _single(pair[0], atoms, name))  # (x + x) / 2 == x exactly
        if per_atom:
            assert std.shape == (n,) and np.all(std == 0.0)
        else:
            assert isinstance(std, float) and std == 0.0
    assert isinstance(atoms.get_potential_energy(), float)


def test_two_members_mean_and_std_by_hand(quartz_perturbed, pair):
    """M = 2: mean (a + b) / 2; sample std of each component |a - b| / sqrt(2), reduced by the norm per atom
    (forces: vector norm, BEC: Frobenius) or over the whole tensor (eps_inf, piezo, energy)."""
    atoms = quartz_perturbed.copy()
    calc = CommitteeCalculator(list(pair), **KW)
    atoms.calc = calc
    n = len(atoms)
    for name in ("forces", "born_effective_charges", "dielectric_tensor", "piezoelectric_tensor", "energy"):
        a, b = (np.asarray(_single(m, atoms, name)) for m in pair)
        assert not np.allclose(a, b)
        mean = calc.get_property(name, atoms)
        std = calc.get_property(name + "_std", atoms)
        assert np.allclose(mean, (a + b) / 2, rtol=0, atol=1e-12)
        d = (a - b) / np.sqrt(2)
        if name in ("forces", "born_effective_charges"):
            assert std.shape == (n,)
            assert np.allclose(std, np.linalg.norm(d.reshape(n, -1), axis=1), rtol=1e-12, atol=0)
        else:
            assert np.ndim(std) == 0 and std == pytest.approx(np.linalg.norm(d), rel=1e-12)
    m = calc.member_values("forces")
    assert m.shape == (2, n, 3)


def test_three_members_std_is_the_sample_std(quartz_perturbed):
    models = [small_model(seed=s) for s in (3, 4, 5)]
    atoms = quartz_perturbed.copy()
    atoms.calc = CommitteeCalculator(models, **KW)
    f = np.stack([_single(m, atoms, "forces") for m in models])  # (3, N, 3)
    ref = np.sqrt(f.var(axis=0, ddof=1).sum(axis=1))
    assert np.allclose(atoms.calc.get_property("forces_std", atoms), ref, rtol=1e-12, atol=0)
    assert np.allclose(atoms.get_forces(), f.mean(axis=0), rtol=0, atol=1e-12)


def test_members_must_agree_and_the_error_names_the_difference(pair):
    with pytest.raises(ValueError, match=r"species.*member 1.*'Si', 'O', 'H'"):
        CommitteeCalculator([pair[0], small_model(species=("Si", "O", "H"))], **KW)
    with pytest.raises(ValueError, match="heads"):
        CommitteeCalculator([pair[0], small_model(heads=("energy", "forces"))], **KW)
    with pytest.raises(ValueError, match="settings"):  # ready-made calculators with other settings
        CommitteeCalculator([ETGNNCalculator(pair[0], device="cpu"), ETGNNCalculator(pair[1], **KW)])
    with pytest.raises(ValueError, match="at least 2"):
        CommitteeCalculator([pair[0]], **KW)
    with pytest.raises(TypeError, match="sequence"):
        CommitteeCalculator(pair[0], **KW)
    with pytest.raises(TypeError, match="unknown"):
        CommitteeCalculator(list(pair), colour="red")


def test_forces_only_run_no_tensor_head_of_any_member(quartz_perturbed, pair):
    calc = CommitteeCalculator([small_model(seed=0), small_model(seed=1)], **KW)
    calls = []
    for m in calc.members:
        m.model.heads_["born_effective_charges"].register_forward_hook(lambda *a: calls.append("bec"))
    atoms = quartz_perturbed.copy()
    atoms.calc = calc
    atoms.get_forces()
    calc.get_property("forces_std", atoms)
    assert calls == []
    assert all("born_effective_charges" not in m.results and "dielectric_tensor" not in m.results
               for m in calc.members)
    assert "born_effective_charges" not in calc.results
    z = calc.get_property("born_effective_charges_std", atoms)
    assert calls == ["bec", "bec"] and z.shape == (len(atoms),)
    assert [m.n_trunk_passes for m in calc.members] == [1, 1]  # the tensors reused each member's trunk
    atoms.positions[0, 0] += 0.05  # a new geometry: everything recomputed
    f_std = calc.get_property("forces_std", atoms)
    assert "born_effective_charges_std" not in calc.results
    assert [m.n_trunk_passes for m in calc.members] == [2, 2] and f_std.shape == (len(atoms),)


def test_std_scale_settings_and_files(tmp_path, quartz_perturbed, pair):
    paths = [save_model(m, tmp_path / f"m{i}.pt") for i, m in enumerate(pair)]
    calc = committee_from_files(paths, **KW)
    assert calc.todict()["models"] == [str(p) for p in paths] and len(calc) == 2
    atoms = quartz_perturbed.copy()
    atoms.calc = calc
    s1 = calc.get_property("forces_std", atoms).copy()
    e1 = calc.get_property("dielectric_tensor_std", atoms)
    calc.set(std_scale={"forces": 2.0})
    assert "forces_std" not in calc.results  # a settings change drops the results
    assert np.allclose(calc.get_property("forces_std", atoms), 2 * s1, rtol=1e-12)
    assert calc.get_property("dielectric_tensor_std", atoms) == pytest.approx(e1, rel=1e-12)
    calc.set(symmetrize=True)  # member settings go to every member
    assert all(m.symmetrize for m in calc.members) and calc.parameters["symmetrize"]
    with pytest.raises(PropertyNotImplementedError):
        calc.get_property("stress", atoms)  # direct forces: no stress, as for one member
