"""`etgnn dfpt generate` under faults (issue 17): interrupted jobs stop their QE processes, a hard-killed
job's QE processes are not doubled, a missing pw.x is one message, failures left make a non-zero exit.

Only fake pw.x / mpirun scripts on a temporary PATH are run here, and only their own process ids are
signalled.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ase.io import read, write

from ase_etgnn import dfpt, qe_runner

ROOT = Path(__file__).resolve().parents[1]
EX = Path(__file__).parent / "data" / "qe_sio2_example"

# mpirun stand-in: drops its options and runs the program as a child in a process group of its own (as
# Open MPI does), passing SIGTERM/SIGINT on to it
FAKE_MPIRUN = f"""#!{sys.executable}
import os, signal, subprocess, sys
args = sys.argv[1:]
child = subprocess.Popen(args[args.index("-np") + 2:], preexec_fn=os.setpgrp)


def forward(signum, frame):
    os.killpg(child.pid, signal.SIGTERM)
    child.wait()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
sys.exit(child.wait())
"""


def _bin(tmp_path: Path, pw: str) -> Path:
    b = tmp_path / "bin"
    b.mkdir(exist_ok=True)
    for name, text in (("mpirun", FAKE_MPIRUN), ("pw.x", pw)):
        (b / name).write_text(text)
        (b / name).chmod(0o755)
    return b


def _seed(tmp_path: Path) -> str:
    p = tmp_path / "example.extxyz"
    if not p.exists():
        write(str(p), read(EX / "scf.in", format="espresso-in"))
    return str(p)


def _args(tmp_path: Path, n: int = 2, *extra: str):
    return ["generate", "--seeds", _seed(tmp_path), "--n-structures", str(n), "--rms", "0", "0", "--strain-max", "0",
            "--seed", "1", "--tag", "ex", "--no-ph", "--workdir", str(tmp_path / "work"),
            "--output", str(tmp_path / "d.h5"), *extra]


def _dead(pid: int) -> bool:
    """Gone or a zombie (a container's pid 1 may never reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    t_end = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < t_end, f"{path} never appeared"
        time.sleep(0.05)


def test_help_keeps_the_line_continuations():
    assert "--tag quartz-ph \\\n        --n-structures 100" in dfpt.__doc__
    import argparse

    parser = argparse.ArgumentParser(prog="etgnn")
    dfpt.register_cli(parser.add_subparsers())
    help_text = parser._subparsers._group_actions[0].choices["dfpt"]._subparsers._group_actions[0] \
        .choices["generate"].format_help()
    assert "--tag quartz-ph \\\n        --n-structures 100" in help_text


def test_missing_pw_x_is_one_message_before_any_structure(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(dfpt, "_check_pseudos", lambda d: dict(dfpt.qe.PSEUDO_MD5))
    cfg = dfpt.GenerationConfig(seeds=(_seed(tmp_path),), n_structures=3, rms_range=(0, 0), strain_max=0, seed=1,
                                tag="ex", run_ph=False, workdir=str(tmp_path / "work"), output=str(tmp_path / "d.h5"))
    with pytest.raises(FileNotFoundError, match="pw.x not found on PATH; install Quantum ESPRESSO"):
        dfpt.run_generation(cfg, runner=qe_runner.QERunner(mpirun=()), check_pseudos=False, log=lambda m: None)
    with pytest.raises(FileNotFoundError, match="mpirun not found on PATH"):
        dfpt.run_generation(cfg, check_pseudos=False, log=lambda m: None)
    assert dfpt.main(_args(tmp_path, 3)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found on PATH" in err[0], err
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []  # no structure started, none failed


def test_rerun_with_failures_left_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dfpt, "_check_pseudos", lambda d: dict(dfpt.qe.PSEUDO_MD5))
    bad = "#!/bin/sh\necho '     Program PWSCF v.6.7MaX starts'\necho '     convergence NOT achieved'\n"
    b = _bin(tmp_path, bad)
    monkeypatch.setenv("PATH", f"{b}{os.pathsep}{os.environ['PATH']}")
    assert dfpt.main(_args(tmp_path)) == 1  # failed now
    capsys.readouterr()
    (b / "pw.x").write_text(f"#!/bin/sh\ncat '{EX / 'scf.out'}'\n")
    assert dfpt.main(_args(tmp_path)) == 1  # nothing done, failures left: not a success
    err = capsys.readouterr().err
    assert "ex-1-0, ex-1-1" in err and "--retry-failed" in err
    assert dfpt.main(_args(tmp_path, 2, "--retry-failed")) == 0
    from ase_etgnn.records import record_keys

    assert record_keys(tmp_path / "d.h5") == {"ex-1-0", "ex-1-1"}


_DRIVER = """
import sys
sys.path.insert(0, {root!r})
from ase_etgnn import dfpt
dfpt._check_pseudos = lambda d: dict(dfpt.qe.PSEUDO_MD5)
sys.exit(dfpt.main({args!r}))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupting_the_driver_stops_its_qe_processes(tmp_path, sig):
    pids = tmp_path / "pids"
    pids.mkdir()
    # pw.x stand-in: records its pid and that of a child that would outlive it, then waits
    pw = f"#!/bin/sh\necho $$ > '{pids}/pw'\nsleep 300 &\necho $! > '{pids}/child'\nwait\n"
    b = _bin(tmp_path, pw)
    env = dict(os.environ, PATH=f"{b}{os.pathsep}{os.environ['PATH']}")
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(root=str(ROOT), args=_args(tmp_path, 1)))
    drv = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        _wait_for(pids / "child")
        sdir = tmp_path / "work" / "ex-1-0"
        assert (sdir / ".lock").exists() and (sdir / qe_runner.SESSION_NAME).exists()
        drv.send_signal(sig)
        out, err = drv.communicate(timeout=60)
    finally:
        if drv.poll() is None:
            drv.kill()
            drv.wait()
        for name in ("pw", "child"):  # clean up our own fakes only
            if (pids / name).exists() and not _dead(int((pids / name).read_text())):
                os.kill(int((pids / name).read_text()), signal.SIGKILL)
    assert drv.returncode == 128 + sig, (drv.returncode, err)
    assert "interrupted" in err and "QE processes stopped" in err
    t_end = time.monotonic() + 10
    while not all(_dead(int((pids / n).read_text())) for n in ("pw", "child")) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert all(_dead(int((pids / n).read_text())) for n in ("pw", "child")), "QE processes outlived the driver"
    assert not (sdir / ".lock").exists() and not (sdir / qe_runner.SESSION_NAME).exists()


def test_qe_processes_of_a_hard_killed_job_are_not_doubled(tmp_path):
    """The driver dies by SIGKILL (no clean-up possible) while its pw.x runs: a rerun must not start a
    second pw.x in that folder while the first one lives, and takes the structure over once it is gone."""
    pids = tmp_path / "pids"
    pids.mkdir()
    pw = f"#!/bin/sh\necho $$ > '{pids}/pw'\nexec sleep 300\n"
    b = _bin(tmp_path, pw)
    env = dict(os.environ, PATH=f"{b}{os.pathsep}{os.environ['PATH']}")
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(root=str(ROOT), args=_args(tmp_path, 1)))
    drv = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    sdir = tmp_path / "work" / "ex-1-0"
    sid = None
    try:
        _wait_for(pids / "pw")
        _wait_for(sdir / qe_runner.SESSION_NAME)
        sid = int((sdir / qe_runner.SESSION_NAME).read_text().split()[1])
        drv.kill()
        drv.wait(timeout=30)
        assert not _dead(int((pids / "pw").read_text()))  # orphaned, still computing
        calls = []

        def runner(program, input_file, output_file, cwd):
            calls.append(program)
            return 1

        cfg = dfpt.GenerationConfig(seeds=(_seed(tmp_path),), n_structures=1, rms_range=(0, 0), strain_max=0,
                                    seed=1, tag="ex", run_ph=False, workdir=str(tmp_path / "work"),
                                    output=str(tmp_path / "d.h5"))
        logs = []
        s = dfpt.run_generation(cfg, runner=runner, check_pseudos=False, log=logs.append)
        assert calls == [] and s.skipped_locked == ["ex-1-0"]
        assert any(f"session {sid}" in m and "still run" in m for m in logs), logs
    finally:
        if drv.poll() is None:
            drv.kill()
            drv.wait()
        if (pids / "pw").exists() and not _dead(int((pids / "pw").read_text())):
            os.kill(int((pids / "pw").read_text()), signal.SIGKILL)  # our fake pw.x only
        if sid is not None and sid != os.getsid(0):
            for pid in qe_runner.session_pids(sid):  # our fake mpirun's session only
                with contextlib.suppress(ProcessLookupError):  # it may exit between listing and kill
                    os.kill(pid, signal.SIGKILL)
    t_end = time.monotonic() + 30  # SIGKILL is delivered asynchronously: wait until the whole session is gone
    while (not _dead(int((pids / "pw").read_text())) or (sid is not None and qe_runner.session_pids(sid))) \
            and time.monotonic() < t_end:
        time.sleep(0.05)
    (sdir / ".lock").write_text(f"{socket.gethostname()} 999999999\n")  # still the dead driver's lock
    s = dfpt.run_generation(cfg, runner=lambda *a: 1, check_pseudos=False, log=lambda m: None)
    assert s.skipped_locked == [] and list(s.failed) == ["ex-1-0"]  # taken over once the group is gone


def test_a_live_job_holding_the_lock_is_not_called_orphaned(tmp_path):
    """Two jobs side by side: the structure another live job computes is skipped as locked, and the log must
    not offer to kill that job's QE processes as if they were left over from a dead one."""
    cfg = dfpt.GenerationConfig(seeds=(_seed(tmp_path),), n_structures=1, rms_range=(0, 0), strain_max=0,
                                seed=1, tag="ex", run_ph=False, workdir=str(tmp_path / "work"),
                                output=str(tmp_path / "d.h5"))
    sdir = tmp_path / "work" / "ex-1-0"
    sdir.mkdir(parents=True)
    host = socket.gethostname()
    (sdir / ".lock").write_text(f"{host} {os.getpid()}\n")  # a live owner (this process)
    (sdir / qe_runner.SESSION_NAME).write_text(f"{host} {os.getsid(0)}\n")  # whose QE session is alive
    calls, logs = [], []
    s = dfpt.run_generation(cfg, runner=lambda *a: calls.append(a) or 1, check_pseudos=False, log=logs.append)
    assert calls == [] and s.skipped_locked == ["ex-1-0"]
    assert any("ex-1-0: locked by another job" in m for m in logs), logs
    assert not any("pkill" in m or "earlier job" in m for m in logs), logs
    assert (sdir / ".lock").read_text().split()[1] == str(os.getpid())  # the owner keeps its lock


def test_stop_group_kills_a_session_that_ignores_sigterm(tmp_path):
    """A pw.x that ignores SIGTERM, in a process group of its own (as Open MPI starts it), is killed after
    the grace time: every process of the session goes."""
    pidfile = tmp_path / "pid"
    leader = ("import os, subprocess, sys\n"
              "c = subprocess.Popen(['/bin/sh', '-c', \"trap '' TERM; exec sleep 300\"], preexec_fn=os.setpgrp)\n"
              f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
              "c.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", leader], start_new_session=True)
    try:
        _wait_for(pidfile, 30)
        child = int(pidfile.read_text())
        assert os.getpgid(child) != proc.pid and os.getsid(child) == proc.pid
        t0 = time.monotonic()
        qe_runner.stop_group(proc, grace_s=0.5)
        assert time.monotonic() - t0 < 10
        assert proc.poll() is not None and _dead(child) and qe_runner.session_pids(proc.pid) == []
    finally:
        for pid in qe_runner.session_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)


def test_signals_become_interrupts_but_nohup_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with qe_runner.interrupt_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
            with pytest.raises(qe_runner.Interrupted) as exc:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            assert exc.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
