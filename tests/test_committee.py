"""CommitteeCalculator: mean and spread of members, per-atom shapes, member checks, tensors on demand; the
uncertainty checks (Spearman ranking, calibration curves, std scale, `etgnn uncertainty`)."""
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
    members = [ETGNNCalculator(pair[0], **KW), ETGNNCalculator(pair[1], **KW)]
    with pytest.raises(ValueError, match="member 0 has .*set them on the member"):  # never changed silently
        CommitteeCalculator(members, symmetrize=not members[0].parameters["symmetrize"])
    assert CommitteeCalculator(members, **KW).parameters["symmetrize"] == members[0].parameters["symmetrize"]
    with pytest.raises(ValueError, match="at least 2"):
        CommitteeCalculator([pair[0]], **KW)
    with pytest.raises(TypeError, match="sequence"):
        CommitteeCalculator(pair[0], **KW)
    with pytest.raises(TypeError, match="unknown"):
        CommitteeCalculator(list(pair), colour="red")
    with pytest.raises(TypeError, match="takes one model, got a list of 2.*CommitteeCalculator"):
        ETGNNCalculator(list(pair), **KW)


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


# ------------------------------------------------------------------------------------------ uncertainty
def _calibrated(n, rng, scale=1.0):
    """Per-atom stds and the norms of 3-component Gaussian errors with that total variance (times scale)."""
    std = np.exp(rng.normal(size=n))  # spread over an order of magnitude
    err = np.linalg.norm(rng.normal(size=(n, 3)) * (scale * std / np.sqrt(3))[:, None], axis=1)
    return std, err


def test_spearman_calibration_and_scale_on_synthetic_errors():
    from ase_etgnn.uncertainty import calibration_curve, fit_std_scale, spearman

    rng = np.random.default_rng(0)
    std, err = _calibrated(20000, rng)
    assert spearman(std, err) > 0.5
    assert abs(spearman(std, rng.permutation(err))) < 0.05  # a spread unrelated to the errors
    assert spearman(std, np.exp(3 * std)) == pytest.approx(1.0)  # monotonic, not linear
    assert np.isnan(spearman(np.ones(10), err[:10])) and np.isnan(spearman(std[:2], err[:2]))
    curve = calibration_curve(std, err, n_bins=10)
    assert curve.count.sum() == 20000 and np.all(curve.count == 2000)
    assert np.all(np.diff(curve.rms_std) > 0)  # bins of increasing std
    assert np.allclose(curve.rms_error, curve.rms_std, rtol=0.05) and curve.ence < 0.05
    assert fit_std_scale(std, err) == pytest.approx(1.0, abs=0.02)
    std2, err2 = _calibrated(20000, rng, scale=2.0)  # errors twice the spread: overconfident committee
    assert fit_std_scale(std2, err2) == pytest.approx(2.0, rel=0.02)
    assert calibration_curve(std2, err2).ence == pytest.approx(1.0, abs=0.1)
    assert len(calibration_curve(std[:3], err[:3], n_bins=10).count) == 3  # fewer entries than bins


def _labelled_by_member0(models, n=4):
    """Perturbed quartz frames labelled with member 0's predictions."""
    from ase_etgnn.structures import alpha_quartz

    ref = ETGNNCalculator(models[0], **KW)
    out = []
    for s in range(n):
        a = alpha_quartz()
        a.positions += np.random.default_rng(s).normal(size=a.positions.shape) * 0.05
        out.append((a, {p: ref.get_property(p, a) for p in ("forces", "born_effective_charges", "dielectric_tensor")},
                    {"seed": s}))
    out[1][1].pop("dielectric_tensor")  # a structure without this label is skipped for it
    return out


def test_collect_two_members_labelled_by_one_gives_error_std_over_sqrt2(pair):
    """M = 2 with member 0 as the reference: per component the error of the mean is (m1 - m0) / 2 and the std
    |m1 - m0| / sqrt(2), so error = std / sqrt(2) per atom and per structure: rank correlation 1, scale 1/sqrt(2)."""
    from ase_etgnn.uncertainty import collect, summarize

    calc = CommitteeCalculator(list(pair), **KW)
    records = _labelled_by_member0(pair)
    data = collect(calc, records)
    f = data["forces"]
    assert f.per_atom and f.std.shape == (4 * 9,) and list(np.bincount(f.structure)) == [9] * 4
    assert np.allclose(f.error, f.std / np.sqrt(2), rtol=1e-10)
    ps = f.per_structure()
    assert ps.std.shape == (4,) and ps.std[2] == pytest.approx(np.sqrt(np.mean(f.std[18:27] ** 2)))
    eps = data["dielectric_tensor"]
    assert not eps.per_atom and list(eps.structure) == [0, 2, 3]
    assert np.allclose(eps.error, eps.std / np.sqrt(2), rtol=1e-10)
    s = summarize(data, n_bins=3)
    assert set(s["forces"]) == {"per_atom", "per_structure"} and set(s["dielectric_tensor"]) == {"per_structure"}
    assert s["forces"]["per_atom"]["spearman"] == pytest.approx(1.0)
    assert s["born_effective_charges"]["per_structure"]["std_scale"] == pytest.approx(1 / np.sqrt(2), rel=1e-10)
    assert s["forces"]["per_atom"]["units"] == "eV/A" and s["forces"]["per_atom"]["n"] == 36
    f1 = np.concatenate([ETGNNCalculator(pair[1], **KW).get_property("forces", a.copy()) for a, *_ in records])
    f0 = np.concatenate([t["forces"] for _, t, *_ in records])
    assert s["forces"]["per_atom"]["mae"] == s["forces"]["per_structure"]["mae"] == pytest.approx(
        np.mean(np.abs(f1 - f0)) / 2, rel=1e-9)  # the mean's error per component: (m1 - m0) / 2
    with pytest.raises(ValueError, match="stress"):
        collect(calc, records, ("stress",))


def test_cli_uncertainty_on_a_split_writes_json_and_a_calibration_plot(tmp_path, pair, capsys):
    import json

    from ase_etgnn.records import append_records
    from ase_etgnn.uncertainty import main

    data = tmp_path / "d.h5"
    append_records(data, [(a, t, p, f"r{k}") for k, (a, t, p) in enumerate(_labelled_by_member0(pair, n=5))])
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [0], "val": [1], "test": [2, 3, 4]}))
    models = [str(save_model(m, tmp_path / f"m{i}.pt")) for i, m in enumerate(pair)]
    out, png = tmp_path / "u.json", tmp_path / "plots" / "calibration.png"
    assert main([str(data), "--models", *models, "--split", f"{split}:test", "--json", str(out), "--plot", str(png),
                 "--device", "cpu", "--dtype", "float64", "--bins", "2"]) == 0
    res = json.loads(out.read_text())
    f = res["properties"]["forces"]
    assert f["per_atom"]["n"] == 27 and f["per_structure"]["n"] == 3 and f["per_atom"]["spearman"] == pytest.approx(1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and res["plot"] == str(png)
    assert "forces" in capsys.readouterr().out
    # scales fitted on one split applied to another: the spread scaled, the errors not, the fit then 1
    out2 = tmp_path / "u2.json"
    assert main([str(data), "--models", *models, "--split", f"{split}:test", "--json", str(out2),
                 "--std-scale", str(out), "--device", "cpu", "--dtype", "float64"]) == 0
    res2 = json.loads(out2.read_text())
    for name, levels in res["properties"].items():
        a = res2["std_scale"][name]
        assert a == levels["per_atom" if "per_atom" in levels else "per_structure"]["std_scale"]
        for level, m in levels.items():
            m2 = res2["properties"][name][level]
            assert m2["rms_std"] == pytest.approx(a * m["rms_std"], rel=1e-9)
            assert m2["rms_error"] == pytest.approx(m["rms_error"], rel=1e-12)
        assert res2["properties"][name]["per_structure" if name == "dielectric_tensor" else "per_atom"][
            "std_scale"] == pytest.approx(1.0, rel=1e-9)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main([str(data), "--models", *models, "--std-scale", str(bad), "--device", "cpu"]) == 2
    assert "not an 'etgnn uncertainty --json' summary" in capsys.readouterr().err
    assert main([str(data), "--models", models[0], "--device", "cpu"]) == 2  # one model is no committee
