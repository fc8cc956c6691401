"""Quantum ESPRESSO I/O (ase_etgnn.qe) and the DFPT driver (ase_etgnn.dfpt), without running QE."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write
from ase.units import Bohr, Ry

from ase_etgnn import dfpt, qe, qe_runner, structures

EX = Path(__file__).parent / "data" / "qe_sio2_example"


# ------------------------------------------------------------------------------------------ parsing
def test_parse_pw_output_matches_printed_numbers():
    pw = qe.parse_pw_output(EX / "scf.out")
    assert pw["energy"] == pytest.approx(-215.89413626 * Ry, abs=1e-9)
    f = pw["forces"]
    assert f.shape == (9, 3)
    # atom 1: -0.03080571 -0.00596073 -0.01571132 Ry/au; atom 8: -0.03800989 -0.05645241 -0.04667467
    np.testing.assert_allclose(f[0], np.array([-0.03080571, -0.00596073, -0.01571132]) * Ry / Bohr, atol=1e-12)
    np.testing.assert_allclose(f[7], np.array([-0.03800989, -0.05645241, -0.04667467]) * Ry / Bohr, atol=1e-12)
    s = pw["stress"]
    # QE prints 0.00029229 (xx), -0.00012079 (xy), 0.00035747 (zz) Ry/bohr^3, pressure-positive; ASE sign = minus
    assert s[0, 0] == pytest.approx(-0.00029229 * Ry / Bohr**3, abs=1e-12)
    assert s[0, 1] == pytest.approx(0.00012079 * Ry / Bohr**3, abs=1e-12)
    assert s[2, 2] == pytest.approx(-0.00035747 * Ry / Bohr**3, abs=1e-12)
    np.testing.assert_allclose(s, s.T)
    # kbar column: P = 51.28 kbar = -trace(stress_ASE)/3
    assert -np.trace(s) / 3 / 1e-1 * 160.21766 == pytest.approx(51.28, abs=0.01)  # eV/A^3 -> GPa -> kbar
    assert pw["qe_version"].startswith("6.7")
    assert pw["pseudo_md5"] == {name: qe.PSEUDO_MD5[name] for name in ("Si.pz-vbc.UPF", "O.pz-rrkjus.UPF")}
    assert pw["n_scf_iterations"] == 12


def test_pw_stress_sign_agrees_with_ase_reader():
    pw = qe.parse_pw_output(EX / "scf.out")
    ref = read(EX / "scf.out", format="espresso-out")
    # ASE's reader uses CODATA-2006 constants, ase.units CODATA-2014: agree to ~1e-7 relative
    np.testing.assert_allclose(pw["stress"], ref.get_stress(voigt=False), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(pw["forces"], ref.get_forces(), rtol=1e-6, atol=1e-6)


def test_parse_ph_output_matches_printed_numbers():
    ph = qe.parse_ph_output(EX / "ph.out")
    eps = ph["dielectric_tensor"]
    assert eps.shape == (3, 3)
    assert eps[0, 0] == 2.455034935 and eps[1, 1] == 2.447413585 and eps[2, 2] == 2.476619273
    assert eps[0, 1] == 0.001443869 and eps[1, 0] == 0.001444127 and eps[2, 0] == -0.007935423
    z = ph["born_effective_charges"]
    assert z.shape == (9, 3, 3)
    # atom 1 Si, row Ey: 0.04913 3.70454 -0.30006 -> Z[0, 1, :]
    np.testing.assert_array_equal(z[0, 1], [0.04913, 3.70454, -0.30006])
    # atom 1 Si, row Ex col z = 0.02270; row Ez col y = 0.22047 (Z[a, i=field, j=displacement])
    assert z[0, 0, 2] == 0.02270 and z[0, 2, 1] == 0.22047
    # atom 9 O, row Ez: -0.50331 0.66945 -1.78186
    np.testing.assert_array_equal(z[8, 2], [-0.50331, 0.66945, -1.78186])
    assert ph["symbols"] == ["Si"] * 3 + ["O"] * 6
    # as printed: no acoustic sum rule imposed; protocol sanity range for quartz
    asr = np.abs(z.sum(axis=0)).max()
    assert 0.05 <= asr <= 0.12
    assert np.all((2.2 < np.diag(eps)) & (np.diag(eps) < 2.65))


def test_read_qe_outputs_registry_targets():
    atoms, t = qe.read_qe_outputs(EX / "scf.out", EX / "ph.out", pw_in=EX / "scf.in")
    assert set(t) == {"energy", "forces", "stress", "born_effective_charges", "dielectric_tensor"}
    assert t["energy"].shape == () and t["forces"].shape == (9, 3) and t["stress"].shape == (3, 3)
    ref = read(EX / "scf.in", format="espresso-in")
    np.testing.assert_allclose(atoms.get_positions(), ref.get_positions(), atol=1e-12)
    # the structure parsed from the output alone agrees to the printed precision
    atoms_out, t2 = qe.read_qe_outputs(EX / "scf.out")
    assert set(t2) == {"energy", "forces", "stress"}
    np.testing.assert_allclose(atoms_out.get_positions(), ref.get_positions(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(atoms_out.cell), np.asarray(ref.cell), atol=1e-5)
    assert all(atoms_out.pbc)


# ------------------------------------------------------------------------------------------- inputs
def test_pw_input_round_trip_reproduces_example(tmp_path):
    atoms = read(EX / "scf.in", format="espresso-in")
    assert qe.kpoint_grid(atoms) == (2, 2, 2)
    path = qe.write_pw_input(atoms, tmp_path / "scf.in", prefix="q", outdir="./tmp")
    assert path.read_text() == (EX / "scf.in").read_text()  # every setting and number, byte for byte
    again = read(path, format="espresso-in")
    np.testing.assert_allclose(again.get_positions(), atoms.get_positions(), atol=1e-10)
    np.testing.assert_allclose(np.asarray(again.cell), np.asarray(atoms.cell), atol=1e-10)
    text = path.read_text()
    for setting in ("ecutwfc=40", "ecutrho=320", "conv_thr=1e-9", "tprnfor=.true.", "tstress=.true.",
                    "ibrav=0", "CELL_PARAMETERS angstrom", "ATOMIC_POSITIONS angstrom",
                    "Si 28.086 Si.pz-vbc.UPF", "O 15.999 O.pz-rrkjus.UPF", "pseudo_dir='/usr/share/espresso/pseudo'"):
        assert setting in text


def test_ph_input_matches_example(tmp_path):
    p = qe.write_ph_input(tmp_path / "ph.in", prefix="q", outdir="./tmp", fildyn="q.dyn")
    assert p.read_text() == (EX / "ph.in").read_text()


def test_kpoint_grid_rule():
    q = structures.alpha_quartz()
    c = structures.alpha_cristobalite()
    assert qe.kpoint_grid(q) == (2, 2, 2) and qe.kpoint_grid(c) == (2, 2, 2)
    big = q.repeat((3, 1, 1))
    assert qe.kpoint_grid(big) == (1, 2, 2)
    with pytest.raises(ValueError, match="spacing"):
        qe.kpoint_grid(q, 0.0)


# ------------------------------------------------------------------------------------------- errors
def _cut(src: Path, marker: str, tmp_path: Path, name: str) -> Path:
    text = src.read_text()
    out = tmp_path / name
    out.write_text(text[: text.index(marker)])
    return out


@pytest.mark.parametrize("marker,what", [
    ("!    total energy", "total energy"),
    ("Forces acting on atoms", "forces"),
    ("Computing stress", "stress"),
    ("Writing output data file", "JOB DONE"),
])
def test_truncated_pw_output_names_missing_part(tmp_path, marker, what):
    path = _cut(EX / "scf.out", marker, tmp_path, "scf.out")
    with pytest.raises(ValueError, match=what) as err:
        qe.parse_pw_output(path)
    assert str(path) in str(err.value)


def test_nonconverged_scf_is_rejected(tmp_path):
    text = (EX / "scf.out").read_text().replace(
        "     convergence has been achieved in  12 iterations", "     convergence NOT achieved after 100 iterations: stopping")
    (tmp_path / "scf.out").write_text(text)
    with pytest.raises(ValueError, match="convergence NOT achieved"):
        qe.parse_pw_output(tmp_path / "scf.out")


@pytest.mark.parametrize("marker,what", [
    ("Dielectric constant in cartesian axis", "Dielectric constant"),
    ("           atom      6   O", "effective charges"),
    ("     PHONON       :   4m29.83s", "JOB DONE"),
])
def test_truncated_ph_output_names_missing_part(tmp_path, marker, what):
    path = _cut(EX / "ph.out", marker, tmp_path, "ph.out")
    with pytest.raises(ValueError, match=what) as err:
        qe.parse_ph_output(path)
    assert str(path) in str(err.value)


def test_wrong_or_missing_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        qe.parse_pw_output(tmp_path / "nope.out")
    with pytest.raises(ValueError, match="not a pw.x output"):
        qe.parse_pw_output(EX / "ph.out")
    with pytest.raises(ValueError, match="not a ph.x output"):
        qe.parse_ph_output(EX / "scf.out")
    # text input works too
    assert qe.parse_ph_output((EX / "ph.out").read_text())["born_effective_charges"].shape == (9, 3, 3)


# ------------------------------------------------------------------------------------ generation
def _write_seed(tmp_path: Path) -> str:
    p = tmp_path / "quartz.extxyz"
    write(str(p), structures.alpha_quartz())
    return str(p)


def test_seed_structures():
    q, c = structures.alpha_quartz(), structures.alpha_cristobalite()
    assert q.get_chemical_formula() == "O6Si3" and c.get_chemical_formula() == "O8Si4"
    for atoms in (q, c):
        d = atoms.get_all_distances(mic=True)
        si = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "Si"]
        for i in si:  # four O neighbours at 1.60-1.62 A
            nn = np.sort(d[i])[1:5]
            assert np.all((nn > 1.59) & (nn < 1.62))


def test_generation_deterministic_and_in_range(tmp_path):
    seed = _write_seed(tmp_path)
    cfg = dfpt.GenerationConfig(seeds=(seed,), n_structures=12, rms_range=(0.02, 0.12), strain_max=0.02, seed=7,
                                tag="q")
    a = dfpt.generate_structures(cfg)
    b = dfpt.generate_structures(cfg)
    # a different start index regenerates the same structure for the same index
    c = dfpt.generate_structures(dataclass_replace(cfg, start_index=5, n_structures=2))
    assert [k for k, *_ in a] == [f"q-7-{i}" for i in range(12)]
    ((_, ref),) = dfpt._read_seeds(seed)
    for (k1, i1, at1, inf1), (k2, i2, at2, inf2) in zip(a, b):
        assert k1 == k2 and i1 == i2
        np.testing.assert_array_equal(at1.get_positions(), at2.get_positions())
        eps = inf1["strain"]
        np.testing.assert_array_equal(eps, eps.T)
        assert np.abs(eps).max() <= 0.02
        assert 0.02 <= inf1["rms"] <= 0.12
        # undo strain, then the displacement rms equals the drawn rms
        np.testing.assert_allclose(np.asarray(at1.cell), np.asarray(ref.cell) @ (np.eye(3) + eps), atol=1e-12)
        u = at1.get_positions() - ref.get_positions() @ (np.eye(3) + eps)
        assert np.sqrt(np.mean(np.sum(u**2, axis=1))) == pytest.approx(inf1["rms"], rel=1e-10)
        np.testing.assert_allclose(u.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_array_equal(c[0][2].get_positions(), a[5][2].get_positions())
    assert len({round(x[3]["rms"], 8) for x in a}) == 12  # structures differ


def dataclass_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_config_validation():
    with pytest.raises(ValueError, match="rms_range"):
        dfpt.GenerationConfig(seeds=("x",), n_structures=1, rms_range=(0.2, 0.1))
    with pytest.raises(ValueError, match="seed"):
        dfpt.GenerationConfig(seeds=(), n_structures=1)
    cfg = dfpt.GenerationConfig(seeds=["x"], n_structures=1)
    with pytest.raises(Exception):
        cfg.seed = 3  # frozen


class FakeQE:
    """Replaces pw.x/ph.x: copies the example outputs; can fail on chosen keys."""

    def __init__(self, fail_keys=(), fail_program="pw.x"):
        self.calls = []
        self.fail_keys = set(fail_keys)
        self.fail_program = fail_program

    def __call__(self, program, input_file, output_file, cwd):
        self.calls.append((program, Path(cwd).name))
        assert (Path(cwd) / ".lock").exists()
        if Path(cwd).name in self.fail_keys and program == self.fail_program:
            Path(output_file).write_text("     Program PWSCF v.6.7MaX starts\n     convergence NOT achieved\n")
            return 0
        shutil.copy(EX / ("scf.out" if program == "pw.x" else "ph.out"), output_file)
        (Path(cwd) / "tmp").mkdir(exist_ok=True)
        return 0


def _example_cfg(tmp_path, **kw):
    seed = tmp_path / "example.extxyz"
    if not seed.exists():
        write(str(seed), read(EX / "scf.in", format="espresso-in"))
    base = dict(seeds=(str(seed),), n_structures=3, rms_range=(0.0, 0.0), strain_max=0.0, seed=1, tag="ex",
                workdir=str(tmp_path / "work"), output=str(tmp_path / "d.h5"))
    base.update(kw)
    return dfpt.GenerationConfig(**base)


def test_resume_skips_done_and_keeps_failed_logs(tmp_path):
    from ase_etgnn import records
    cfg = _example_cfg(tmp_path)
    fake = FakeQE(fail_keys={"ex-1-1"})
    s = dfpt.run_generation(cfg, runner=fake, log=lambda m: None, check_pseudos=False)
    assert s.done == ["ex-1-0", "ex-1-2"] and list(s.failed) == ["ex-1-1"]
    assert "convergence NOT achieved" in s.failed["ex-1-1"]
    assert records.record_keys(cfg.output) == {"ex-1-0", "ex-1-2"}
    failed_dirs = list((Path(cfg.workdir) / "failed").iterdir())
    assert len(failed_dirs) == 1 and (failed_dirs[0] / "scf.out").exists() and (failed_dirs[0] / "FAILED.txt").exists()
    assert not (failed_dirs[0] / ".lock").exists()
    assert not (Path(cfg.workdir) / "ex-1-0" / "tmp").exists()  # scratch removed
    assert not (Path(cfg.workdir) / "ex-1-0" / ".lock").exists()
    atoms, t, prov = records.read_record(cfg.output, 0)
    assert prov["key"] == "ex-1-0" and prov["protocol"] == qe.PROTOCOL_NAME and prov["kpoints"] == [2, 2, 2]
    assert prov["ecutwfc_Ry"] == 40 and prov["ecutrho_Ry"] == 320 and "hostname" in prov
    np.testing.assert_array_equal(t["born_effective_charges"], qe.parse_ph_output(EX / "ph.out")["born_effective_charges"])

    # rerun: nothing recomputed, failed key not retried; with retry_failed it is
    fake2 = FakeQE()
    s2 = dfpt.run_generation(cfg, runner=fake2, log=lambda m: None, check_pseudos=False)
    assert fake2.calls == [] and sorted(s2.skipped_existing) == ["ex-1-0", "ex-1-2"]
    assert s2.skipped_failed_before == ["ex-1-1"]
    s3 = dfpt.run_generation(dataclass_replace(cfg, retry_failed=True), runner=fake2, log=lambda m: None,
                             check_pseudos=False)
    assert s3.done == ["ex-1-1"] and fake2.calls == [("pw.x", "ex-1-1"), ("ph.x", "ex-1-1")]
    assert records.record_keys(cfg.output) == {"ex-1-0", "ex-1-1", "ex-1-2"}
    assert records.count_records(cfg.output) == 3  # never duplicated


def test_lock_held_by_live_job_is_respected(tmp_path):
    cfg = _example_cfg(tmp_path, n_structures=2, run_ph=False)
    lockdir = Path(cfg.workdir) / "ex-1-0"
    lockdir.mkdir(parents=True)
    import socket

    (lockdir / ".lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")  # alive: this process
    s = dfpt.run_generation(cfg, runner=FakeQE(), log=lambda m: None, check_pseudos=False)
    assert s.skipped_locked == ["ex-1-0"] and s.done == ["ex-1-1"]
    # a stale lock (dead pid) is taken over
    (lockdir / ".lock").write_text(f"{socket.gethostname()} 999999999\n")
    s = dfpt.run_generation(cfg, runner=FakeQE(), log=lambda m: None, check_pseudos=False)
    assert s.done == ["ex-1-0"]


def test_hdf5_failure_keeps_records_in_jsonl_queue(tmp_path, monkeypatch):
    from ase_etgnn import records
    cfg = _example_cfg(tmp_path, n_structures=1, run_ph=False)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(records, "append_records", broken)
    s = dfpt.run_generation(cfg, runner=FakeQE(), log=lambda m: None, check_pseudos=False)
    assert s.done == ["ex-1-0"] and not Path(cfg.output).exists()
    monkeypatch.undo()
    fake = FakeQE()
    dfpt.run_generation(cfg, runner=fake, log=lambda m: None, check_pseudos=False)  # flushes the queue
    assert fake.calls == [] and records.record_keys(cfg.output) == {"ex-1-0"}



def test_jobs_for_different_data_sets_share_a_workdir(tmp_path):
    """A job writing b.h5 in the workdir of a job that wrote a.h5 copies none of a.h5's queued records (it did
    once: the ideal corundum file received 71 SiO2 records) and does not take a.h5's keys as done; lines of
    an older version without ``output`` are left alone, with one note."""
    from ase_etgnn import records

    cfg_a = _example_cfg(tmp_path, n_structures=2, run_ph=False)
    dfpt.run_generation(cfg_a, runner=FakeQE(), log=lambda m: None, check_pseudos=False)
    jsonl = Path(cfg_a.workdir) / "records.jsonl"
    legacy = json.loads(jsonl.read_text().splitlines()[0])
    legacy.pop("output", None)
    legacy["key"] = "old-1-0"
    with open(jsonl, "a") as fh:
        fh.write(json.dumps(legacy) + "\n")
    cfg_b = dataclasses.replace(cfg_a, output=str(tmp_path / "b.h5"))
    fake, messages = FakeQE(), []
    dfpt.run_generation(cfg_b, runner=fake, log=messages.append, check_pseudos=False)
    assert records.record_keys(cfg_b.output) == {"ex-1-0", "ex-1-1"}  # computed for b.h5, not copied
    assert [c[0] for c in fake.calls] == ["pw.x", "pw.x"]
    assert records.record_keys(cfg_a.output) == {"ex-1-0", "ex-1-1"}
    notes = [m for m in messages if "name no data set" in m]
    assert len(notes) == 1 and notes[0].startswith("[dfpt] note: 1 lines of")


def test_write_structures_is_the_pool_a_job_would_compute(tmp_path, capsys):
    """`dfpt generate --write-structures FILE` writes exactly the structures (and keys) of the job, runs no QE,
    and refuses to overwrite a file."""
    cfg = _example_cfg(tmp_path, n_structures=4, rms_range=(0.02, 0.12), strain_max=0.02, start_index=7)
    out = tmp_path / "pool.extxyz"
    argv = ["generate", "--seeds", *cfg.seeds, "--n-structures", "4", "--start-index", "7", "--seed", "1",
            "--tag", "ex", "--workdir", cfg.workdir, "--output", cfg.output, "--write-structures", str(out)]
    assert dfpt.main(argv) == 0
    frames = read(out, ":")
    expected = dfpt.generate_structures(cfg)
    assert [f.info["key"] for f in frames] == [k for k, *_ in expected] == [f"ex-1-{i}" for i in range(7, 11)]
    for f, (_, index, atoms, info) in zip(frames, expected):
        np.testing.assert_allclose(f.positions, atoms.positions, atol=1e-8)
        np.testing.assert_allclose(f.cell[:], atoms.cell[:], atol=1e-8)
        assert f.info["index"] == index and abs(f.info["rms"] - info["rms"]) < 1e-8
    assert not Path(cfg.output).exists() and not Path(cfg.workdir).exists()  # no QE job ran
    assert dfpt.main(argv) == 2 and "exists" in capsys.readouterr().err

def test_cli_registration(tmp_path):
    parser = argparse.ArgumentParser(prog="etgnn")
    sub = parser.add_subparsers(dest="command")
    dfpt.register_cli(sub)
    args = parser.parse_args(["dfpt", "generate", "--seeds", "a.extxyz", "--n-structures", "3", "--no-ph",
                              "--rms", "0.02", "0.2", "--tag", "x"])
    assert callable(args.func) and args.run_ph is False and tuple(args.rms) == (0.02, 0.2)
    args = parser.parse_args(["dfpt", "seeds", "--directory", str(tmp_path)])
    assert args.func(args) == 0
    assert read(tmp_path / "alpha_quartz.extxyz").get_chemical_formula() == "O6Si3"
    assert dfpt.main(["generate", "--seeds", str(tmp_path / "missing.cif"), "--n-structures", "1",
                      "--workdir", str(tmp_path / "w"), "--output", str(tmp_path / "d.h5")]) == 2


def test_failures_in_a_row_abort_the_job(tmp_path):
    cfg = _example_cfg(tmp_path, n_structures=6, max_consecutive_failures=2)
    fake = FakeQE(fail_keys={f"ex-1-{i}" for i in range(6)})
    s = dfpt.run_generation(cfg, runner=fake, log=lambda m: None, check_pseudos=False)
    assert list(s.failed) == ["ex-1-0", "ex-1-1"] and s.aborted and "consecutive" in s.text()


def test_qe_runner_uses_paths_relative_to_the_caller(tmp_path, monkeypatch):
    """The real runner (no mpirun) with a fake pw.x on PATH, called with relative paths from another cwd."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for prog, out in (("pw.x", "scf.out"), ("ph.x", "ph.out")):
        script = bindir / prog
        script.write_text(f"#!/bin/sh\n[ \"$1\" = -in ] && [ -f \"$2\" ] || exit 3\ncat '{EX / out}'\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    cfg = _example_cfg(tmp_path, n_structures=1, workdir="work", output="d.h5")
    s = dfpt.run_generation(cfg, runner=qe_runner.QERunner(nprocs=1, mpirun=()), log=lambda m: None,
                            check_pseudos=False)
    assert s.done == ["ex-1-0"], s.text()


@pytest.mark.skipif(shutil.which("ldd") is None or shutil.which("ls") is None, reason="needs ldd and ls")
def test_records_name_the_blas_and_lapack_that_pw_x_loads(tmp_path):
    """Provenance ``linear_algebra``: the real library files behind the sonames (ldd), so that records
    computed under reference BLAS and under OpenBLAS (the Debian alternatives) can be told apart."""
    runner = qe_runner.QERunner(mpirun=())
    libc = runner.linked_libraries("ls", sonames=("libc.so.6",))
    assert libc is not None and os.path.isabs(libc["libc.so.6"]) and os.path.exists(libc["libc.so.6"])
    assert runner.linked_libraries("no-such-program.x") is None

    class NamedBLAS(FakeQE):
        def linked_libraries(self, program):
            assert program == "pw.x"
            return {"libblas.so.3": "/opt/blas/libopenblas.so"}

    s = dfpt.run_generation(_example_cfg(tmp_path, n_structures=1), runner=NamedBLAS(), log=lambda m: None,
                            check_pseudos=False)
    assert s.done == ["ex-1-0"]
    from ase_etgnn.records import iter_records

    (_, _, prov), = iter_records(tmp_path / "d.h5", properties=())
    assert prov["linear_algebra"] == {"libblas.so.3": "/opt/blas/libopenblas.so"}


@pytest.mark.skipif(shutil.which("mpirun") is None or len(os.sched_getaffinity(0)) < 2,
                    reason="needs mpirun and at least two usable cores")
def test_default_mpirun_does_not_pin_single_process_jobs_to_one_core(tmp_path):
    """Open MPI binds a -np 1 run to core 0 unless told otherwise; two side-by-side jobs then share it."""
    prog = tmp_path / "show_cpus"
    prog.write_text("#!/bin/sh\ngrep Cpus_allowed_list /proc/self/status\n")
    prog.chmod(0o755)
    inp, out = tmp_path / "x.in", tmp_path / "x.out"
    inp.write_text("")
    assert qe_runner.QERunner(nprocs=1)(str(prog), inp, out, tmp_path) == 0
    allowed = out.read_text().split(":")[1].strip()
    cpus = sorted(os.sched_getaffinity(0))
    assert allowed == f"{cpus[0]}-{cpus[-1]}" or allowed == ",".join(map(str, cpus)), allowed


def test_every_frame_of_a_multi_frame_seed_file_is_a_seed(tmp_path):
    """A file of K frames (e.g. from ``etgnn select``) gives K seeds in order, each labelled once and unchanged
    with rms 0 / strain 0 (before: only the last frame was read, K times)."""
    from ase.build import bulk

    frames = [bulk("Si", "diamond", a=5.43 + 0.01 * k, cubic=True) for k in range(3)]
    path = tmp_path / "frames.extxyz"
    write(path, frames)
    cfg = dfpt.GenerationConfig(seeds=(str(path),), n_structures=3, rms_range=(0, 0), strain_max=0, seed=1, tag="al")
    out = dfpt.generate_structures(cfg)
    assert [info["seed_file"] for *_, info in out] == [f"{path}@{k}" for k in range(3)]
    for (_, _, atoms, _), ref in zip(out, read(path, index=":")):
        np.testing.assert_array_equal(atoms.get_positions(), ref.get_positions())
        np.testing.assert_array_equal(atoms.get_cell(), ref.get_cell())


def test_corundum_seed_is_the_primitive_r3c_cell():
    import spglib

    from ase_etgnn.conventions import spglib_quietly

    a = structures.corundum()
    assert a.get_chemical_formula() == "Al4O6" and all(a.pbc)
    with spglib_quietly():
        ds = spglib.get_symmetry_dataset((a.cell[:], a.get_scaled_positions(), a.numbers), symprec=1e-5)
    assert ds.number == 167
    al = np.array(a.get_chemical_symbols()) == "Al"
    d = a.get_all_distances(mic=True)[np.ix_(al, ~al)]  # [4, 6] Al-O
    nearest = np.sort(d, axis=1)[:, :6]  # each Al: 3 O at 1.855 A and 3 at 1.972 A
    np.testing.assert_allclose(nearest[:, :3], 1.855, atol=2e-3)
    np.testing.assert_allclose(nearest[:, 3:], 1.972, atol=2e-3)
    assert qe.kpoint_grid(a) == (3, 3, 3)  # the protocol's k-point rule
