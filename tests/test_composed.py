"""Composed models (ase_etgnn.composed): each property from its member, bit for bit; members' trunks run only
for the properties asked; one file; bad compositions refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_model

from ase_etgnn import ETGNNCalculator, compose, load_model, save_model
from ase_etgnn.cli import main as cli_main
from ase_etgnn.composed import ComposedConfig

FORCE_SIDE = ("energy", "forces")
TENSORS = ("born_effective_charges", "dielectric_tensor")
ROUTES = {"energy": "md", "forces": "md", "born_effective_charges": "dfpt", "dielectric_tensor": "dfpt"}


@pytest.fixture(scope="module")
def members():
    """Two members with different weights (seeds); each has heads it will not be routed (dropped)."""
    heads = FORCE_SIDE + TENSORS
    return {"md": small_model(heads=heads, seed=1), "dfpt": small_model(heads=heads, seed=2)}


def _results(model, atoms, forces):
    calc = ETGNNCalculator(model, dtype="float64", forces=forces, symmetrize=False)
    a = atoms.copy()
    a.calc = calc
    out = {"forces": a.get_forces(), "energy": a.get_potential_energy()}
    if forces == "conservative":
        out["stress"] = a.get_stress()
    for t in TENSORS:
        out[t] = calc.get_property(t, a)
    return out


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_each_property_comes_from_its_member(members, quartz_perturbed, forces, tmp_path):
    model = compose(members, ROUTES)
    save_model(model, tmp_path / "c.pt")
    got = _results(load_model(tmp_path / "c.pt"), quartz_perturbed, forces)
    md, dfpt = (_results(members[n], quartz_perturbed, forces) for n in ("md", "dfpt"))
    for name, value in got.items():
        want = dfpt[name] if name in TENSORS else md[name]
        other = md[name] if name in TENSORS else dfpt[name]
        assert np.array_equal(value, want), name
        assert not np.allclose(value, other), name  # the members differ, so the routing is seen


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_a_property_from_several_members_is_their_mean(members, quartz_perturbed, forces, tmp_path):
    """An ensemble in one file: tensors the mean of two members (also the energy member's own, in conservative
    mode), energy, forces and stress from the energy member alone, through save and load."""
    three = {**members, "dfpt2": small_model(heads=FORCE_SIDE + TENSORS, seed=4)}
    routes = {"energy": "md", "forces": "md", "born_effective_charges": ["dfpt", "dfpt2", "md"],
              "dielectric_tensor": ["dfpt", "dfpt2"]}
    model = compose(three, routes)
    assert model.members["md"].heads == ("energy", "forces", "born_effective_charges")
    save_model(model, tmp_path / "e.pt")
    got = _results(load_model(tmp_path / "e.pt"), quartz_perturbed, forces)
    each = {n: _results(m, quartz_perturbed, forces) for n, m in three.items()}
    for name, value in got.items():
        names = routes.get(name, "md")  # stress: of the energy member
        names = names if isinstance(names, list) else [names]
        np.testing.assert_allclose(value, np.mean([each[n][name] for n in names], axis=0), rtol=1e-12, atol=1e-14)
        assert not np.allclose(value, each["dfpt"][name]), name  # the members differ: the mean is seen
    with pytest.raises(ValueError, match="forces must come from one member"):
        compose(three, {"energy": "md", "forces": ["md", "dfpt"]})
    asr = {**three, "dfpt2": small_model(heads=TENSORS, seed=4, bec_asr=True)}
    with pytest.raises(ValueError, match="differ in bec_asr"):
        compose(asr, {"born_effective_charges": ["dfpt", "dfpt2"]})


def test_tensors_on_demand_run_only_the_members_asked(members, quartz_perturbed, monkeypatch):
    model = compose(members, ROUTES)
    calls = {"md": 0, "dfpt": 0}
    for name, member in model.members.items():
        original = member.trunk

        def counted(*args, _name=name, _original=original, **kw):
            calls[_name] += 1
            return _original(*args, **kw)

        monkeypatch.setattr(member, "trunk", counted)
    a = quartz_perturbed.copy()
    a.calc = ETGNNCalculator(model, dtype="float64", symmetrize=False)
    a.get_forces()
    assert calls == {"md": 1, "dfpt": 0}
    a.calc.get_property("born_effective_charges", a)
    a.calc.get_property("dielectric_tensor", a)
    assert calls == {"md": 1, "dfpt": 1}


def test_unrouted_heads_are_dropped_and_the_file_is_one_model(members, tmp_path):
    model = compose(members, ROUTES)
    assert model.members["md"].heads == FORCE_SIDE and model.members["dfpt"].heads == TENSORS
    assert model.heads == tuple(ROUTES)
    path = save_model(model, tmp_path / "c.pt")
    raw = path.read_bytes()
    path.write_bytes(raw[:-200] + bytes(200))  # damage: refused like any model file
    with pytest.raises(ValueError):
        load_model(path)


def test_bad_compositions_are_refused(members, tmp_path):
    with pytest.raises(ValueError, match="must come from one member"):
        compose(members, {"energy": "md", "forces": "dfpt"})
    with pytest.raises(ValueError, match="not given"):
        compose(members, {"energy": "nope"})
    other = {"md": members["md"], "far": small_model(heads=TENSORS, seed=3, cutoff=5.0)}
    with pytest.raises(ValueError, match="share cutoff"):
        compose(other, {"energy": "md", "forces": "md", "born_effective_charges": "far"})
    with pytest.raises(ValueError, match="is routed"):
        ComposedConfig(members=(("md", members["md"].config),), routes=(("energy", "md"),))
    model = compose(members, ROUTES)
    with pytest.raises(RuntimeError, match="for prediction"):
        model.train()


def test_cli_compose_names_its_sources(members, tmp_path, capsys):
    a, b = save_model(members["md"], tmp_path / "md.pt"), save_model(members["dfpt"], tmp_path / "dfpt.pt")
    out = tmp_path / "c.pt"
    assert cli_main(["compose", str(out), "--take", f"{a}=energy,forces",
                     "--take", f"{b}=born_effective_charges,dielectric_tensor", "--note", "test"]) == 0
    meta = load_model(out).metadata
    assert meta["composed_from"]["m1"]["file"] == str(a) and meta["composed_from"]["m2"]["properties"] == list(TENSORS)
    assert cli_main(["compose", str(tmp_path / "x.pt"), "--take", f"{out}=energy"]) == 2
    assert "composed model already" in capsys.readouterr().err
    assert cli_main(["compose", str(tmp_path / "x.pt"), "--take", f"{a}=energy", "--take", f"{b}=energy"]) == 2
    assert "taken twice" in capsys.readouterr().err
    assert cli_main(["compose", str(tmp_path / "x.pt"), "--take", f"{a}=born_effective_charges",
                     "--take", f"{b}=born_effective_charges", "--average"]) == 0
    assert f"born_effective_charges <- mean({a}, {b})" in capsys.readouterr().out
    assert load_model(tmp_path / "x.pt").config.members_of("born_effective_charges") == ("m1", "m2")


def test_a_composed_model_cannot_be_a_training_start(members, tmp_path):
    from ase_etgnn.train import load_train_config
    from ase_etgnn.train.provenance import _load_init_model

    path = save_model(compose(members, ROUTES), tmp_path / "c.pt")
    cfg = load_train_config(None, {"data": "unused.h5", "init_from": str(path)})
    with pytest.raises(ValueError, match="cannot be trained"):
        _load_init_model(cfg, torch.device("cpu"), torch.float64)
