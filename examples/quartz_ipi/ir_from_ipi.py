"""IR (and Raman) spectra from i-PI runs with ETGNN clients: TRPMD vs classical MD.

    python examples/quartz_ipi/ir_from_ipi.py RUN_DIR [RUN_DIR ...] [--labels A B] [--estimator beads]
        [--skip-fs 100] [--max-lag 400] [--temperature 300] [--png ir.png] [--npz spectra.npz]

Each RUN_DIR is a directory written by ``run_ipi.py`` (or any i-PI run with the same outputs): its
``input.xml`` gives the output prefix and the time step, and per bead ``b`` i-PI wrote
``PREFIX.pos_b.extxyz`` and ``PREFIX.vel_b.extxyz`` (``positions{ase}``, ``velocities{ase}``,
``format='ase'``) and ``PREFIX.bec_b`` / ``PREFIX.eps_b`` (``extras`` with
``extra_type='born_effective_charges'`` / ``'dielectric_tensor'``).

Estimators of the dipole derivative (bead index b = 1..P, Z with the charge sum rule imposed per bead):

* ``beads`` (default): the ring-polymer bead average ``dM/dt = (1/P) sum_b sum_a Z_a(q_b) v_a,b``, the
  (T)RPMD estimator of a function of the positions, whose autocorrelation approximates the Kubo-
  transformed quantum correlation function;
* ``centroid``: ``dM/dt = sum_a Zbar_a vc_a`` with the bead-averaged Z and the centroid velocity.

Both equal the classical ``sum_a Z_a v_a`` for one bead.  The spectra come from the project's MD spectra
code (``ase_etgnn.spectra.ir_spectrum_from_md`` / ``raman_spectra_from_md``): for ``beads`` the P bead
copies are passed as one record of P N atoms with charges Z/P, whose ``sum_a Z_a v_a`` is exactly the
bead average above.  The harmonic quantum-correction factor (the default there) is the one that turns a
Kubo-transformed correlation function into the quantum line shape, so classical and TRPMD spectra are
processed identically and differ only through the dynamics.  eps_inf is averaged over the beads (Raman).
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase import units as ase_units

from ase_etgnn.ipi import read_ipi_extras
from ase_etgnn.spectra import MDRecord, ir_spectrum_from_md, raman_spectra_from_md


def read_settings(run: Path) -> Tuple[str, float]:
    """(output prefix, MD time step in fs) from ``run/input.xml``."""
    from ipi.utils.units import unit_to_internal

    path = run / "input.xml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: i-PI input not found (needed for the prefix and the time step)")
    root = ET.parse(path).getroot()
    prefix = root.find("output").get("prefix", "i-pi")
    ts = root.find("system/motion/dynamics/timestep")
    if ts is None:
        raise ValueError(f"{path}: no <system><motion><dynamics><timestep>")
    dt = unit_to_internal("time", ts.get("units", "atomic_unit"), float(ts.text))
    return prefix, float(dt / unit_to_internal("time", "femtosecond", 1.0))


def _step_of(atoms, path: Path, k: int) -> int:
    comment = atoms.info.get("ipi_comment", "")
    try:
        return int(comment.split("Step:")[1].split()[0])
    except (IndexError, ValueError):
        raise ValueError(f"{path}: frame {k} has no i-PI 'Step:' comment ({comment[:60]!r})") from None


def _read_frames(path: Path) -> list:
    """All frames of an extended-XYZ file; a truncated last frame (a run stopped mid-write) is dropped
    with a message naming the file and frame."""
    import ase.io

    frames = []
    try:
        for atoms in ase.io.iread(path, ":"):
            frames.append(atoms)
    except Exception as exc:  # ASE raises several types for a truncated frame
        print(f"{path}: frame {len(frames)} unreadable ({type(exc).__name__}: {exc}); using the "
              f"{len(frames)} frames before it", file=sys.stderr)
    return frames


def load_run(run: Path) -> Dict[str, np.ndarray]:
    """Per-bead series of one run, on the frames where every bead has BEC.

    Returns a dict: ``steps`` (T,), ``dt_fs`` (MD step), ``positions``/``velocities`` (P, T, N, 3) A and
    A/fs, ``born`` (P, T, N, 3, 3) e, ``dielectric`` (P, T, 3, 3) or absent, ``cell`` (T, 3, 3),
    ``masses`` (N,) amu, ``numbers`` (N,).
    """
    prefix, dt_fs = read_settings(run)
    pos_files = sorted(run.glob(f"{prefix}.pos_*.extxyz"), key=lambda p: int(p.stem.split("_")[-1]))
    if not pos_files:
        raise FileNotFoundError(f"{run}: no {prefix}.pos_*.extxyz (positions{{ase}}, format='ase')")
    beads = []
    for b, pf in enumerate(pos_files):
        tag = pf.stem.split("_")[-1]  # zero-padded bead index as i-PI wrote it
        vf = run / f"{prefix}.vel_{tag}.extxyz"
        bf = run / f"{prefix}.bec_{tag}"
        ef = run / f"{prefix}.eps_{tag}"
        for f in (vf, bf):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: missing (see the trajectories in examples/quartz_ipi/trpmd.xml)")
        pos = _read_frames(pf)
        vel = _read_frames(vf)
        # a run cut short may end with a partly written frame in one file: keep the common frames
        steps_p = [_step_of(a, pf, k) for k, a in enumerate(pos)]
        steps_v = [_step_of(a, vf, k) for k, a in enumerate(vel)]
        name, steps_z, born = read_ipi_extras(bf)
        if name != "born_effective_charges":
            raise ValueError(f"{bf}: holds {name!r}, expected born_effective_charges")
        eps = None
        steps_e: List[int] = []
        if ef.is_file():
            name, steps_e, eps = read_ipi_extras(ef)
            if name != "dielectric_tensor":
                raise ValueError(f"{ef}: holds {name!r}, expected dielectric_tensor")
            steps_e = list(steps_e)
        beads.append(dict(pos=dict(zip(steps_p, pos)), vel=dict(zip(steps_v, vel)),
                          born=dict(zip(list(steps_z), born)),
                          eps=None if eps is None else dict(zip(steps_e, eps))))
    common = set.intersection(*[set(k for k, z in bd["born"].items() if z is not None) & set(bd["pos"])
                                & set(bd["vel"]) for bd in beads])
    has_eps = all(bd["eps"] is not None for bd in beads)
    if has_eps:
        with_eps = set.intersection(*[set(k for k, e in bd["eps"].items() if e is not None) for bd in beads])
        if not with_eps >= common:
            has_eps = False
            print(f"{run}: eps_inf missing on some frames with BEC; Raman skipped", file=sys.stderr)
    steps = np.array(sorted(common), dtype=np.int64)
    if len(steps) < 4:
        raise ValueError(f"{run}: only {len(steps)} frames with positions, velocities and BEC for every bead")
    first = beads[0]["pos"][int(steps[0])]
    n = len(first)
    out: Dict[str, np.ndarray] = {
        "steps": steps,
        "dt_fs": np.float64(dt_fs),
        "positions": np.array([[bd["pos"][s].positions for s in steps] for bd in beads]),
        # velocities{ase}: A per ASE time unit -> A/fs
        "velocities": np.array([[bd["vel"][s].arrays["velocities"] for s in steps] for bd in beads]) * ase_units.fs,
        "born": np.array([[bd["born"][s] for s in steps] for bd in beads]),
        "cell": np.array([beads[0]["pos"][s].cell[:] for s in steps]),
        "masses": first.get_masses().astype(np.float64),
        "numbers": first.get_atomic_numbers(),
    }
    if out["born"].shape[2] != n:
        raise ValueError(f"{run}: BEC for {out['born'].shape[2]} atoms, positions for {n}")
    if has_eps:
        out["dielectric"] = np.array([[bd["eps"][s] for s in steps] for bd in beads])
    return out


def to_record(series: Dict[str, np.ndarray], estimator: str = "beads", skip_fs: float = 0.0) -> MDRecord:
    """An :class:`MDRecord` whose ``sum_a Z_a v_a`` is the chosen ring-polymer estimator of dM/dt."""
    times = series["steps"] * float(series["dt_fs"])
    keep = times >= times[0] + skip_fs
    if keep.sum() < 4:
        raise ValueError(f"--skip-fs {skip_fs:g} leaves {int(keep.sum())} frames")
    born = series["born"][:, keep]  # (P, T, N, 3, 3)
    born = born - born.mean(axis=2, keepdims=True)  # charge sum rule per bead and frame
    vel = series["velocities"][:, keep]  # (P, T, N, 3)
    pos = series["positions"][:, keep]
    p, t, n = born.shape[:3]
    eps = series.get("dielectric")
    eps = None if eps is None else eps[:, keep].mean(axis=0)  # (T, 3, 3), bead average
    cells = series["cell"][keep]
    if estimator == "beads":
        # P bead copies as one system of P*N atoms with charges Z/P
        born_r = np.moveaxis(born, 0, 1).reshape(t, p * n, 3, 3) / p
        vel_r = np.moveaxis(vel, 0, 1).reshape(t, p * n, 3)
        pos_r = np.moveaxis(pos, 0, 1).reshape(t, p * n, 3)
        masses = np.tile(series["masses"], p)
        numbers = np.tile(series["numbers"], p)
    elif estimator == "centroid":
        born_r, vel_r, pos_r = born.mean(axis=0), vel.mean(axis=0), pos.mean(axis=0)
        masses, numbers = series["masses"], series["numbers"]
    else:
        raise ValueError(f"unknown estimator {estimator!r}; use 'beads' or 'centroid'")
    return MDRecord(times_fs=times[keep], positions=pos_r, velocities=vel_r, cells=cells, masses=masses,
                    numbers=numbers, born=born_r, dielectric=eps)


def centroid_temperature(series: Dict[str, np.ndarray]) -> float:
    """Mean kinetic temperature (K) of the centroid velocities (centre of mass removed)."""
    vc = series["velocities"].mean(axis=0)  # (T, N, 3) A/fs
    m = series["masses"]
    vc = vc - np.einsum("a,tab->tb", m, vc)[:, None, :] / m.sum()
    ekin = 0.5 * np.einsum("a,tab,tab->t", m, vc / ase_units.fs, vc / ase_units.fs)  # eV
    return float(2 * ekin.mean() / ((3 * len(m) - 3) * ase_units.kB))


def main(argv: Optional[Sequence[str]] = None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="i-PI run directories")
    ap.add_argument("--labels", nargs="+", help="legend labels (default: 'P beads' / 'classical')")
    ap.add_argument("--estimator", choices=("beads", "centroid"), default="beads")
    ap.add_argument("--temperature", type=float, default=300.0, help="K (prefactor and quantum correction)")
    ap.add_argument("--skip-fs", type=float, default=100.0, help="equilibration to drop (fs)")
    ap.add_argument("--max-lag", type=float, default=None,
                    help="correlation length (fs); default half the series; resolution ~ 33356 / max_lag cm^-1")
    ap.add_argument("--pad", type=int, default=8, help="zero-padding factor of the FFT")
    ap.add_argument("--png", help="figure to write")
    ap.add_argument("--npz", help="spectra to write")
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        raise SystemExit("--labels needs one label per run")

    results = []
    for k, run in enumerate(args.runs):
        series = load_run(Path(run))
        p = series["born"].shape[0]
        label = args.labels[k] if args.labels else ("classical" if p == 1 else f"TRPMD, {p} beads")
        rec = to_record(series, args.estimator, args.skip_fs)
        ir = ir_spectrum_from_md(rec, args.temperature, max_lag_fs=args.max_lag, pad_factor=args.pad)
        raman = None
        if rec.dielectric is not None:
            raman = raman_spectra_from_md(rec, args.temperature, max_lag_fs=args.max_lag, pad_factor=args.pad)
        tc = centroid_temperature(series)
        print(f"{run}: {label}: {len(rec)} frames every {rec.timestep_fs:g} fs after {args.skip_fs:g} fs, "
              f"centroid T = {tc:.0f} K, estimator {args.estimator}")
        results.append((label, ir, raman, len(rec), rec.timestep_fs, tc))

    if args.npz:
        arrays = {}
        for k, (label, ir, raman, *_rest) in enumerate(results):
            arrays[f"run{k}_frequencies_cm1"] = ir.frequencies_cm1
            arrays[f"run{k}_ir_absorption_per_cm"] = ir["absorption"]
            if raman is not None:
                arrays[f"run{k}_raman_unpolarized"] = raman["unpolarized"]
        arrays["labels"] = np.array([r[0] for r in results])
        np.savez(args.npz, **arrays)
        print(f"wrote {args.npz}")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with_raman = all(r[2] is not None for r in results)
        fig, axes = plt.subplots(2 if with_raman else 1, 1, figsize=(8, 6 if with_raman else 3.6), sharex=True,
                                 squeeze=False)
        axes = axes[:, 0]
        for k, (label, ir, raman, nfr, dt, tc) in enumerate(results):
            f = ir.frequencies_cm1
            sel = (f > 20) & (f < 1500)
            axes[0].plot(f[sel], ir["absorption"][sel], color=f"C{k}",
                         label=f"{label} ({nfr} frames, centroid T {tc:.0f} K)")
            if with_raman:
                axes[1].plot(f[sel], raman["unpolarized"][sel], color=f"C{k}", label=label)
        axes[0].set_ylabel(r"IR $\alpha(\omega) n(\omega)$ (cm$^{-1}$)")
        axes[0].legend(fontsize=8)
        if with_raman:
            axes[1].set_ylabel("Raman, unpolarised (A$^6$ fs)")
        axes[-1].set_xlabel("wavenumber (cm$^{-1}$)")
        axes[0].set_title(args.title or f"alpha-quartz (72 atoms), {args.temperature:g} K, ETGNN via i-PI, "
                          f"{args.estimator} estimator")
        fig.tight_layout()
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=150)
        plt.close(fig)
        print(f"wrote {args.png}")
    return results


if __name__ == "__main__":
    main()
