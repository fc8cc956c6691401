"""Running Quantum ESPRESSO programs so that no QE process outlives the driver.

Every QE run (mpirun and its pw.x/ph.x) is started in its own session and every process of that session is
stopped when the driver is interrupted (Ctrl-C, SIGTERM, SIGHUP through :func:`interrupt_on_signals`) or a
run times out (Open MPI puts pw.x in a process group of its own, but it stays in the session).  The session
id is kept in ``<folder>/.qe_session`` (:data:`SESSION_NAME`, "host sid") while QE runs, so that a rerun
after a hard kill (SIGKILL) of the driver sees QE still running there (:func:`orphaned_session`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "Runner",
    "SESSION_NAME",
    "QERunner",
    "session_pids",
    "stop_group",
    "Interrupted",
    "interrupt_on_signals",
    "orphaned_session",
]

#: ``runner(program, input_file, output_file, cwd) -> return code``; program is "pw.x" or "ph.x".
Runner = Callable[[str, Path, Path, Path], int]
#: file in a structure's folder naming the session of the QE run in progress ("host sid")
SESSION_NAME = ".qe_session"


def session_pids(sid: int) -> List[int]:
    """Live (not zombie) processes of session ``sid`` (Linux ``/proc``; elsewhere ``[sid]`` while it lives).
    Zombies count as gone: a container's pid 1 may never reap orphans."""
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        try:
            os.kill(sid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [sid]
    pids = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(d.name))
    return pids


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the QE run ``proc`` (a session leader): SIGTERM to its process group (mpirun passes it on to
    pw.x), after ``grace_s`` SIGKILL to every process left in its session.  Interrupted again meanwhile
    (a second Ctrl-C), it kills at once and re-raises."""
    try:
        _stop_session(proc, grace_s)
    except KeyboardInterrupt:
        _stop_session(proc, 0.0)
        raise


def _stop_session(proc: subprocess.Popen, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    for wait_s, last in ((grace_s, False), (5.0, True)):
        t_end = time.monotonic() + wait_s
        while time.monotonic() < t_end:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
            if proc.poll() is not None and not session_pids(proc.pid):
                return
        if not last:
            for pid in session_pids(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class QERunner:
    """Runs a QE program as ``mpirun --allow-run-as-root --bind-to none -np N prog -in input > output``.

    ``--bind-to none``: Open MPI binds small runs to cores counted from core 0, so two single-process jobs
    started side by side would share core 0 and leave the other cores idle (measured here: each got 50-75 %
    of one core until this flag was added).
    """

    nprocs: int = 1
    timeout_s: float = 6 * 3600.0
    mpirun: Tuple[str, ...] = ("mpirun", "--allow-run-as-root", "--bind-to", "none")

    def check(self, programs: Sequence[str]) -> None:
        """``FileNotFoundError`` with an install hint unless mpirun (when used) and ``programs`` are on PATH."""
        if self.mpirun and shutil.which(self.mpirun[0]) is None:
            raise FileNotFoundError(f"{self.mpirun[0]} not found on PATH; install Open MPI (e.g. apt-get install "
                                    "openmpi-bin) or add its bin directory to PATH")
        for prog in programs:
            if shutil.which(prog) is None:
                raise FileNotFoundError(f"{prog} not found on PATH; install Quantum ESPRESSO (e.g. apt-get install "
                                        "quantum-espresso) or add the folder holding pw.x and ph.x to PATH")

    def linked_libraries(self, program: str,
                         sonames: Sequence[str] = ("libblas.so.3", "liblapack.so.3")) -> Optional[Dict[str, str]]:
        """Real paths of the shared libraries ``sonames`` that ``program`` loads (``ldd``), for provenance: on
        Debian the BLAS/LAPACK alternatives pick reference BLAS or OpenBLAS under the same QE binary (same
        printed numbers, measured 2.3x apart in speed). None when ldd cannot tell."""
        exe = shutil.which(program)
        if exe is None:
            return None
        try:
            out = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        found = {}
        for line in out.splitlines():
            name, sep, rest = line.strip().partition(" => ")
            if sep and name in sonames and rest.startswith("/"):
                found[name] = os.path.realpath(rest.split(" (")[0])
        return found or None

    def __call__(self, program: str, input_file: Path, output_file: Path, cwd: Path) -> int:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        cwd = Path(cwd).resolve()
        launcher = [*self.mpirun, "-np", str(self.nprocs)] if self.mpirun else []
        cmd = [*launcher, program, "-in", str(Path(input_file).resolve())]
        sid_file = cwd / SESSION_NAME
        with open(Path(output_file).resolve(), "w") as out:
            # own session: a signal to the driver's terminal group does not reach QE directly; the
            # driver stops the whole group itself (below), whatever made it leave
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            try:
                sid_file.write_text(f"{socket.gethostname()} {proc.pid}\n")  # session id = its leader's pid
                try:
                    return proc.wait(timeout=self.timeout_s)
                except subprocess.TimeoutExpired:
                    stop_group(proc)
                    out.write(f"\n*** ase_etgnn.dfpt: {program} killed after {self.timeout_s} s\n")
                    return 124
            except BaseException:  # KeyboardInterrupt, a SIGTERM turned into an exception, ...
                stop_group(proc)
                raise
            finally:
                if proc.poll() is not None:
                    with contextlib.suppress(OSError):
                        sid_file.unlink()


class Interrupted(KeyboardInterrupt):
    """The driver received SIGTERM or SIGHUP (raised by :func:`interrupt_on_signals`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def interrupt_on_signals(signums: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Turn ``signums`` into :class:`Interrupted` exceptions (like Ctrl-C), so that QE processes are
    stopped and locks released on the way out; ignored signals (``nohup``) stay ignored; previous handlers
    are restored afterwards."""
    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted(signum)

    previous = {}
    for sig in signums:
        if signal.getsignal(sig) is signal.SIG_IGN:  # e.g. SIGHUP under nohup: stays ignored
            continue
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def orphaned_session(sdir: Path) -> Optional[int]:
    """Session id of a QE run still alive in ``sdir`` (from ``sdir/.qe_session``) on this host, else None."""
    try:
        host, sid = (sdir / SESSION_NAME).read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return int(sid) if host == socket.gethostname() and session_pids(int(sid)) else None
