"""Training run directories, file modes, progress lines and foreign splits (issue 17)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from ase_etgnn.cli import main
from ase_etgnn.records import append_records
from ase_etgnn.train import TrainConfig, check_split_fits, train

TINY = dict(cutoff=4.0, triplet_cutoff=3.0, hidden=8, triplet_hidden=8, n_blocks=1, int_emb=4, basis_emb=4,
            out_emb=8, n_radial=4, n_spherical=3, n_sbf_radial=3)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """8 three-atom SiO2 cells with random forces and dielectric tensors."""
    rng = np.random.default_rng(0)
    items = []
    for _ in range(8):
        a = Atoms("SiO2", cell=np.eye(3) * 3.2 + rng.normal(0, 0.05, (3, 3)), pbc=True,
                  scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.1], [0.2, 0.6, 0.55]])
        a.positions += rng.normal(0, 0.1, a.positions.shape)
        eps = np.eye(3) * 2.0 + 0.1 * rng.normal(size=(3, 3))
        items.append((a, {"forces": rng.normal(size=(3, 3)), "dielectric_tensor": 0.5 * (eps + eps.T)}, {}, None))
    path = tmp_path_factory.mktemp("small") / "small.h5"
    append_records(path, items)
    return path


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), output_dir=str(out), model=dict(TINY), dtype="float64", batch_size=4, epochs=1,
                progress=False, split=(0.5, 0.25, 0.25))
    base.update(kw)
    return TrainConfig(**base)


def _snapshot(d: Path):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_a_fresh_run_never_overwrites_a_finished_one(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(small_data, out, epochs=2))
    before = _snapshot(out)
    assert {"config.json", "split.json", "log.jsonl", "checkpoint.pt", "best.pt", "summary.json"} <= set(before)
    with pytest.raises(ValueError, match=r"(?s)run already holds a training run .*--resume.*--output-dir.*--overwrite"):
        train(_cfg(small_data, out, epochs=1, lr=1e-3))
    assert _snapshot(out) == before  # nothing truncated or rewritten
    rc = main(["train", "--set", f"data={small_data}", "--output-dir", str(out), "--epochs", "1",
               "--set", "progress=false", "--set", "dtype=float64"])
    err = capsys.readouterr().err
    assert rc == 2 and str(out) in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before
    # a run that left only a summary (or only a log) counts as a run too
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="summary.json"):
        train(_cfg(small_data, lone))
    # --overwrite moves the old run aside, intact, and the new summary describes the new run
    with pytest.raises(ValueError, match="choose one"):
        train(_cfg(small_data, out, epochs=3), resume=True, overwrite=True)
    res = train(_cfg(small_data, out, epochs=1, lr=1e-3), overwrite=True)
    moved = [p for p in out.iterdir() if p.is_dir() and p.name.startswith("replaced-")]
    assert len(moved) == 1 and _snapshot(moved[0]) == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == res.epochs_run == 1
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # epochs 0 and 1 of the new run only


def test_run_files_have_normal_modes_and_are_fsynced(small_data, tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        try:
            synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:  # pragma: no cover - no /proc
            pass
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    old = os.umask(0o022)
    try:
        train(_cfg(small_data, tmp_path / "run", epochs=2))
    finally:
        os.umask(old)
    for name in ("best.pt", "checkpoint.pt", "summary.json", "config.json", "split.json", "log.jsonl"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))
    tmp_names = " ".join(synced)
    for name in ("best.pt", "checkpoint.pt", "summary.json", "log.jsonl"):
        assert f".{name}." in tmp_names or name in synced, (name, synced)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_progress_lines_name_losses_and_units(small_data, tmp_path):
    lines = []
    train(_cfg(small_data, tmp_path / "run", epochs=1, progress=True), log=lines.append)
    epoch1 = [ln for ln in lines if ln.startswith("epoch    1/1")][0]
    assert "train loss" in epoch1 and "val loss" in epoch1
    assert " s/epoch" in epoch1 and " structures/s" in epoch1
    assert "F " in epoch1 and " eV/A" in epoch1 and "eps " in epoch1


def test_a_split_from_another_data_set_is_one_clear_line(small_data, tmp_path, capsys):
    foreign = tmp_path / "other_split.json"
    foreign.write_text(json.dumps({"train": list(range(0, 300)), "val": [300, 301], "test": [302]}))
    rc = main(["train", "--set", f"data={small_data}", "--output-dir", str(tmp_path / "run"),
               "--set", f"split_file={foreign}", "--set", "progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "other_split.json" in err[0] and "small.h5" in err[0] and "8 records" in err[0]
    assert "another data set" in err[0]
    with pytest.raises(ValueError,
                       match=r"split_file s\.json: 'val' has indices outside the dataset's 5 records \(d\.h5\)"):
        check_split_fits({"train": [0, 1], "val": [5], "test": []}, 5, "s.json", "d.h5")
    check_split_fits({"train": [0, 1], "val": [2], "test": []}, 5, "s.json", "d.h5")  # fewer records: fine
