r"""DFPT data generation driver: perturbed seed structures -> pw.x (+ ph.x) -> HDF5 records.

Usage (also ``etgnn dfpt generate ...`` through :func:`register_cli`)::

    python -m ase_etgnn.dfpt generate --seeds data/seeds/alpha_quartz.extxyz --tag quartz-ph \
        --n-structures 100 --rms 0.02 0.12 --strain-max 0.02 --seed 1 --ph \
        --workdir dfpt_work --output data/sio2_dfpt.h5

Each structure ``index`` is generated deterministically from ``numpy.random.default_rng([seed, index])``
(seed structure ``index % n_seeds`` over every frame of the seed files, a random symmetric strain, then random displacements with a
drawn rms), so a rerun regenerates exactly the same list. Its record key is ``f"{tag}-{seed}-{index}"``.

Resume and concurrency: keys already in the data set (``ase_etgnn.records.record_keys``) are skipped; every
structure is computed in ``workdir/<key>/`` guarded by ``workdir/<key>/.lock`` (created with ``O_EXCL``;
a lock whose process is dead on this host is taken over), so two single-process jobs can share one data
set. Every finished record is also appended to ``workdir/records.jsonl`` before it goes to HDF5; records
that could not be written to HDF5 (e.g. the file was locked by a broken writer) are flushed there on the
next run with the same ``--output`` (each line names its data set, so jobs for different data sets can share
a workdir without copying each other's records). Failed structures are moved to
``workdir/failed/<key>-<time>/`` with their QE logs, listed in the summary and not retried unless
``--retry-failed``; a run that leaves failed structures (now or from earlier runs) exits with status 1.

Processes (:mod:`ase_etgnn.qe_runner`): every QE run (mpirun and its pw.x/ph.x) is started in its own
session and every process of that session is stopped when the driver is interrupted (Ctrl-C, SIGTERM,
SIGHUP) or a run times out, so no QE process outlives the job. The session id is kept in
``workdir/<key>/.qe_session`` while QE runs: if the driver itself is killed hard (SIGKILL) and its QE
processes live on, a rerun sees them and leaves that structure alone instead of starting a second pw.x in
the same folder.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
from ase import Atoms
from ase.io import read

from . import qe, records
from .qe_runner import Interrupted, QERunner, Runner, interrupt_on_signals, orphaned_session
from .structures import write_seed_structures

__all__ = [
    "GenerationConfig",
    "GenerationSummary",
    "generate_structure",
    "generate_structures",
    "structure_key",
    "run_generation",
    "register_cli",
    "main",
]


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class GenerationConfig:
    """Settings of one generation job (one data subset).

    Attributes:
        seeds: seed structure files (anything ``ase.io.read`` reads); every frame of every file is a seed, in
            order, and structure ``i`` uses seed ``i % (number of seeds)``.
        n_structures: number of structures (indices ``start_index .. start_index + n_structures - 1``).
        rms_range: (min, max) target rms displacement in A, drawn uniformly per structure; the rms is
            ``sqrt(mean_a |u_a|^2)`` over atoms, after removing the mean displacement.
        strain_max: symmetric strain components drawn uniformly in ``[-strain_max, strain_max]``.
        seed: generation seed (``default_rng([seed, index])``).
        tag: key prefix; record key ``f"{tag}-{seed}-{index}"``.
        run_ph: run ph.x (eps_inf + Born charges) after pw.x.
        nprocs: MPI processes per QE run.
        workdir: scratch/log folder (one sub-folder per key).
        output: HDF5 data set (``ase_etgnn.records``).
        start_index: first index.
        retry_failed: retry keys that have a folder in ``workdir/failed``.
        pseudo_dir: pseudopotential folder.
        timeout_s: wall-clock limit of one QE program run.
        keep_scratch: keep QE's ``outdir`` (wavefunctions) after success.
        max_consecutive_failures: stop the job after this many failures in a row (a broken setup must
            not mark every structure as failed).
    """

    seeds: Tuple[str, ...]
    n_structures: int
    rms_range: Tuple[float, float] = (0.02, 0.12)
    strain_max: float = 0.02
    seed: int = 0
    tag: str = "sio2"
    run_ph: bool = True
    nprocs: int = 1
    workdir: str = "dfpt_work"
    output: str = "data/sio2_dfpt.h5"
    start_index: int = 0
    retry_failed: bool = False
    pseudo_dir: str = qe.DEFAULT_PSEUDO_DIR
    timeout_s: float = 6 * 3600.0
    keep_scratch: bool = False
    max_consecutive_failures: int = 3

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("GenerationConfig.seeds: at least one seed structure file is required")
        object.__setattr__(self, "seeds", tuple(str(s) for s in self.seeds))
        object.__setattr__(self, "rms_range", tuple(float(x) for x in self.rms_range))
        lo, hi = self.rms_range
        if not (0.0 <= lo <= hi):
            raise ValueError(f"GenerationConfig.rms_range must satisfy 0 <= min <= max, got {self.rms_range}")
        if not (0.0 <= self.strain_max < 0.5):
            raise ValueError(f"GenerationConfig.strain_max must be in [0, 0.5), got {self.strain_max}")
        if self.n_structures < 0 or self.start_index < 0:
            raise ValueError("GenerationConfig: n_structures and start_index must be >= 0")
        if self.nprocs < 1:
            raise ValueError(f"GenerationConfig.nprocs must be >= 1, got {self.nprocs}")
        if not self.tag or any(c in self.tag for c in "/\\ "):
            raise ValueError(f"GenerationConfig.tag must be a non-empty name without '/', '\\\\' or spaces: {self.tag!r}")


def structure_key(tag: str, seed: int, index: int) -> str:
    """Record key of structure ``index`` of a job (``f"{tag}-{seed}-{index}"``)."""
    return f"{tag}-{seed}-{index}"


# --------------------------------------------------------------------------------------- structures
def _read_seeds(path: str) -> List[Tuple[str, Atoms]]:
    """Every frame of a seed file as ``(label, atoms)``: the label is the path, or ``path@frame`` for files of
    several frames (each frame is a seed of its own)."""
    try:
        frames = read(path, index=":")
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read seed structure {path}: {type(err).__name__}: {err}") from err
    if not frames:
        raise ValueError(f"seed file {path} holds no structure")
    out = []
    for i, atoms in enumerate(frames):
        atoms.pbc = True
        atoms.calc = None
        out.append((path if len(frames) == 1 else f"{path}@{i}", atoms))
    return out


def generate_structure(seed_atoms: Atoms, rng: np.random.Generator, rms_range: Tuple[float, float],
                       strain_max: float) -> Tuple[Atoms, Dict[str, object]]:
    """One perturbed structure: symmetric strain (affine, applied to cell and positions) then displacements.

    Returns (atoms, info) with info ``rms`` (target = achieved rms, A), ``strain`` (3x3, dimensionless).
    """
    e = rng.uniform(-strain_max, strain_max, size=6)  # xx, yy, zz, yz, xz, xy
    strain = np.array([[e[0], e[5], e[4]], [e[5], e[1], e[3]], [e[4], e[3], e[2]]])  # [3,3] symmetric
    deform = np.eye(3) + strain
    atoms = seed_atoms.copy()
    atoms.calc = None
    atoms.set_cell(np.asarray(atoms.cell) @ deform, scale_atoms=False)  # rows are lattice vectors
    atoms.set_positions(atoms.get_positions() @ deform)
    rms = float(rng.uniform(*rms_range))
    u = rng.normal(size=(len(atoms), 3))  # [N,3]
    u -= u.mean(axis=0)
    norm = np.sqrt(np.mean(np.sum(u**2, axis=1)))
    if norm > 0 and rms > 0:
        u *= rms / norm
    else:
        u[:] = 0.0
    atoms.set_positions(atoms.get_positions() + u)
    return atoms, {"rms": rms, "strain": strain}


def generate_structures(config: GenerationConfig) -> List[Tuple[str, int, Atoms, Dict[str, object]]]:
    """All structures of a job: list of (key, index, atoms, info); deterministic in (seed, index)."""
    seeds = [seed for path in config.seeds for seed in _read_seeds(path)]  # (label, atoms), files in order
    out = []
    for index in range(config.start_index, config.start_index + config.n_structures):
        rng = np.random.default_rng([config.seed, index])
        seed_i = index % len(seeds)
        label, seed_atoms = seeds[seed_i]
        atoms, info = generate_structure(seed_atoms, rng, config.rms_range, config.strain_max)
        info["seed_file"] = label
        out.append((structure_key(config.tag, config.seed, index), index, atoms, info))
    return out


def write_structures(config: GenerationConfig, path: str) -> int:
    """Write the structures of ``config`` (those a QE job would compute, same keys) to the extxyz ``path``.

    ``atoms.info`` holds ``key``, ``index``, ``rms`` (A), ``strain`` (3x3, flattened) and ``seed_file``. An
    existing ``path`` is refused (``ValueError``). Returns 0 (CLI exit status).
    """
    from ase.io import write

    if os.path.exists(path):
        raise ValueError(f"{path} exists: choose another --write-structures file")
    frames = []
    for key, index, atoms, info in generate_structures(config):
        a = atoms.copy()
        a.info.update({"key": key, "index": index, "rms": float(info["rms"]),
                       "strain": np.asarray(info["strain"], dtype=float).ravel(), "seed_file": str(info["seed_file"])})
        frames.append(a)
    write(path, frames, format="extxyz")
    print(f"[dfpt] {config.tag}: wrote {len(frames)} structures to {path} (no QE run)", flush=True)
    return 0


# -------------------------------------------------------------------------------------------- store
class _Store:
    """HDF5 data set plus a JSON-lines backup/queue of finished records in the workdir.

    Several jobs may share one workdir while writing to different data sets (e.g. SiO2 and Al2O3): every
    queued line names its data set (``"output"``, the resolved path), and a job reads, flushes and counts
    as done only the lines of its own ``output``. Lines written before this field existed name no data set
    and are left alone (reported once).
    """

    def __init__(self, output: Path, workdir: Path, log: Callable[[str], None] = lambda s: None) -> None:
        self.output = output
        self.target = os.path.realpath(output)
        self.jsonl = workdir / "records.jsonl"
        self._log = log
        self._reported_legacy = False

    def _jsonl_records(self) -> List[dict]:
        """Queued records of this store's output file."""
        if not self.jsonl.exists():
            return []
        recs, legacy = [], 0
        for line in self.jsonl.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: ignore
                continue
            if "output" not in rec:
                legacy += 1
            elif rec["output"] == self.target:
                recs.append(rec)
        if legacy and not self._reported_legacy:
            self._reported_legacy = True
            self._log(f"[dfpt] note: {legacy} lines of {self.jsonl} name no data set (written by an older "
                      f"version); they are not copied into {self.output}")
        return recs

    def hdf5_keys(self) -> Set[str]:
        return set(records.record_keys(str(self.output)))

    def done_keys(self) -> Set[str]:
        keys = {r["key"] for r in self._jsonl_records()}
        try:
            keys |= self.hdf5_keys()
        except Exception as err:  # noqa: BLE001 - a broken/locked file must not stop the job
            print(f"[dfpt] warning: cannot read keys of {self.output}: {err}", flush=True)
        return keys

    def add(self, atoms: Atoms, targets: Mapping[str, np.ndarray], provenance: Mapping, key: str) -> bool:
        """Backup to JSONL, then append to HDF5. Returns True when the HDF5 append succeeded."""
        rec = {
            "key": key,
            "output": self.target,
            "numbers": atoms.numbers.tolist(),
            "positions": atoms.get_positions().tolist(),
            "cell": np.asarray(atoms.cell).tolist(),
            "pbc": [bool(x) for x in atoms.pbc],
            "targets": {k: np.asarray(v).tolist() for k, v in targets.items()},
            "provenance": dict(provenance),
        }
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return self.flush()

    def flush(self) -> bool:
        """Append JSONL records missing from the HDF5 file. Returns False when HDF5 is unavailable."""
        try:
            present = self.hdf5_keys()
            items = []
            for r in self._jsonl_records():
                if r["key"] in present:
                    continue
                atoms = Atoms(numbers=r["numbers"], positions=r["positions"], cell=r["cell"], pbc=r["pbc"])
                targets = {k: np.asarray(v, dtype=float) for k, v in r["targets"].items()}
                items.append((atoms, targets, r["provenance"], r["key"]))
                present.add(r["key"])
            if items:
                records.append_records(str(self.output), items, on_duplicate="skip")
            return True
        except Exception as err:  # noqa: BLE001 - keep the job alive; records stay in the JSONL queue
            print(f"[dfpt] warning: could not write to {self.output} ({type(err).__name__}: {err}); "
                  f"records kept in {self.jsonl}", flush=True)
            return False


# --------------------------------------------------------------------------------------------- locks
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire_lock(lock: Path) -> str:
    """Create ``lock`` with O_EXCL (content: host pid); takes over a lock of a dead process on this host.

    Returns ``"taken"``, ``"held"`` (a live job owns it) or ``"orphaned"`` (its job died, but that job's QE
    processes still run in the folder)."""
    host = socket.gethostname()
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner_host, owner_pid = lock.read_text().split()[:2]
                stale = owner_host == host and not _pid_alive(int(owner_pid))
            except (OSError, ValueError):
                stale = time.time() - lock.stat().st_mtime > 60 if lock.exists() else True
            if not stale:
                return "held"
            if orphaned_session(lock.parent) is not None:
                return "orphaned"
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{host} {os.getpid()}\n")
        return "taken"
    return "held"


def _release_lock(lock: Path) -> None:
    try:
        lock.unlink()
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------- generation
@dataclass
class GenerationSummary:
    """What a run did (keys per outcome) and timings (s)."""

    done: List[str] = field(default_factory=list)
    skipped_existing: List[str] = field(default_factory=list)
    skipped_locked: List[str] = field(default_factory=list)
    skipped_failed_before: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)  # key -> reason (logs in workdir/failed/)
    timings: Dict[str, Dict[str, float]] = field(default_factory=dict)
    aborted: Optional[str] = None

    def text(self) -> str:
        lines = [
            f"done: {len(self.done)}, already in data set: {len(self.skipped_existing)}, "
            f"locked by another job: {len(self.skipped_locked)}, failed before: "
            f"{len(self.skipped_failed_before)}, failed now: {len(self.failed)}",
        ]
        lines += [f"  FAILED {k}: {v}" for k, v in self.failed.items()]
        if self.skipped_failed_before:
            lines.append(f"  failed in an earlier run, not retried (logs in WORKDIR/failed/; rerun with "
                         f"--retry-failed): {', '.join(self.skipped_failed_before)}")
        if self.aborted:
            lines.append(f"  ABORTED: {self.aborted}")
        return "\n".join(lines)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _check_pseudos(pseudo_dir: str) -> Dict[str, str]:
    md5 = {}
    for element, name in qe.PSEUDOPOTENTIALS.items():
        p = Path(pseudo_dir) / name
        if not p.is_file():
            raise FileNotFoundError(f"pseudopotential {p} not found (protocol needs {name} for {element})")
        md5[name] = _md5(p)
        if md5[name] != qe.PSEUDO_MD5[name]:
            raise ValueError(f"{p}: md5 {md5[name]} differs from the protocol's {qe.PSEUDO_MD5[name]}")
    return md5


def _failed_before(workdir: Path, key: str) -> bool:
    fdir = workdir / "failed"
    return fdir.is_dir() and any(p.name.startswith(key + "--") for p in fdir.iterdir())


def _run_one(config: GenerationConfig, key: str, index: int, atoms: Atoms, info: Mapping[str, object],
             sdir: Path, runner: Runner, pseudo_md5: Mapping[str, str]) -> Tuple[Atoms, dict, dict]:
    """pw.x (+ ph.x) in ``sdir``; returns (atoms, targets, provenance). Raises on any failure."""
    prefix, outdir = "q", "./tmp"
    kpts = qe.kpoint_grid(atoms, qe.PROTOCOL_PW["kspacing"])  # type: ignore[arg-type]
    scf_in = qe.write_pw_input(atoms, sdir / "scf.in", prefix, outdir, pseudo_dir=config.pseudo_dir, kpts=kpts)
    t0 = time.time()
    rc = runner("pw.x", scf_in, sdir / "scf.out", sdir)
    t_pw = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"pw.x exited with code {rc} (see scf.out)")
    ph_out = None
    t_ph = 0.0
    if config.run_ph:
        ph_in = qe.write_ph_input(sdir / "ph.in", prefix, outdir, fildyn="q.dyn")
        t0 = time.time()
        rc = runner("ph.x", ph_in, sdir / "ph.out", sdir)
        t_ph = time.time() - t0
        if rc != 0:
            raise RuntimeError(f"ph.x exited with code {rc} (see ph.out)")
        ph_out = sdir / "ph.out"
    rec_atoms, targets = qe.read_qe_outputs(sdir / "scf.out", ph_out, pw_in=scf_in)
    pw = qe.parse_pw_output(sdir / "scf.out")
    provenance = {
        "protocol": qe.PROTOCOL_NAME,
        "protocol_version": qe.PROTOCOL_VERSION,
        "code": "Quantum ESPRESSO",
        "qe_version": pw["qe_version"],
        "programs": ["pw.x", "ph.x"] if config.run_ph else ["pw.x"],
        "functional": "LDA (PZ)",
        "pseudopotentials": {qe.PSEUDOPOTENTIALS[s]: {"md5": pseudo_md5.get(qe.PSEUDOPOTENTIALS[s])}
                             for s in sorted(set(atoms.get_chemical_symbols()))},
        "pseudo_md5_from_output": pw["pseudo_md5"],
        "ecutwfc_Ry": qe.PROTOCOL_PW["ecutwfc"],
        "ecutrho_Ry": qe.PROTOCOL_PW["ecutrho"],
        "conv_thr_Ry": float(str(qe.PROTOCOL_PW["conv_thr"])),
        "kpoints": list(kpts),
        "kpoint_spacing_inv_A": qe.PROTOCOL_PW["kspacing"],
        "ph": dict(qe.PROTOCOL_PH) if config.run_ph else None,
        "bec_convention": "Z[a,i,j]=dF_j/dE_i as printed by ph.x (no ASR)" if config.run_ph else None,
        "tag": config.tag,
        "key": key,
        "seed": config.seed,
        "index": index,
        "seed_structure": os.path.basename(str(info["seed_file"])),
        "rms_displacement_A": float(info["rms"]),  # type: ignore[arg-type]
        "rms_range_A": list(config.rms_range),
        "strain": np.asarray(info["strain"]).tolist(),
        "strain_max": config.strain_max,
        "n_scf_iterations": pw["n_scf_iterations"],
        "wall_time_pw_s": round(t_pw, 2),
        "wall_time_ph_s": round(t_ph, 2),
        "nprocs": config.nprocs,
        "hostname": socket.gethostname(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generator": "ase_etgnn.dfpt",
    }
    return rec_atoms, targets, provenance


def run_generation(config: GenerationConfig, runner: Optional[Runner] = None,
                   log: Callable[[str], None] = lambda s: print(s, flush=True),
                   check_pseudos: bool = True) -> GenerationSummary:
    """Compute every structure of ``config`` not yet in the data set, one at a time.

    ``runner`` defaults to :class:`QERunner` (``config.nprocs``, ``config.timeout_s``); tests pass a fake.
    """
    runner = runner if runner is not None else QERunner(config.nprocs, config.timeout_s)
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = _Store(Path(config.output), workdir, log)
    pseudo_md5 = _check_pseudos(config.pseudo_dir) if check_pseudos else dict(qe.PSEUDO_MD5)
    store.flush()
    summary = GenerationSummary()
    structures = generate_structures(config)
    log(f"[dfpt] {config.tag}: {len(structures)} structures (seed {config.seed}, indices "
        f"{config.start_index}..{config.start_index + config.n_structures - 1}), ph.x: {config.run_ph}, "
        f"output {config.output}")
    check = getattr(runner, "check", None)
    if check is not None:  # a missing pw.x is one clear message before any structure starts
        done = store.done_keys()
        if any(k not in done and (config.retry_failed or not _failed_before(workdir, k)) for k, *_ in structures):
            check(["pw.x", "ph.x"] if config.run_ph else ["pw.x"])
    libraries = getattr(runner, "linked_libraries", None)
    blas = (libraries("pw.x") or {}).get("libblas.so.3") if libraries is not None else None
    if blas is not None and "/blas/" in blas:  # Debian's reference BLAS (/usr/lib/<arch>/blas/)
        log(f"[dfpt] pw.x loads the reference BLAS ({blas}); with OpenBLAS (apt-get install libopenblas0-serial) "
            "QE gives the same numbers 2.3x faster (docs/sio2_protocol.md)")
    consecutive_failures = 0
    for key, index, atoms, info in structures:
        if consecutive_failures >= config.max_consecutive_failures:
            summary.aborted = (f"stopped after {consecutive_failures} consecutive failures; "
                               "fix the setup and rerun with --retry-failed")
            log(f"[dfpt] {config.tag}: {summary.aborted}")
            break
        if key in store.done_keys():
            summary.skipped_existing.append(key)
            continue
        if not config.retry_failed and _failed_before(workdir, key):
            summary.skipped_failed_before.append(key)
            continue
        sdir = workdir / key
        sdir.mkdir(parents=True, exist_ok=True)
        lock = sdir / ".lock"
        lock_state = _acquire_lock(lock)
        if lock_state != "taken":
            summary.skipped_locked.append(key)
            orphan = orphaned_session(sdir) if lock_state == "orphaned" else None
            if orphan is not None:
                log(f"[dfpt] {key}: QE processes of an earlier job (session {orphan}) still run in {sdir}; "
                    f"skipped (wait for them, or stop them with: pkill -s {orphan})")
            else:
                log(f"[dfpt] {key}: locked by another job, skipped")
            continue
        owns_lock = True
        try:
            if key in store.done_keys():  # finished by another job meanwhile
                summary.skipped_existing.append(key)
                continue
            t0 = time.time()
            log(f"[dfpt] {key}: start ({len(atoms)} atoms, rms {info['rms']:.3f} A)")
            linear_algebra = libraries("pw.x") if libraries is not None else None
            try:
                rec_atoms, targets, prov = _run_one(config, key, index, atoms, info, sdir, runner, pseudo_md5)
            except Exception as err:  # noqa: BLE001 - one bad structure must not stop the job
                reason = f"{type(err).__name__}: {err}"
                summary.failed[key] = reason
                consecutive_failures += 1
                stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
                dest = workdir / "failed" / f"{key}--{stamp}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(sdir / "tmp", ignore_errors=True)
                (sdir / "FAILED.txt").write_text(reason + "\n")
                shutil.move(str(sdir), str(dest))  # the lock moves with it: nobody else can own sdir/.lock
                owns_lock = False
                _release_lock(dest / ".lock")
                log(f"[dfpt] {key}: FAILED ({reason}); logs in {dest}")
                continue
            consecutive_failures = 0
            prov["wall_time_total_s"] = round(time.time() - t0, 2)
            if linear_algebra is not None:
                prov["linear_algebra"] = linear_algebra  # BLAS/LAPACK that pw.x loaded
            ok = store.add(rec_atoms, targets, prov, key)
            summary.done.append(key)
            summary.timings[key] = {"pw": prov["wall_time_pw_s"], "ph": prov["wall_time_ph_s"],
                                    "total": prov["wall_time_total_s"]}
            if not config.keep_scratch:
                shutil.rmtree(sdir / "tmp", ignore_errors=True)
                for extra in sdir.glob("_ph*"):
                    shutil.rmtree(extra, ignore_errors=True)
            msg = (f"[dfpt] {key}: done in {prov['wall_time_total_s']:.0f} s (pw {prov['wall_time_pw_s']:.0f} s, "
                   f"ph {prov['wall_time_ph_s']:.0f} s)")
            if "dielectric_tensor" in targets:
                eps = np.diag(targets["dielectric_tensor"])
                asr = np.abs(targets["born_effective_charges"].sum(axis=0)).max()
                msg += f"; eps diag {np.round(eps, 3).tolist()}, max |sum Z*| {asr:.3f} e"
            fmax = np.linalg.norm(targets["forces"], axis=1).max()
            msg += f"; max |F| {fmax:.2f} eV/A" + ("" if ok else " (HDF5 write deferred)")
            log(msg)
        finally:
            if owns_lock:
                _release_lock(lock)
    log("[dfpt] summary " + config.tag + ": " + summary.text())
    return summary


# ------------------------------------------------------------------------------------------------ CLI
def _add_generate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("generate", help="generate perturbed structures and run pw.x (+ ph.x)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", required=True, help="seed structure files (extxyz, cif, ...)")
    p.add_argument("--n-structures", type=int, required=True)
    p.add_argument("--rms", nargs=2, type=float, default=(0.02, 0.12), metavar=("MIN", "MAX"),
                   help="rms displacement range in A (default 0.02 0.12)")
    p.add_argument("--strain-max", type=float, default=0.02, help="max |symmetric strain component|")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="sio2", help="record key prefix: key = TAG-SEED-INDEX")
    p.add_argument("--ph", dest="run_ph", action="store_true", default=True, help="run ph.x (default)")
    p.add_argument("--no-ph", dest="run_ph", action="store_false", help="pw.x only")
    p.add_argument("--nprocs", type=int, default=1)
    p.add_argument("--workdir", default="dfpt_work")
    p.add_argument("--output", default="data/sio2_dfpt.h5")
    p.add_argument("--start-index", type=int, default=0)
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--pseudo-dir", default=qe.DEFAULT_PSEUDO_DIR)
    p.add_argument("--timeout", type=float, default=6 * 3600.0, help="limit of one QE run (s)")
    p.add_argument("--keep-scratch", action="store_true")
    p.add_argument("--max-consecutive-failures", type=int, default=3)
    p.add_argument("--write-structures", metavar="FILE",
                   help="write the job's structures to FILE (extxyz; key, index, rms, strain and seed file in "
                        "atoms.info) and stop without running QE: a candidate pool for `etgnn select`")
    p.set_defaults(func=_cmd_generate)
    return p


def _cmd_generate(args: argparse.Namespace) -> int:
    """Exit status: 0 all structures are in the data set (or being computed by another job), 1 structures
    failed (now or in an earlier run, unless retried), 2 bad settings or missing programs, 128 + signal
    number when interrupted (its QE processes are stopped first)."""
    try:
        config = GenerationConfig(
            seeds=tuple(args.seeds), n_structures=args.n_structures, rms_range=tuple(args.rms),
            strain_max=args.strain_max, seed=args.seed, tag=args.tag, run_ph=args.run_ph, nprocs=args.nprocs,
            workdir=args.workdir, output=args.output, start_index=args.start_index,
            retry_failed=args.retry_failed, pseudo_dir=args.pseudo_dir, timeout_s=args.timeout,
            keep_scratch=args.keep_scratch, max_consecutive_failures=args.max_consecutive_failures,
        )
        if args.write_structures:
            return write_structures(config, args.write_structures)
        with interrupt_on_signals():
            summary = run_generation(config)
    except (ValueError, FileNotFoundError) as err:
        print(f"etgnn dfpt generate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        print(f"etgnn dfpt generate: interrupted ({signal.Signals(signum).name}); QE processes stopped, "
              "finished records kept; rerun the same command to continue", file=sys.stderr)
        return 128 + int(signum)
    if summary.skipped_failed_before and not (summary.failed or summary.aborted):
        print(f"etgnn dfpt generate: {len(summary.skipped_failed_before)} structures failed in an earlier run and "
              f"were not retried: {', '.join(summary.skipped_failed_before)} (logs in {config.workdir}/failed/; "
              "rerun with --retry-failed)", file=sys.stderr)
    return 1 if (summary.failed or summary.aborted or summary.skipped_failed_before) else 0


def _cmd_seeds(args: argparse.Namespace) -> int:
    for p in write_seed_structures(args.directory):
        print(p)
    return 0


def _add_seeds_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("seeds", help="write the alpha-quartz / alpha-cristobalite seed structures")
    p.add_argument("--directory", default="data/seeds")
    p.set_defaults(func=_cmd_seeds)
    return p


def register_cli(subparsers) -> None:
    """Add ``dfpt`` (with ``generate`` and ``seeds``) to an argparse sub-parser collection."""
    p = subparsers.add_parser("dfpt", help="DFT/DFPT (Quantum ESPRESSO) data generation")
    sub = p.add_subparsers(dest="dfpt_command", metavar="{generate,seeds}")
    sub.required = True
    _add_generate_parser(sub)
    _add_seeds_parser(sub)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ase_etgnn.dfpt {generate,seeds} ...``"""
    parser = argparse.ArgumentParser(prog="python -m ase_etgnn.dfpt", description="DFPT data generation")
    sub = parser.add_subparsers(dest="command", metavar="{generate,seeds}")
    sub.required = True
    _add_generate_parser(sub)
    _add_seeds_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
