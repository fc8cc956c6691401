"""The README's main job and the examples run end to end with the shipped model (few steps, small cells)."""
import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, args: list, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script] + args)
    runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")


def test_main_job_quartz_calculator(monkeypatch, capsys):
    _run("quartz_calculator.py", ["--steps", "5"], monkeypatch)
    out = capsys.readouterr().out
    assert "eps_inf" in out and "Langevin MD, 72 atoms, 5 steps" in out


def test_quartz_md_records_and_checks_bonds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in the current directory
    traj = tmp_path / "out" / "md.traj"
    with pytest.raises(SystemExit) as exit_info:
        _run("quartz_md.py", ["--ps", "0.01", "--interval", "5", "--out", str(traj)], monkeypatch)
    assert exit_info.value.code == 0
    from ase.io import read

    frames = read(traj, ":")
    assert len(frames) == 3  # steps 0, 5, 10
    z = frames[-1].calc.get_property("born_effective_charges", frames[-1])
    assert z.shape == (72, 3, 3)
    assert "Si-O bond range" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # the trajectory is never overwritten silently
    with pytest.raises(SystemExit) as exit_info:
        _run("quartz_md.py", ["--ps", "0.001", "--out", str(traj)], monkeypatch)
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_quartz_md_nve_modes_default_to_the_md_model(tmp_path, monkeypatch, capsys):
    """NVE modes take models/sio2_md.pt (trained for -dE/dr) unless --model says otherwise; Langevin sio2.pt."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        _run("quartz_md.py", ["--dynamics", "mts", "--ps", "0.004", "--interval", "4", "--out", "m.traj"], monkeypatch)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "mts, direct forces of sio2_md.pt" in out and "NVE total energy drift" in out


def test_example_output_dir_policy(tmp_path, monkeypatch, capsys):
    """Default runs/examples/<name> in the current directory, numbered when taken; a named directory holding
    the example's files is refused (exit 2) unless --overwrite."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from _output import output_dir
    finally:
        sys.path.remove(str(ROOT / "examples"))
    monkeypatch.chdir(tmp_path)
    first = output_dir(None, "demo", ["a.json"])
    assert first == Path("runs/examples/demo") and first.is_dir()
    assert output_dir(None, "demo", ["a.json"]) == first  # empty: reused
    (first / "a.json").write_text("user data")
    second = output_dir(None, "demo", ["a.json"])
    assert second == Path("runs/examples/demo-2")
    with pytest.raises(SystemExit) as exit_info:
        output_dir(str(first), "demo", ["a.json", "b.png"])
    assert exit_info.value.code == 2 and str(first / "a.json") in capsys.readouterr().err
    assert output_dir(str(first), "demo", ["a.json"], overwrite=True) == first
    assert (first / "a.json").read_text() == "user data"  # choosing the directory writes nothing


def test_quartz_ir_raman_pairs_lo_with_to_by_irrep(tmp_path, monkeypatch, capsys):
    """The IR/Raman table of alpha-quartz with the shipped model: every printed LO belongs to a TO of the same
    irrep (A2 along z, E along x), A1 modes have none, and A2 1057 no longer shows the A1 1075 as its LO.
    (1x1x1 supercell: exact at Gamma for this model, and fast.)"""
    out = tmp_path / "qir"
    _run("quartz_ir_raman.py", ["--supercell", "1", "1", "1", "--output-dir", str(out)], monkeypatch)
    printed = capsys.readouterr().out
    header = next(i for i, line in enumerate(printed.splitlines()) if line.split()[:3] == ["irrep", "deg", "TO"])
    rows = [line.split() for line in printed.splitlines()[header + 1:header + 17]]
    assert [r[0] for r in rows].count("A1") == 4 and [r[0] for r in rows].count("A2") == 4
    for irrep, deg, to, lo_z, lo_x, *_ in rows:
        assert (lo_z != "-", lo_x != "-") == {"A1": (False, False), "A2": (True, False), "E": (False, True)}[irrep]
        assert int(deg) == (2 if irrep == "E" else 1)
    summary = json.loads((out / "quartz_summary.json").read_text())
    for g in summary["mode_groups"]:
        for d in ("q||z", "q||x"):
            assert g[f"lo_{d}_irrep"] in (None, g["irrep"])
    a2_top = max((g for g in summary["mode_groups"] if g["irrep"] == "A2"), key=lambda g: g["to_cm1"])
    a1_top = max((g for g in summary["mode_groups"] if g["irrep"] == "A1"), key=lambda g: g["to_cm1"])
    assert abs(a2_top["lo_q||z_cm1"] - a1_top["to_cm1"]) > 50.0  # the old sorted list paired these
    assert sorted(p.name for p in out.iterdir()) == ["quartz_dispersion.png", "quartz_ir_raman.png",
                                                    "quartz_modes.json", "quartz_summary.json"]
