"""IR and Raman spectra of alpha-quartz from ETGNN molecular dynamics (correlation functions).

    python examples/md_ir_raman.py [--output-dir DIR] [--model PATH] [--steps 500] [--temperature 300]

A 72-atom (2x2x2) alpha-quartz cell is thermalised with Langevin dynamics (2 fs steps), then a
weakly damped Langevin production run records, every ``--interval`` steps, velocities, Born
effective charges and eps_inf (``DIR/md.traj``; BEC kept as (N,3,3)).  The IR absorption comes from
the autocorrelation of dM/dt = sum_a Z_a v_a, the Raman spectra (isotropic, anisotropic, VV, VH,
unpolarised) from the autocorrelation of alpha = V (eps_inf - 1)/(4 pi), both with a Hann window,
zero padding and the harmonic quantum correction.  Writes ``DIR/md_spectra.npz`` and
``DIR/md_ir_raman.png`` (``DIR``: ``--output-dir``, default ``runs/examples/md_ir_raman``, numbered
``-2``, ``-3``, ... when taken; a directory you name that holds these files is refused unless
``--overwrite``).  The defaults (100 + 500 steps of 2 fs, a 1 ps run: 600 evaluations
of the 72-atom cell, roughly 5-15 minutes on 2 CPU cores depending on the model size) are a
demonstration; the frequency resolution is about 33356 / max_lag[fs] cm^-1
(~80 cm^-1 for the default 400 fs correlation length).  For converged spectra run >= 10 ps
(``--steps 5000``) with ``--max-lag 2000``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary

from ase_etgnn.dynamics import thermalize
from ase_etgnn.structures import alpha_quartz  # the seed of the SiO2 data set
from ase_etgnn.spectra import DielectricRecorder, ir_spectrum_from_md, raman_spectra_from_md

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import output_dir  # noqa: E402  (examples/_output.py)

OUTPUT_FILES = ("md.traj", "md_spectra.npz", "md_ir_raman.png")


def main(argv: Optional[Sequence[str]] = None, calc=None):
    """Run the MD workflow; ``calc`` overrides ``--model``.  Returns (IR, Raman) MDSpectrum objects."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", "--out", dest="output_dir", default=None,
                    help="output directory (default runs/examples/md_ir_raman, numbered if taken)")
    ap.add_argument("--overwrite", action="store_true", help="overwrite this example's files in --output-dir")
    ap.add_argument("--model", default="sio2.pt", help="ETGNN model file or shipped model name")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--temperature", type=float, default=300.0, help="K")
    ap.add_argument("--timestep", type=float, default=2.0, help="fs")
    ap.add_argument("--equil", type=int, default=100, help="equilibration steps (friction 0.02/fs)")
    ap.add_argument("--steps", type=int, default=500, help="production steps")
    ap.add_argument("--interval", type=int, default=1, help="record every N steps")
    ap.add_argument("--friction", type=float, default=0.001, help="production friction (1/fs)")
    ap.add_argument("--max-lag", type=float, default=400.0,
                    help="correlation length (fs); resolution ~ 33356 / max_lag cm^-1")
    ap.add_argument("--pad", type=int, default=8, help="zero-padding factor of the FFT")
    ap.add_argument("--quantum-correction", default="harmonic", choices=("none", "harmonic", "standard"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    out = output_dir(args.output_dir, "md_ir_raman", OUTPUT_FILES, args.overwrite)
    if calc is None:
        from ase_etgnn import ETGNNCalculator

        calc = ETGNNCalculator(args.model, dtype=args.dtype)
    rng = np.random.default_rng(args.seed)
    atoms = alpha_quartz().repeat((2, 2, 2))
    atoms.calc = calc
    thermalize(atoms, args.temperature, rng)
    Stationary(atoms)
    t0 = time.time()
    dt = args.timestep * units.fs
    Langevin(atoms, dt, temperature_K=args.temperature, friction=0.02 / units.fs, fixcm=False,
             rng=rng).run(args.equil)
    print(f"equilibrated {args.equil} steps ({time.time() - t0:.0f} s)")
    dyn = Langevin(atoms, dt, temperature_K=args.temperature, friction=args.friction / units.fs,
                   fixcm=False, rng=rng)
    with DielectricRecorder(atoms, trajectory=out / "md.traj").attach(dyn, interval=args.interval) as rec:
        dyn.run(args.steps)
    record = rec.to_record()
    print(f"production {args.steps} steps, {len(record)} frames, T_kin = {record.temperature():.0f} K "
          f"({time.time() - t0:.0f} s)")

    ir = ir_spectrum_from_md(record, args.temperature, max_lag_fs=args.max_lag, pad_factor=args.pad,
                             quantum_correction=args.quantum_correction)
    raman = raman_spectra_from_md(record, args.temperature, max_lag_fs=args.max_lag, pad_factor=args.pad,
                                  quantum_correction=args.quantum_correction)
    np.savez(out / "md_spectra.npz", frequencies_cm1=ir.frequencies_cm1,
             ir_absorption_per_cm=ir["absorption"], **{f"raman_{k}": v for k, v in raman.spectra.items()})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = ir.frequencies_cm1
    sel = (f > 20) & (f < 1400)
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    axes[0].plot(f[sel], ir["absorption"][sel], color="C0")
    axes[0].set_ylabel(r"$\alpha(\omega) n(\omega)$ (cm$^{-1}$)")
    for name in ("unpolarized", "VV", "VH"):
        axes[1].plot(f[sel], raman[name][sel], label=name)
    axes[1].set_ylabel("Raman (A$^6$ fs)")
    axes[1].legend(fontsize=8)
    axes[1].set_xlabel("wavenumber (cm$^{-1}$)")
    axes[0].set_title(f"alpha-quartz, 72 atoms, {args.temperature:g} K, {len(record)} frames (ETGNN MD)")
    fig.tight_layout()
    fig.savefig(out / "md_ir_raman.png", dpi=150)
    plt.close(fig)
    print(f"wrote {out / 'md_spectra.npz'}, {out / 'md_ir_raman.png'}, {out / 'md.traj'}")
    return ir, raman


if __name__ == "__main__":
    main()
