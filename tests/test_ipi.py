"""i-PI clients on localhost: forces and tensors per bead, two clients, a client killed and restarted.

i-PI (``pip install ipi``, in the ``test`` extra) runs as a subprocess ``i-pi input.xml`` in a temporary
directory with a unique unix socket; clients run as threads of this process (fast start) or, where a
client must be killed, as ``etgnn ipi-client`` subprocesses.  Every process and thread is stopped in
teardown, every wait is bounded.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "data" / "seeds" / "alpha_quartz.extxyz"
MODEL = str(ROOT / "models" / "sio2.pt")  # the shipped model of this checkout
EXTRAS = ("born_effective_charges", "dielectric_tensor")


def _ipi_command() -> list:
    exe = Path(sys.executable).with_name("i-pi")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("i-pi")
    if found is None:
        pytest.fail("the ipi package is installed but its 'i-pi' command is not on PATH")
    return [found]


INPUT = """<simulation verbosity='low'>
  <output prefix='sim'>
    <trajectory filename='pos' stride='1' format='ase'> positions{{ase}} </trajectory>
    <trajectory filename='for' stride='1' format='ase'> forces{{ase}} </trajectory>
    <trajectory filename='bec' stride='1' extra_type='born_effective_charges'> extras </trajectory>
    <trajectory filename='eps' stride='1' extra_type='dielectric_tensor'> extras </trajectory>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> 12345 </seed></prng>
  <ffsocket name='etgnn' mode='unix' pbc='true' matching='{matching}'>
    <address> {address} </address> <latency> 1e-4 </latency> <timeout> 30 </timeout>
  </ffsocket>
  <system>
    <initialize nbeads='{beads}'>
      <file mode='ase' units='angstrom'> {structure} </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces> <force forcefield='etgnn'/> </forces>
    <ensemble> <temperature units='kelvin'> 300 </temperature> </ensemble>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 1.0 </timestep>
        <thermostat mode='pile_g'> <tau units='femtosecond'> 100 </tau> <pile_lambda> 0.5 </pile_lambda> </thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""


def _wait(cond, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: process {p.args[:3]} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _n_frames(path: Path) -> int:
    if not path.is_file():
        return 0
    return len(re.findall(r"#EXTRAS\(", path.read_text()))


class IPIRun:
    """An i-PI server in ``workdir`` and the clients attached to it (all stopped by :meth:`stop`)."""

    def __init__(self, workdir: Path, *, beads: int, steps: int, matching: str = "auto") -> None:
        pytest.importorskip("ipi")
        self.dir = workdir
        self.address = f"etgnn-test-{uuid.uuid4().hex[:12]}"
        self.socket = Path(f"/tmp/ipi_{self.address}")
        shutil.copy(SEED, workdir / "init.extxyz")
        (workdir / "input.xml").write_text(INPUT.format(steps=steps, address=self.address, beads=beads,
                                                       structure="init.extxyz", matching=matching))
        self.log = open(workdir / "ipi.log", "w")
        self.server = subprocess.Popen(_ipi_command() + ["input.xml"], cwd=workdir, stdout=self.log,
                                       stderr=subprocess.STDOUT)
        self.procs: list = []
        self.threads: list = []
        self.clients: list = []
        _wait(self.socket.exists, 60, "i-PI to open its socket", [self.server])

    def thread_client(self, dtype: str = "float32", **kw):
        """An ETGNNSocketClient served from a thread of this process (returned once connected)."""
        import torch

        from ase.io import read

        from ase_etgnn import ETGNNCalculator
        from ase_etgnn.ipi import ETGNNSocketClient

        atoms = read(SEED)
        atoms.calc = ETGNNCalculator(MODEL, device="cpu", dtype=dtype, symmetrize=False)
        client = ETGNNSocketClient(atoms, unixsocket=self.address, **kw)
        t = threading.Thread(target=client.run, daemon=True)
        t.start()
        self.threads.append(t)
        self.clients.append(client)
        assert torch.get_num_threads() >= 1
        return client

    def process_client(self, name: str, *extra: str) -> subprocess.Popen:
        """``etgnn ipi-client`` as a subprocess, output in ``workdir/name.log``."""
        log = open(self.dir / f"{name}.log", "w")
        cmd = [sys.executable, "-m", "ase_etgnn.cli", "ipi-client", "--model", MODEL, "--structure",
               str(SEED), "--unix", self.address, "--threads", "1", "--connect-timeout", "30", *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        p.logfile = log
        self.procs.append(p)
        return p

    def frames(self, bead: int = 0) -> int:
        return _n_frames(self.dir / f"sim.bec_{bead}")

    def wait_server(self, timeout: float) -> int:
        try:
            return self.server.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"i-PI did not finish within {timeout:g} s; log:\n"
                                 + (self.dir / "ipi.log").read_text()[-2000:]) from None

    def stop(self) -> None:
        for p in [self.server] + self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [self.server] + self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            if getattr(p, "logfile", None) is not None:
                p.logfile.close()
        for t in self.threads:  # the server's sockets are closed: the client loops end
            t.join(timeout=10)
        self.log.close()
        if self.socket.exists():
            self.socket.unlink()


@pytest.fixture
def ipi_run(tmp_path):
    runs = []

    def start(**kw) -> IPIRun:
        run = IPIRun(tmp_path, **kw)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()
    assert all(not t.is_alive() for run in runs for t in run.threads), "a client thread outlived its server"


# ---------------------------------------------------------------------------------------------------
def test_two_clients_forces_and_tensors_per_bead_equal_direct_calls(ipi_run):
    """2 beads, 2 clients, 3 steps: every bead's forces (i-PI output, after i-PI's unit conversions)
    and its BEC / eps_inf extras equal a direct ETGNNCalculator call on the bead's positions."""
    from ase.io import read

    from ase_etgnn import ETGNNCalculator
    from ase_etgnn.ipi import read_ipi_extras

    steps, beads = 3, 2
    run = ipi_run(beads=beads, steps=steps)
    # float64: i-PI prints positions with 8 decimals; in float32 that rounding can flip the last bit
    # of a coordinate (~5e-7 A), i.e. ~1e-5 eV/A of force noise
    clients = [run.thread_client(dtype="float64", extras=EXTRAS), run.thread_client(dtype="float64", extras=EXTRAS)]
    assert run.wait_server(120) == 0
    for t in run.threads:
        t.join(timeout=10)
    served = [sum(c.requests_per_bead.values()) for c in clients]
    assert sum(served) == beads * (steps + 1), served  # the initial forces plus one per step and bead
    assert min(served) >= 1, f"one client did no work: {served}"
    seen_beads = set().union(*[c.requests_per_bead for c in clients])
    assert seen_beads == set(range(beads)), seen_beads  # bead indices from i-PI's INIT messages

    calc = ETGNNCalculator(MODEL, device="cpu", dtype="float64", symmetrize=False)
    worst_f = worst_z = worst_e = 0.0
    for b in range(beads):
        pos = read(run.dir / f"sim.pos_{b}.extxyz", ":")
        frc = read(run.dir / f"sim.for_{b}.extxyz", ":")
        _, zsteps, born = read_ipi_extras(run.dir / f"sim.bec_{b}")
        _, esteps, eps = read_ipi_extras(run.dir / f"sim.eps_{b}")
        assert len(pos) == len(frc) == len(born) == len(eps) == steps + 1
        assert list(zsteps) == list(esteps) == list(range(steps + 1))
        for k, atoms in enumerate(pos):
            atoms.calc = calc
            f_direct = atoms.get_forces()
            assert np.abs(f_direct).max() > 1e-2  # moving atoms feel forces: the comparison is not 0 = 0
            worst_f = max(worst_f, np.abs(frc[k].get_forces() - f_direct).max())
            worst_z = max(worst_z, np.abs(born[k] - calc.get_property("born_effective_charges", atoms)).max())
            worst_e = max(worst_e, np.abs(eps[k] - calc.get_property("dielectric_tensor", atoms)).max())
    # positions and forces pass through i-PI in atomic units and are printed with 8 decimals
    assert worst_f < 1e-5, f"forces differ by {worst_f:.2e} eV/A"
    assert worst_z < 1e-5, f"BEC differ by {worst_z:.2e} e"
    assert worst_e < 1e-5, f"eps_inf differ by {worst_e:.2e}"


def test_extras_every_k_sends_tensors_on_every_kth_request_of_a_bead(ipi_run):
    from ase_etgnn.ipi import read_ipi_extras

    run = ipi_run(beads=2, steps=4)
    client = run.thread_client(extras=EXTRAS, extras_every=2)
    assert run.wait_server(120) == 0
    run.threads[0].join(timeout=10)
    assert client.requests_per_bead == {0: 5, 1: 5}
    assert client.n_with_tensors == 6  # requests 0, 2, 4 of each bead
    for b in range(2):
        name, steps, born = read_ipi_extras(run.dir / f"sim.bec_{b}")
        assert name == "born_effective_charges" and list(steps) == [0, 1, 2, 3, 4]
        assert [z is not None for z in born] == [True, False, True, False, True]
        assert born[0].shape == (9, 3, 3)


def test_killed_client_is_survived_and_a_restarted_client_reconnects(ipi_run):
    """A client process killed mid-run: i-PI requeues its request and the other client carries the run;
    a client started later connects and takes work; the run ends cleanly with no missing step."""
    run = ipi_run(beads=2, steps=100000)
    survivor = run.thread_client(extras=EXTRAS)
    victim = run.process_client("victim", "--extras", ",".join(EXTRAS))
    _wait(lambda: "connected" in (run.dir / "victim.log").read_text() and run.frames() >= 3, 90,
          "the second client to connect and the run to advance", [run.server, victim])
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    n_kill = run.frames()
    _wait(lambda: run.frames() >= n_kill + 3, 60, "the run to advance with one client", [run.server])
    restarted = run.process_client("restarted", "--extras", ",".join(EXTRAS))
    _wait(lambda: "connected" in (run.dir / "restarted.log").read_text(), 90,
          "the restarted client to connect", [run.server, restarted])
    # slow the in-process survivor down, so that i-PI finds the restarted client idle and gives it beads (on a
    # busy machine the survivor otherwise took every request before i-PI polled the new socket)
    calculate = survivor.atoms.calc.calculate

    def slow_calculate(*args, **kw):
        time.sleep(0.5)
        return calculate(*args, **kw)

    survivor.atoms.calc.calculate = slow_calculate
    _wait(lambda: "first force evaluation" in (run.dir / "restarted.log").read_text(), 90,
          "the restarted client's first force evaluation", [run.server, restarted])
    n_restart = run.frames()
    _wait(lambda: run.frames() >= n_restart + 4, 60, "the run to advance with the restarted client",
          [run.server, restarted])
    (run.dir / "EXIT").touch()  # i-PI's soft exit: finishes the step, sends EXIT to the clients
    assert run.wait_server(60) == 0
    assert restarted.wait(timeout=30) == 0
    log = (run.dir / "restarted.log").read_text()
    m = re.search(r"after (\d+) force evaluations", log)
    assert m is not None, log
    n_new = int(m.group(1))
    assert n_new >= 1, "the restarted client got no work"
    run.threads[0].join(timeout=10)
    assert set(survivor.requests_per_bead) == {0, 1}  # it took over the killed client's bead
    # every step of both beads was computed: consecutive frames, no gap where the victim died
    for b in range(2):
        text = (run.dir / f"sim.eps_{b}").read_text()
        steps = [int(s) for s in re.findall(r"Step:\s+(\d+)", text)]
        assert steps == list(range(len(steps))) and len(steps) >= n_restart + 4
        assert "\n\n" not in text.strip()  # every frame carries a tensor


# ---------------------------------------------------------------------------------------------------
# no i-PI needed below
def test_encode_extras_layout_and_json_roundtrip():
    from ase.io import read

    from ase_etgnn import ETGNNCalculator
    from ase_etgnn.ipi import encode_extras

    atoms = read(SEED)
    atoms.rattle(0.02, seed=1)
    atoms.calc = ETGNNCalculator(MODEL, device="cpu", symmetrize=False)
    ex = json.loads(json.dumps(encode_extras(atoms, atoms.calc, EXTRAS)))
    z = atoms.calc.get_property("born_effective_charges", atoms)
    rows = np.asarray(ex["born_effective_charges"])
    assert rows.shape == (9, 9)
    # row-major: Z[a, i, j] at 3 i + j; an off-diagonal element tells i from j
    assert np.allclose(rows[:, 1], z[:, 0, 1]) and np.allclose(rows[:, 3], z[:, 1, 0])
    assert not np.allclose(z[:, 0, 1], z[:, 1, 0])
    assert np.allclose(np.asarray(ex["dielectric_tensor"]), atoms.calc.get_property("dielectric_tensor", atoms))
    with pytest.raises(ValueError, match="unknown property 'stress'"):
        encode_extras(atoms, atoms.calc, ["stress"])


def test_read_ipi_extras_names_file_and_frame_of_bad_data(tmp_path):
    from ase_etgnn.ipi import read_ipi_extras

    good = " #EXTRAS(dielectric_tensor)# Step:           0 \n 1 0 0\n 0 1 0\n 0 0 2\n"
    p = tmp_path / "sim.eps_0"
    p.write_text(good + " #EXTRAS(dielectric_tensor)# Step:           1 \n\n")
    name, steps, frames = read_ipi_extras(p)
    assert name == "dielectric_tensor" and list(steps) == [0, 1]
    assert np.allclose(frames[0], np.diag([1, 1, 2])) and frames[1] is None
    p.write_text(good + " #EXTRAS(dielectric_tensor)# Step:           1 \n 1 0\n 0 1\n")
    with pytest.raises(ValueError, match=r"sim.eps_0: frame 1 \(step 1\): 4 numbers"):
        read_ipi_extras(p)
    p.write_text(" #EXTRAS(raw)# Step:           0 \n{'a': 1}\n")
    with pytest.raises(ValueError, match="extra_type='raw'"):
        read_ipi_extras(p)


def test_client_reports_a_missing_server(tmp_path, capsys):
    import torch

    from ase_etgnn.cli import main

    threads = str(torch.get_num_threads())  # the client sets torch's thread count: keep this process's
    rc = main(["ipi-client", "--model", MODEL, "--structure", str(SEED), "--unix",
               f"etgnn-none-{uuid.uuid4().hex[:8]}", "--connect-timeout", "0.5", "--threads", threads])
    assert rc == 3
    assert "no i-PI server at unix socket /tmp/ipi_etgnn-none-" in capsys.readouterr().err
    rc = main(["ipi-client", "--model", MODEL, "--structure", str(tmp_path / "nope.xyz"), "--port", "1"])
    assert rc == 2
    assert "nope.xyz" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --unix and --port are exclusive
        main(["ipi-client", "--model", MODEL, "--structure", str(SEED), "--unix", "a", "--port", "1"])


def _example(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "quartz_ipi" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ring_polymer_dipole_estimators():
    """beads: dM/dt = (1/P) sum_b sum_a Z_a(q_b) v_a,b (sum rule per bead); centroid: Zbar . vbar; both
    coincide for bead-independent charges (a linear dipole) and reduce to sum_a Z_a v_a for one bead."""
    from ase_etgnn.spectra import dipole_derivative

    ir = _example("ir_from_ipi")
    rng = np.random.default_rng(0)
    p, t, n = 4, 6, 5
    born = rng.normal(size=(p, t, n, 3, 3))
    vel = rng.normal(size=(p, t, n, 3))
    series = dict(steps=np.arange(t), dt_fs=np.float64(1.0), positions=rng.normal(size=(p, t, n, 3)),
                  velocities=vel, born=born, cell=np.tile(5 * np.eye(3), (t, 1, 1)),
                  masses=rng.uniform(10, 30, n), numbers=np.full(n, 14))

    def mdot(rec):
        return dipole_derivative(rec.born, rec.velocities, rec.masses)

    zc = born - born.mean(axis=2, keepdims=True)
    want = np.einsum("btaij,btaj->ti", zc, vel) / p
    assert np.allclose(mdot(ir.to_record(series, "beads")), want, atol=1e-12)
    # a linear dipole: Z the same on every bead -> the two estimators agree
    same = dict(series, born=np.repeat(born[:1], p, axis=0))
    assert np.allclose(mdot(ir.to_record(same, "beads")), mdot(ir.to_record(same, "centroid")), atol=1e-12)
    assert not np.allclose(mdot(ir.to_record(series, "beads")), mdot(ir.to_record(series, "centroid")))
    one = {k: (v[:1] if k in ("born", "velocities", "positions") else v) for k, v in series.items()}
    assert np.allclose(mdot(ir.to_record(one, "beads")), np.einsum("taij,taj->ti", zc[0], vel[0]), atol=1e-12)
    with pytest.raises(ValueError, match="leaves 2 frames"):
        ir.to_record(series, "beads", skip_fs=4.0)
