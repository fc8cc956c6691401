"""The README's main job and the MD example run end to end with the shipped model (few steps)."""
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
    traj = tmp_path / "md.traj"
    with pytest.raises(SystemExit) as exit_info:
        _run("quartz_md.py", ["--ps", "0.01", "--interval", "5", "--out", str(traj)], monkeypatch)
    assert exit_info.value.code == 0
    from ase.io import read

    frames = read(traj, ":")
    assert len(frames) == 3  # steps 0, 5, 10
    z = frames[-1].calc.get_property("born_effective_charges", frames[-1])
    assert z.shape == (72, 3, 3)
    assert "Si-O bond range" in capsys.readouterr().out
