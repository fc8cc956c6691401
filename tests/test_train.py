"""Training pipeline: configs, normalisation, loss, exact resume, 2-process DDP, learnability, evaluate CLI."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_etgnn.records import append_records
from ase_etgnn.train import (TrainConfig, compute_normalization, euclidean_loss, load_train_config,
                             parse_overrides, train)

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(cutoff=4.0, triplet_cutoff=3.0, hidden=16, triplet_hidden=16, n_blocks=1, int_emb=8, basis_emb=4,
            out_emb=16, n_radial=4, n_spherical=3, n_sbf_radial=3)
HEADS = ("forces", "born_effective_charges", "dielectric_tensor")


def _structures(n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = Atoms("SiO2", cell=np.eye(3) * 3.2 + rng.normal(0, 0.05, (3, 3)), pbc=True,
                  scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.1], [0.2, 0.6, 0.55]])
        a.positions += rng.normal(0, 0.1, a.positions.shape)
        out.append(a)
    return out


@pytest.fixture(scope="module")
def teacher_data(tmp_path_factory):
    """14 three-atom SiO2 cells labelled by a random 'teacher' ETGNN (seed 123)."""
    from ase_etgnn import build_model
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    hyper = dict(TINY)
    cutoff = hyper.pop("cutoff")
    teacher = build_model(["O", "Si"], heads=HEADS, cutoff=cutoff, seed=123, dtype=torch.float64, **hyper)
    teacher.set_normalization("born_effective_charges", 1.0, [-1.0, 2.0])
    teacher.set_normalization("dielectric_tensor", 1.0, 3.0)
    items = []
    for a in _structures(14, 0):
        b = collate_graphs([atoms_to_graph(a, cutoff, hyper["triplet_cutoff"])], dtype=torch.float64)
        with torch.no_grad():
            o = teacher(b)
        t = {"forces": o["forces"].numpy(), "born_effective_charges": o["born_effective_charges"].numpy(),
             "dielectric_tensor": o["dielectric_tensor"].numpy()[0]}
        items.append((a, t, {"teacher_seed": 123}, None))
    path = tmp_path_factory.mktemp("teacher") / "teacher.h5"
    append_records(path, items)
    return path


def _config(data, out, **over) -> TrainConfig:
    kw = dict(data=str(data), output_dir=str(out), model=dict(TINY), dtype="float64", batch_size=4, epochs=4,
              progress=False)
    kw.update(over)
    return TrainConfig(**kw)


# --------------------------------------------------------------------------------------------- config
def test_config_files_overrides_and_errors(tmp_path):
    (tmp_path / "c.toml").write_text('data = "d.h5"\nlr = 1e-3\n[model]\nhidden = 32\n[loss_weights]\nforces = 2\n')
    (tmp_path / "c.yaml").write_text("data: d.h5\nlr: 0.001\nmodel:\n  hidden: 32\nloss_weights:\n  forces: 2\n")
    over = parse_overrides(["model.n_blocks=2", "split=[0.8, 0.1, 0.1]", "heads=['forces']", "grad_clip=none",
                            "device=cpu", "lr=5e-4"])
    assert over == {"model": {"n_blocks": 2}, "split": [0.8, 0.1, 0.1], "heads": ["forces"], "grad_clip": None,
                    "device": "cpu", "lr": 5e-4}
    for name in ("c.toml", "c.yaml"):
        c = load_train_config(str(tmp_path / name), over)
        assert c.model == {"hidden": 32, "n_blocks": 2} and c.loss_weights == {"forces": 2.0}
        assert c.split == (0.8, 0.1, 0.1) and c.heads == ("forces",) and c.lr == 5e-4 and c.device == "cpu"
        assert c.batch_size == 40 and c.lr_factor == 0.5  # paper defaults (Table S2, SiO2)
    with pytest.raises(ValueError, match="unknown training config keys.*'lrate'"):
        load_train_config(str(tmp_path / "c.toml"), {"lrate": 1})
    with pytest.raises(ValueError, match="split must be"):
        TrainConfig(data="d.h5", split=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="unknown property 'bec'"):
        TrainConfig(data="d.h5", loss_weights={"bec": 1.0})
    with pytest.raises(ValueError, match="needs forces_mode"):
        TrainConfig(data="d.h5", loss_weights={"stress": 1.0})
    with pytest.raises(Exception):
        TrainConfig(data="d.h5").lr = 1.0  # frozen
    cfg = load_train_config(str(ROOT / "examples" / "train_config.toml"))
    assert cfg.lr == 5e-4 and cfg.batch_size == 40 and cfg.model["cutoff"] == 6.0


def test_shipped_sio2_recipes_match_the_model_file_and_keep_test_records_unseen():
    """models/sio2_train.toml (stage 1), models/sio2_finetune.toml (stage 2) and models/sio2_joint.toml (stage 3,
    the shipped model) load, their split files fit the data set, stage 2's split keeps every stage-1 record
    where it was (stage 3 uses stage 2's split), and the shipped model's metadata holds each stage's settings."""
    from ase_etgnn import load_model
    from ase_etgnn.records import count_records
    from ase_etgnn.train import load_split

    s1 = load_train_config(str(ROOT / "models" / "sio2_train.toml"))
    s2 = load_train_config(str(ROOT / "models" / "sio2_finetune.toml"))
    s3 = load_train_config(str(ROOT / "models" / "sio2_joint.toml"))
    n = count_records(str(ROOT / s1.data))
    sp1, sp2 = load_split(str(ROOT / s1.split_file), n), load_split(str(ROOT / s2.split_file), n)
    assert all(set(sp1[k]) <= set(sp2[k]) for k in ("train", "val", "test"))
    assert sorted(i for v in sp1.values() for i in v) == list(range(321))
    assert s3.split_file == s2.split_file and s3.init_from == "models/sio2.pt" and s3.forces_mode == "joint"
    meta = load_model(ROOT / "models" / "sio2.pt").metadata
    keys = ("lr", "lr_factor", "lr_patience", "min_lr", "batch_size", "seed", "loss_weights", "split_file",
            "init_from", "forces_mode")
    stages = (meta["train_config"], meta["init_from"]["metadata"]["train_config"],
              meta["init_from"]["metadata"]["init_from"]["metadata"]["train_config"])
    for tc, recipe in zip(stages[:2], (s3, s2)):
        for k in keys:
            assert tc[k] == getattr(recipe, k), k
    assert {k: len(v) for k, v in sp2.items()} == meta["split"]
    assert stages[2]["model"] == s1.model and stages[2]["lr"] == s1.lr and stages[2]["loss_weights"] == s1.loss_weights


# ------------------------------------------------------------------------------------ normalisation
def test_compute_normalization():
    rng = np.random.default_rng(0)
    species = ("O", "Si")
    numbers, targets = [], []
    for k in range(1, 6):
        num = np.array([14] * k + [8] * (2 * k + k % 2))
        n = len(num)
        e = -5.0 * k - 3.0 * (2 * k + k % 2) + 0.001 * rng.normal() * n
        z = np.zeros((n, 3, 3))
        z[num == 14] = 3.0 * np.eye(3)
        z[num == 8] = -1.5 * np.eye(3) + 0.2
        targets.append({"energy": np.array(e), "forces": rng.normal(size=(n, 3)) * 2.0,
                        "born_effective_charges": z, "dielectric_tensor": np.diag([2.0, 2.0, 2.3])})
        numbers.append(num)
    norm = compute_normalization(numbers, targets, species, ("energy", "forces", "born_effective_charges",
                                                              "dielectric_tensor"))
    np.testing.assert_allclose(norm["energy"]["reference"], [-3.0, -5.0], atol=0.05)
    assert 0 < norm["energy"]["scale"] < 0.01
    assert norm["forces"]["scale"] == pytest.approx(
        np.sqrt(np.mean(np.concatenate([t["forces"].ravel() for t in targets]) ** 2)))
    np.testing.assert_allclose(norm["born_effective_charges"]["reference"], [-1.5 + 0.2, 3.0])
    assert norm["dielectric_tensor"]["reference"] == pytest.approx(2.1)
    assert norm["dielectric_tensor"]["scale"] == pytest.approx(np.std(np.diag([2.0, 2.0, 2.3]) - 2.1 * np.eye(3)))


def test_euclidean_loss_masked_invariant_and_finite_gradient():
    rng = np.random.default_rng(1)
    pred = torch.tensor(rng.normal(size=(4, 3, 3)), requires_grad=True)
    target = pred.detach().clone()
    target[1] += torch.tensor(rng.normal(size=(3, 3)))
    target[3] += 100.0  # masked out
    mask = torch.tensor([True, True, True, False])
    loss, total, count = euclidean_loss(pred, target, mask)
    assert int(count) == 3
    assert float(loss.detach()) == pytest.approx(float(torch.linalg.norm(pred.detach()[1] - target[1])) / 3)  # not squared
    loss.backward()
    assert torch.isfinite(pred.grad).all() and float(pred.grad[[0, 2, 3]].abs().sum()) == 0.0
    q = torch.linalg.qr(torch.tensor(rng.normal(size=(3, 3))))[0]
    rot = lambda t: torch.einsum("ia,jb,nab->nij", q, q, t)  # noqa: E731
    loss_r, _, _ = euclidean_loss(rot(pred.detach()), rot(target), mask)
    assert float(loss_r) == pytest.approx(float(loss.detach()))
    e_loss, _, _ = euclidean_loss(torch.tensor([2.0, 8.0]), torch.tensor([0.0, 0.0]), torch.tensor([True, True]),
                                  n_atoms=torch.tensor([2, 4]))
    assert float(e_loss) == pytest.approx(1.5)  # energy per atom


# ------------------------------------------------------------------------------------ resume + export
def test_resume_continues_exactly_and_exports_best(teacher_data, tmp_path):
    from ase_etgnn import load_model

    full = train(_config(teacher_data, tmp_path / "full", epochs=4))
    train(_config(teacher_data, tmp_path / "split", epochs=2))
    resumed = train(_config(teacher_data, tmp_path / "split", epochs=4), resume=True)
    log_a = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log_a] == [0, 1, 2, 3, 4] == [r["epoch"] for r in log_b]
    for ra, rb in zip(log_a, log_b):
        assert ra["train_loss"] == rb["train_loss"] and ra["val_loss"] == rb["val_loss"]  # bit-identical
        assert ra["val_mae"] == rb["val_mae"] and ra["lr"] == rb["lr"]
    assert [r["train_loss"] for r in full.history[1:]] == [r["train_loss"] for r in resumed.history[1:]]
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert ca["epoch"] == cb["epoch"] == 4
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    with pytest.raises(ValueError, match="settings differ.*lr"):
        train(_config(teacher_data, tmp_path / "split", epochs=5, lr=1e-3), resume=True)
    model = load_model(full.best_path)
    meta = model.metadata
    assert meta["epoch"] == full.best_epoch and meta["train_config"]["lr"] == 5e-4
    assert set(meta["normalization"]) == set(HEADS) and model.heads == HEADS and model.species == ("O", "Si")
    assert float(model.heads_["born_effective_charges"].scale) == pytest.approx(
        meta["normalization"]["born_effective_charges"]["scale"])
    split = json.loads((tmp_path / "full" / "split.json").read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [8, 3, 3]


# --------------------------------------------------------------------------------- model provenance
def test_provenance_fresh_init_from_and_resume(teacher_data, tmp_path):
    """Where the model comes from, resolved once: fresh (seeded weights, normalisation fitted on the training
    split), init_from (the file's weights, heads and normalisation) and resume (the checkpoint's weights and
    split, the normalisation the run started with)."""
    from ase_etgnn import build_model, load_model
    from ase_etgnn.records import RecordReader, read_record
    from ase_etgnn.train.provenance import read_checkpoint, resolve_provenance

    cpu = torch.device("cpu")

    def resolve(cfg, checkpoint=None):
        with RecordReader(teacher_data) as reader:
            return resolve_provenance(cfg, reader, checkpoint, str(tmp_path / "no-checkpoint"), cpu, torch.float64)

    first = train(_config(teacher_data, tmp_path / "first", epochs=2, lr=5e-3))
    split = json.loads((tmp_path / "first" / "split.json").read_text())
    fresh = resolve(_config(teacher_data, tmp_path / "first", epochs=2, lr=5e-3))
    assert (fresh.kind, fresh.init_from, fresh.checkpoint, fresh.start_is_candidate) == ("fresh", None, None, False)
    assert fresh.split == split and fresh.species == ("O", "Si") and fresh.heads == HEADS
    records = [read_record(teacher_data, i) for i in split["train"]]
    expected = compute_normalization([a.numbers for a, _, _ in records], [t for _, t, _ in records], ("O", "Si"),
                                     HEADS)
    assert fresh.normalization == expected
    hyper = dict(TINY)
    seeded = build_model(["O", "Si"], heads=HEADS, cutoff=hyper.pop("cutoff"), seed=0, dtype=torch.float64, **hyper)
    for name, nv in expected.items():
        seeded.set_normalization(name, nv["scale"], nv["reference"])
    assert all(torch.equal(v, fresh.model.state_dict()[k]) for k, v in seeded.state_dict().items())

    tuned = resolve(_config(teacher_data, tmp_path / "tuned", model={}, init_from=first.best_path))
    best = load_model(first.best_path, dtype=torch.float64)
    assert tuned.kind == "init_from" and tuned.start_is_candidate and tuned.checkpoint is None
    assert tuned.init_from == {"path": first.best_path, "metadata": best.metadata}
    assert tuned.heads == HEADS and tuned.split == split
    assert all(torch.equal(v, tuned.model.state_dict()[k]) for k, v in best.state_dict().items())
    for h in HEADS:  # the file's normalisation, not one refitted on this data
        assert tuned.normalization[h]["scale"] == best.metadata["normalization"][h]["scale"]

    cfg = _config(teacher_data, tmp_path / "first", epochs=4, lr=5e-3)
    ckpt = read_checkpoint(str(tmp_path / "first" / "checkpoint.pt"), cfg)
    resumed = resolve(cfg, ckpt)
    assert resumed.kind == "resume" and not resumed.start_is_candidate and resumed.checkpoint is ckpt
    assert resumed.split == split and resumed.normalization == fresh.normalization
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in ckpt["model"].items())
    assert not torch.equal(ckpt["model"]["embedding.weight"], fresh.model.state_dict()["embedding.weight"])


def test_the_data_set_is_opened_once_per_role(teacher_data, tmp_path, monkeypatch):
    """A run opens its data set three times, whatever its model's origin: one pass over the records (split,
    species, labels, normalisation), one handle for the training loader, one for the validation loader."""
    import h5py

    opened = []

    class CountingFile(h5py.File):
        def __init__(self, name, *args, **kwargs):
            opened.append(os.path.abspath(os.fspath(name)))
            super().__init__(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", CountingFile)
    runs = {"fresh": (_config(teacher_data, tmp_path / "run", epochs=2), False),
            "resume": (_config(teacher_data, tmp_path / "run", epochs=3), True),
            "init_from": (_config(teacher_data, tmp_path / "ft", epochs=1, model={},
                                  init_from=str(tmp_path / "run" / "best.pt")), False)}
    for kind, (cfg, resume) in runs.items():
        opened.clear()
        train(cfg, resume=resume)
        assert opened == [str(teacher_data)] * 3, (kind, opened)


# --------------------------------------------------------------------------------------- evaluate CLI
def test_split_file_fixes_the_records_and_rejects_bad_splits(teacher_data, tmp_path):
    """A given split (e.g. the shipped model's) is used as is, so records appended later stay unused; a training
    record listed twice is drawn twice, a validation record listed twice is an error."""
    from ase_etgnn import load_model

    given = {"train": [0, 2, 3, 5, 6, 8], "val": [1, 9], "test": [4]}  # records 7, 10-13 unused
    f = tmp_path / "split.json"
    f.write_text(json.dumps(given))
    res = train(_config(teacher_data, tmp_path / "run", epochs=1, split_file=str(f)))
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == given
    assert res.best_path and json.loads(Path(res.best_path).parent.joinpath("split.json").read_text()) == given
    twice = {"train": [0, 0, 2, 3], "val": [1], "test": [4]}  # record 0 oversampled: drawn twice per epoch
    f.write_text(json.dumps(twice))
    res = train(_config(teacher_data, tmp_path / "twice", epochs=1, split_file=str(f)))
    assert load_model(res.best_path).metadata["train_structures"] == {"drawn": 4, "distinct": 3}
    bad = {"out of range": ({"train": [0, 14], "val": [1], "test": []}, "outside the dataset's 14 records"),
           "overlap": ({"train": [0, 1], "val": [1], "test": []}, "record 1 is in both 'train' and 'val'"),
           "val repeat": ({"train": [0], "val": [1, 1], "test": []}, "record 1 is twice in 'val'"),
           "empty train": ({"train": [], "val": [1], "test": []}, "'train' list is empty"),
           "missing key": ({"train": [0], "val": [1]}, "'train', 'val' and 'test'"),
           "not integers": ({"train": [0.0], "val": [1], "test": []}, "list of integer record indices")}
    for name, (content, msg) in bad.items():
        f.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=msg):
            train(_config(teacher_data, tmp_path / name.replace(" ", "_"), epochs=1, split_file=str(f)))
    f.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read a JSON split"):
        train(_config(teacher_data, tmp_path / "corrupt", epochs=1, split_file=str(f)))


def test_extend_split_keeps_old_assignments_and_splits_new_records_per_group(teacher_data, tmp_path):
    from ase_etgnn.cli import main
    from ase_etgnn.train import extend_split

    old = {"train": [0, 1, 2, 3], "val": [4], "test": [5]}
    groups = ["a"] * 6 + ["a", "b"] * 10  # 26 records, 20 new: 10 per group
    s = extend_split(old, 26, (0.7, 0.15, 0.15), seed=3, groups=groups)
    assert all(set(old[k]) <= set(s[k]) for k in old)
    assert sorted(i for v in s.values() for i in v) == list(range(26))  # each record once
    for g in "ab":
        counts = [sum(1 for i in s[k] if i > 5 and groups[i] == g) for k in ("train", "val", "test")]
        assert counts == [7, 2, 1], (g, counts)
    assert s == extend_split(old, 26, (0.7, 0.15, 0.15), seed=3, groups=groups)  # deterministic
    assert s != extend_split(old, 26, (0.7, 0.15, 0.15), seed=4, groups=groups)
    with pytest.raises(ValueError, match="summing to 1"):
        extend_split(old, 26, (0.7, 0.2, 0.2), seed=3)
    prev = tmp_path / "old.json"
    prev.write_text(json.dumps(old))
    out = tmp_path / "new.json"
    assert main(["dataset", "split", str(teacher_data), "-o", str(out), "--extend", str(prev)]) == 0
    new = json.loads(out.read_text())
    assert all(set(old[k]) <= set(new[k]) for k in old) and sum(map(len, new.values())) == 14
    before = out.read_text()
    assert main(["dataset", "split", str(teacher_data), "-o", str(out)]) == 2  # never overwrites silently
    assert out.read_text() == before


def test_carry_split_keeps_each_source_data_sets_subsets_in_the_merged_set(tmp_path, capsys):
    """A joint model's split: every record merged from a source keeps the subset of that source's split (its
    test records stay test); records the source split never placed are split anew; a source that contributed
    nothing is refused."""
    from ase_etgnn.cli import main
    from ase_etgnn.records import iter_records

    sources, splits = [], []
    for name, seed, n in (("a", 0, 10), ("b", 1, 8)):
        path = tmp_path / f"{name}.h5"
        append_records(path, [(a, {"forces": np.full((3, 3), float(seed))}, {"tag": name}, f"{name}{i}")
                              for i, a in enumerate(_structures(n, seed))])
        split = {"train": list(range(0, n - 4)), "val": [n - 4], "test": [n - 3, n - 2]}  # n - 1: appended later
        sp = tmp_path / f"{name}_split.json"
        sp.write_text(json.dumps(split))
        sources.append(path)
        splits.append((sp, split))
    joint = tmp_path / "joint.h5"
    assert main(["dataset", "import", str(sources[1]), str(sources[0]), "-o", str(joint)]) == 0  # b first
    out = tmp_path / "joint.json"
    carry = [arg for src, (sp, _) in zip(sources, splits) for arg in ("--carry", f"{src}={sp}")]
    assert main(["dataset", "split", str(joint), "-o", str(out), "--seed", "5", *carry]) == 0
    joint_split = json.loads(out.read_text())
    keys = [p["key"] for _, _, p in iter_records(joint, properties=())]
    for (_, split), name in zip(splits, "ab"):
        for subset, idx in split.items():
            assert {keys.index(f"{name}{i}") for i in idx} <= set(joint_split[subset]), (name, subset)
    assert sorted(i for v in joint_split.values() for i in v) == list(range(18))  # a9, b7 placed anew
    capsys.readouterr()
    other = tmp_path / "c.h5"
    append_records(other, [(a, {"forces": np.zeros((3, 3))}, {}, f"c{i}") for i, a in enumerate(_structures(2, 9))])
    (tmp_path / "c_split.json").write_text(json.dumps({"train": [0], "val": [1], "test": []}))
    assert main(["dataset", "split", str(joint), "-o", str(tmp_path / "x.json"),
                 "--carry", f"{other}={tmp_path / 'c_split.json'}"]) == 2
    assert "no record of" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_init_from_starts_at_the_file_weights_and_checks_settings(teacher_data, tmp_path):
    """Fine-tuning: epoch 0 of the new run is the old model (same val loss), architecture from the file."""
    first = train(_config(teacher_data, tmp_path / "first", epochs=3, lr=5e-3))
    best_val = min(r["val_loss"] for r in first.history[1:])
    tuned = train(_config(teacher_data, tmp_path / "tuned", epochs=1, model={}, init_from=first.best_path))
    assert tuned.history[0]["val_loss"] == pytest.approx(best_val, rel=1e-10)
    fresh = train(_config(teacher_data, tmp_path / "fresh", epochs=1))
    assert fresh.history[0]["val_loss"] != pytest.approx(best_val, rel=1e-3)  # a random start differs: can fail
    from ase_etgnn import load_model

    meta = load_model(tuned.best_path).metadata
    assert meta["init_from"]["path"] == first.best_path and meta["init_from"]["metadata"]["epoch"] == first.best_epoch
    resumed = train(_config(teacher_data, tmp_path / "tuned", epochs=2, model={}, init_from=first.best_path),
                    resume=True)
    assert resumed.epochs_run == 2
    # a step that makes it worse leaves best.pt at the file's weights (epoch 0)
    worse = train(_config(teacher_data, tmp_path / "worse", epochs=1, model={}, init_from=first.best_path, lr=0.1))
    assert worse.history[1]["val_loss"] > worse.history[0]["val_loss"] and worse.best_epoch == 0
    a, b = load_model(first.best_path).state_dict(), load_model(worse.best_path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"(?s)init_from .*hidden: run 32, file 16"):
        train(_config(teacher_data, tmp_path / "bad", epochs=1, model=dict(TINY, hidden=32),
                      init_from=first.best_path))
    with pytest.raises(ValueError, match=r"species: run \['Si'\]"):
        train(_config(teacher_data, tmp_path / "bad2", epochs=1, species=["Si"], init_from=first.best_path))


def test_committee_member_settings_reinit_heads_and_bootstrap(teacher_data, tmp_path):
    """reinit_heads redraws only the named heads (normalisation kept, seed decides); bootstrap trains on a
    seeded resample with replacement; old checkpoints without these settings still resume."""
    from ase_etgnn import load_model
    from ase_etgnn.model import reinitialize_heads
    from ase_etgnn.train.config import resume_changes
    from ase_etgnn.train.splits import bootstrap_sample

    first = train(_config(teacher_data, tmp_path / "first", epochs=1))
    base = load_model(first.best_path, dtype=torch.float64)
    sd0 = {k: v.clone() for k, v in base.state_dict().items()}
    reinitialize_heads(base, ["born_effective_charges"], seed=7)
    changed = {k for k, v in base.state_dict().items() if not torch.equal(v, sd0[k])}
    assert changed and all(k.startswith("heads_.born_effective_charges.") and "mlp" in k for k in changed)
    assert torch.equal(base.heads_["born_effective_charges"].reference, sd0["heads_.born_effective_charges.reference"])
    again, other = load_model(first.best_path, dtype=torch.float64), load_model(first.best_path, dtype=torch.float64)
    reinitialize_heads(again, ["born_effective_charges"], seed=7)
    reinitialize_heads(other, ["born_effective_charges"], seed=8)
    w = "heads_.born_effective_charges.edge_mlp.0.weight"
    assert torch.equal(again.state_dict()[w], base.state_dict()[w])
    assert not torch.equal(other.state_dict()[w], base.state_dict()[w])
    with pytest.raises(KeyError, match="no head 'energy'"):
        reinitialize_heads(base, ["energy"], seed=0)

    idx = list(range(100, 140))
    boot = bootstrap_sample(idx, 3)
    assert boot == bootstrap_sample(idx, 3) != bootstrap_sample(idx, 4)
    assert len(boot) == 40 and set(boot) <= set(idx) and 15 < len(set(boot)) < 40

    cfg = _config(teacher_data, tmp_path / "m1", epochs=1, model={}, init_from=first.best_path,
                  reinit_heads=["forces", "dielectric_tensor"], bootstrap=True, seed=5)
    member = train(cfg)
    drawn = load_model(member.best_path).metadata["train_structures"]
    assert drawn["drawn"] == 8 and drawn["distinct"] < 8  # 14 records: 8 train, resampled
    assert load_model(first.best_path).metadata["train_structures"] == {"drawn": 8, "distinct": 8}
    start = member.history[0]["val_mae"]
    ref = first.history[-1]["val_mae"]
    assert start["born_effective_charges"] == pytest.approx(ref["born_effective_charges"], rel=1e-10)  # kept
    assert start["forces"] != pytest.approx(ref["forces"], rel=1e-3)  # redrawn
    with pytest.raises(ValueError, match="reinit_heads needs init_from"):
        _config(teacher_data, tmp_path / "bad", reinit_heads=["forces"])
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("reinit_heads", "bootstrap")}
    assert resume_changes(old, dataclasses.replace(cfg, reinit_heads=(), bootstrap=False)) == []
    assert resume_changes(old, cfg) == ["bootstrap", "reinit_heads"]



def test_init_from_a_composed_member_and_a_new_force_head(teacher_data, tmp_path):
    """init_member starts a run from one member of a composed file; a head in reinit_heads may change its
    head-only settings (force_head): trunk and other heads carry over exactly, the new head is drawn from seed."""
    from ase_etgnn import load_model
    from ase_etgnn.cli import main
    from ase_etgnn.model import rebuild_heads

    first = train(_config(teacher_data, tmp_path / "first", epochs=1))
    composed = tmp_path / "composed.pt"
    assert main(["compose", str(composed), "--take", f"{first.best_path}=forces",
                 "--take", f"{first.best_path}=born_effective_charges,dielectric_tensor"]) == 0
    members = list(load_model(composed).members)
    with pytest.raises(ValueError, match=rf"init_member \(one of \{members!r}\), got None"):
        train(_config(teacher_data, tmp_path / "no_member", epochs=1, model={}, init_from=str(composed)))
    with pytest.raises(ValueError, match="this file holds one model"):
        train(_config(teacher_data, tmp_path / "single", epochs=1, model={}, init_from=first.best_path,
                      init_member="m1"))
    with pytest.raises(ValueError, match="force_head: run 'pair', file 'edge'"):  # the head is not redrawn
        train(_config(teacher_data, tmp_path / "keep", epochs=1, model={"force_head": "pair"},
                      init_from=first.best_path))
    pair = dict(model={"force_head": "pair"}, reinit_heads=["forces"], seed=3, epochs=1, init_from=str(composed),
                init_member=members[0])
    run = train(_config(teacher_data, tmp_path / "pair", lr=1e-12, **pair))
    again = train(_config(teacher_data, tmp_path / "pair_again", lr=1e-12, **pair))
    src = load_model(composed).members[members[0]].state_dict()
    out = load_model(run.best_path)
    sd = out.state_dict()
    assert out.config.force_head == "pair" and out.config.heads == ("forces",)
    assert load_model(run.best_path).metadata["init_from"]["metadata"]["member"] == members[0]
    head = {k for k in sd if k.startswith("heads_.forces.") and "mlp" in k or k not in src}
    assert head > {k for k in sd if k.startswith("node_output.")} != set()  # the pair head's atom features
    assert all(torch.allclose(sd[k], src[k], rtol=0, atol=1e-10) for k in sd if k not in head)  # copied
    assert all(torch.equal(sd[k], load_model(again.best_path).state_dict()[k]) for k in sd)  # seed decides
    assert torch.equal(sd["heads_.forces.scale"], src["heads_.forces.scale"])  # normalisation kept
    assert run.history[0]["val_mae"]["forces"] != pytest.approx(first.history[-1]["val_mae"]["forces"], rel=1e-3)
    with pytest.raises(ValueError, match="init_member needs init_from"):
        _config(teacher_data, tmp_path / "bad", init_member="m1")
    with pytest.raises(ValueError, match=r"\['hidden'\] shape the trunk"):
        rebuild_heads(out, {"hidden": 8}, seed=0)


def test_train_heads_refits_named_heads_and_keeps_every_other_weight(teacher_data, tmp_path):
    """train_heads: the named tensor heads change, the trunk and the other heads stay bit-identical (forces and
    energy of the exported model are those of init_from); it needs init_from and a head the model has."""
    from ase_etgnn import load_model

    first = train(_config(teacher_data, tmp_path / "first", epochs=1))
    cfg = _config(teacher_data, tmp_path / "heads", epochs=2, model={}, init_from=first.best_path, lr=5e-3,
                  train_heads=["born_effective_charges", "dielectric_tensor"],
                  early_stopping_patience=0)
    refit = train(cfg)
    before = load_model(first.best_path).state_dict()
    last = torch.load(Path(refit.best_path).parent / "checkpoint.pt", weights_only=True)["model"]  # epoch 2
    changed = {k for k in before if not torch.equal(before[k], last[k])}
    assert changed, "nothing was trained"
    after = load_model(refit.best_path).state_dict()  # best.pt: the start or a later epoch, same rule
    assert {k for k in before if not torch.equal(before[k], after[k])} <= changed
    assert all(k.startswith(("heads_.born_effective_charges.", "heads_.dielectric_tensor.")) for k in changed)
    assert any(k.startswith("heads_.dielectric_tensor.") for k in changed)
    with pytest.raises(ValueError, match="train_heads needs init_from"):
        _config(teacher_data, tmp_path / "bad", train_heads=["born_effective_charges"])
    with pytest.raises(ValueError, match="train_heads: 'trunk' is not a model head"):
        _config(teacher_data, tmp_path / "bad", init_from=first.best_path, model={}, train_heads=["trunk"])

def test_evaluate_cli_json_and_plots(teacher_data, tmp_path):
    from ase_etgnn.cli import main

    res = train(_config(teacher_data, tmp_path / "run", epochs=1))
    out = tmp_path / "metrics.json"
    rc = main(["evaluate", res.best_path, str(teacher_data), "--split", str(tmp_path / "run" / "split.json") + ":test",
               "--json", str(out), "--plots", str(tmp_path / "plots"), "--device", "cpu"])
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["n_structures"] == 3
    for h in HEADS:
        for key in ("mae", "rmse", "per_component_mae", "fnorm", "ewt_25", "ewt_10", "ewt_5"):
            assert key in m["metrics"][h], (h, key)
    assert m["metrics"]["born_effective_charges"]["n"] == 9 and m["metrics"]["dielectric_tensor"]["n"] == 3
    assert "fnorm_crystal_system_mean" in m["metrics"]["dielectric_tensor"]
    assert m["metrics"]["dielectric_tensor"]["symmetry"]["all"]["n"] == 3  # GMTNet success rates
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [f"parity_{h}.png" for h in sorted(HEADS)]


# ------------------------------------------------------------------------------------------- DDP run
def test_torchrun_two_process_gloo(teacher_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cfg = tmp_path / "c.toml"
    model = "\n".join(f"{k} = {v}" for k, v in TINY.items())
    cfg.write_text(f'data = "{teacher_data}"\noutput_dir = "{tmp_path / "ddp"}"\ndtype = "float64"\n'
                   f"batch_size = 2\nepochs = 2\ndevice = \"cpu\"\n[model]\n{model}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ase_etgnn.cli", "train", str(cfg)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree"] is True and summary["epochs_run"] == 2
    log = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2] and all(np.isfinite(r["val_loss"]) for r in log)
    assert (tmp_path / "ddp" / "best.pt").exists()
    assert "world size 2" in proc.stdout


# ------------------------------------------------------------------------------------- learnability
def test_student_learns_teacher(teacher_data, tmp_path):
    """A student (different seed) fitted to a random teacher's labels: validation MAE drops > 5x."""
    res = train(_config(teacher_data, tmp_path / "student", seed=7, lr=5e-3, epochs=100, split=(0.72, 0.28, 0.0),
                        early_stopping_patience=0, lr_patience=5))
    start = res.history[0]["val_mae"]
    best = min(res.history[1:], key=lambda r: r["val_loss"])["val_mae"]
    assert len(res.history) == 101
    for h in ("forces", "born_effective_charges"):
        assert best[h] < start[h] / 5, (h, start[h], best[h])


def test_al2o3_and_oxides_recipes_keep_every_test_record_unseen():
    """models/al2o3.pt is models/al2o3_finetune.toml's run (stage 2) with models/al2o3_train.toml's architecture
    and species (stage 1), models/oxides.pt likewise of models/oxides_finetune3.toml and models/oxides_train.toml;
    the v2 split keeps each of the first 125 records where stage 1 had it; the two-oxide split (data/oxides_dfpt.h5
    = SiO2 then the first 248 Al2O3 records) puts every record where the separate model's split has it, so neither
    separate test record is trained on, and its stage-2 and stage-3 extensions keep every record where it was."""
    from ase_etgnn import load_model
    from ase_etgnn.records import count_records, iter_records
    from ase_etgnn.train import load_split

    s1 = load_train_config(str(ROOT / "models" / "al2o3_train.toml"))
    s2 = load_train_config(str(ROOT / "models" / "al2o3_finetune.toml"))
    ox = load_train_config(str(ROOT / "models" / "oxides_train.toml"))
    ox2 = load_train_config(str(ROOT / "models" / "oxides_finetune.toml"))
    ox3 = load_train_config(str(ROOT / "models" / "oxides_finetune3.toml"))
    for name, run, architecture in (("al2o3.pt", s2, s1), ("oxides.pt", ox3, ox)):
        shipped = load_model(ROOT / "models" / name)
        tc, recipe = shipped.metadata["train_config"], run.to_dict()
        for k in ("lr", "batch_size", "seed", "loss_weights", "split_file", "init_from", "forces_mode", "epochs"):
            assert tc[k] == recipe[k], (name, k)
        arch = shipped.config
        assert tuple(arch.species) == tuple(architecture.species), name
        assert all(getattr(arch, k) == v for k, v in architecture.model.items()), (name, architecture.model)
    assert s2.init_from == s1.output_dir + "/best.pt" and s2.forces_mode == "joint"
    assert ox2.init_from == ox.output_dir + "/best.pt" and ox3.init_from == ox2.output_dir + "/best.pt"
    n_al = count_records(str(ROOT / "data" / "al2o3_dfpt.h5"))
    v1, v2 = load_split(str(ROOT / s1.split_file), 125), load_split(str(ROOT / s2.split_file), n_al)
    assert all(set(v1[k]) == {i for i in v2[k] if i < 125} for k in v1)
    assert sorted(i for v in v2.values() for i in v) == list(range(248))
    sio2 = load_split(str(ROOT / "models" / "sio2_split_v2.json"), 720)
    joint = load_split(str(ROOT / ox.split_file), count_records(str(ROOT / ox.data)))
    keys = [p["key"] for _, _, p in iter_records(str(ROOT / ox.data), properties=())]
    sio2_keys = [p["key"] for _, _, p in iter_records(str(ROOT / "data" / "sio2_dfpt.h5"), properties=())][:720]
    al_keys = [p["key"] for _, _, p in iter_records(str(ROOT / "data" / "al2o3_dfpt.h5"), properties=())][:248]
    assert keys == sio2_keys + al_keys
    for k in joint:
        assert joint[k] == sorted(sio2[k] + [720 + i for i in v2[k]]), k
    # stages 2 and 3: the same parts for those records, the 47 and then 26 later SiO2 records split anew
    old = joint
    for cfg, n in ((ox2, len(keys) + 47), (ox3, len(keys) + 47 + 26)):
        grown = load_split(str(ROOT / cfg.split_file), n)
        n_old = sum(len(v) for v in old.values())
        assert all([i for i in grown[k] if i < n_old] == old[k] for k in old), cfg.split_file
        assert sorted(i for v in grown.values() for i in v) == list(range(n)), cfg.split_file
        old = grown
