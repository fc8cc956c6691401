"""IR and Raman spectra of alpha-quartz at Gamma with ETGNN (phonopy + Born charges + eps_inf).

    python examples/quartz_ir_raman.py [--output-dir DIR] [--model PATH] [--relax] [--supercell 2 2 2]

Needs the ``phonons`` extra (``pip install -e ".[phonons]"``: phonopy, matplotlib).

Steps: build alpha-quartz (``ase_etgnn.structures.alpha_quartz``, the seed of the SiO2 training data:
P3_221, a = 4.916, c = 5.4054 A; Si 3a x = 0.4697, O 6c (0.4135, 0.2669, 0.1191), Levien, Prewitt &
Weidner, Am. Mineral. 65, 920 (1980)), optionally relax the positions with the
symmetry fixed, compute force constants with phonopy on a supercell, Born charges and eps_inf for
the NAC, then IR intensities (km/mol), Raman activities (A^4/amu) and LO-TO splittings at Gamma.

The table has one row per irrep group (degenerate modes summed).  LO modes are paired with their TO
group in order of frequency, each LO between its TO and the next polar TO (``ase_etgnn.spectra.lo_to_pairs``,
as measured TO/LO pairs are listed): only modes with a dipole along q have an LO partner (q || z: A2;
q || x: one of each E pair); A1 modes are non-polar and never have one ("-").

The phonon dispersion along Gamma-M-K-Gamma-A is checked for imaginary frequencies (< -5 cm^-1) and a
warning names the q-points.  At the experimental positions (the default) one acoustic branch of the
shipped model is imaginary over the whole path (2x2x2 supercell: -65 cm^-1 at A, -45 cm^-1 on Gamma-M):
the positions are not a minimum of the model.  With ``--relax`` only a -7 cm^-1 pocket within 0.03
reciprocal units of Gamma remains.  The Gamma modes are fine at both geometries (``models/sio2.md``).

Writes into ``--output-dir`` (default ``runs/examples/quartz_ir_raman``; an existing default is not
overwritten, the run goes to ``...-2``; a directory you name is refused if it holds these files, unless
``--overwrite``): ``quartz_modes.json`` (the 27 Gamma modes: frequency_cm1, ir_intensity_km_mol,
raman_activity_A4_amu, irrep, ...), ``quartz_summary.json`` (eps_inf, eps_0, LO/TO pairs, imaginary
q-points), ``quartz_ir_raman.png`` (stick and Lorentzian-broadened spectra) and
``quartz_dispersion.png``.  About a minute on 2 CPU cores (2 x 27 + 10 force/dielectric evaluations of
9- and 72-atom cells).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

from ase_etgnn.structures import alpha_quartz  # the seed of the SiO2 data set

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gamma_ir_raman import Crystal, run  # noqa: E402  (examples/_gamma_ir_raman.py)

QUARTZ = Crystal(
    name="quartz", title="alpha-quartz", structure=alpha_quartz, model="sio2.pt",
    # reduced coordinates of the high-symmetry points of the hexagonal cell (a1, a2 at 120 degrees)
    path=(("Gamma", (0.0, 0.0, 0.0)), ("M", (0.5, 0.0, 0.0)), ("K", (1 / 3, 1 / 3, 0.0)),
          ("Gamma", (0.0, 0.0, 0.0)), ("A", (0.0, 0.0, 0.5))),
    imaginary_hint=("the structure is not at a minimum of this model (at the experimental positions one acoustic "
                    "branch of the shipped model is imaginary; try --relax, see models/sio2.md), or, for a few "
                    "cm^-1 close to Gamma only, finite-displacement noise (larger --supercell)"))


def main(argv: Optional[Sequence[str]] = None, calc=None) -> List[dict]:
    """Run the workflow; ``calc`` overrides ``--model`` (any ASE calculator with forces, BEC, eps)."""
    return run(QUARTZ, __doc__, argv, calc)


if __name__ == "__main__":
    main()
