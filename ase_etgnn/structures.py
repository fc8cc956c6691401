"""Crystal structures shipped with ase_etgnn.

SiO2 seeds of the data set
--------------------------
:func:`alpha_quartz` and :func:`alpha_cristobalite` are the seed structures of the SiO2 DFPT data
(``data/seeds/*.extxyz``, written by :func:`write_seed_structures`; ``etgnn dfpt seeds``).

Ideal crystals of the seven crystal systems
-------------------------------------------
:func:`ideal_crystals` (used by the symmetry tests and ``benchmarks/symmetry_success.py``).
Every structure is an *ideal* crystal: the atoms sit exactly on the Wyckoff positions of the intended
space group (:data:`IDEAL_CRYSTAL_SPACE_GROUPS`), so spglib finds that group at ``symprec=1e-5``
(checked in ``tests/test_symmetry.py``).  Lattice parameters and free coordinates are literature
values (rounded; good enough for symmetry tests, not meant as DFT-quality references):

========================  ===========  =====  ==================================================
name                      group        atoms  source of the parameters
========================  ===========  =====  ==================================================
NaCl (rocksalt)           Fm-3m  225   2      a = 5.640 A (textbook value)
GaAs (zincblende)         F-43m  216   2      a = 5.653 A (textbook value)
SrTiO3 (cubic perovskite) Pm-3m  221   5      a = 3.905 A (textbook value)
TiO2 (rutile)             P4_2/mnm 136 6      a = 4.594, c = 2.959 A, O 4f x = 0.3048 (Abrahams & Bernstein 1971)
BaTiO3 (tetragonal)       P4mm   99    5      a = 3.992, c = 4.036 A, z(Ti) = 0.482, z(O1) = 0.016,
                                              z(O2) = 0.515 (approx. Kwei et al., J. Phys. Chem. 97, 2368 (1993))
ZnO (wurtzite)            P6_3mc 186   4      a = 3.250, c = 5.207 A, u = 0.382 (Kisi & Elcombe 1989, rounded)
SiO2 (alpha-quartz)       P3_221 154   9      a = 4.916, c = 5.405 A, Si 3a x = 0.4697,
                                              O 6c (0.4135, 0.2669, 0.1191) (Levien, Prewitt & Weidner,
                                              Am. Mineral. 65, 920 (1980)); their origin is shifted by c/3
                                              from the International Tables setting used by ASE, so here Si
                                              is (x, 0, 2/3) and O z = 0.1191 + 2/3; Si-O = 1.605, 1.614 A.
Al2O3 (corundum)          R-3c   167   10     a = 4.759, c = 12.991 A (hex.), Al 12c z = 0.3522,
                                              O 18e x = 0.3064 (Finger & Hazen 1978, rounded); primitive cell
BaTiO3 (orthorhombic)     Amm2   38    5      a = 3.984, b = 5.674, c = 5.692 A (approx. Kwei et al. 1993,
                                              190 K phase); primitive cell
ZrO2 (baddeleyite)        P2_1/c 14    12     a = 5.1505, b = 5.2116, c = 5.3173 A, beta = 99.23 deg
                                              (approx. Howard, Hill & Reichert, Acta Cryst. B44, 116 (1988))
LiAlO toy (triclinic)     P-1    2     8      invented P-1 cell with generic coordinates (no real compound;
                                              shortest interatomic distance 2.09 A)
========================  ===========  =====  ==================================================

Polar and piezoelectric members: GaAs (43m, piezo only), BaTiO3 P4mm and Amm2 (polar), ZnO (polar),
alpha-quartz (32, piezo only).  Centrosymmetric: NaCl, SrTiO3, rutile, corundum, ZrO2, the P-1 toy.
Their alpha-quartz (``SiO2_alpha_quartz``, International Tables origin, c = 5.405 A) is not the data-set
seed :func:`alpha_quartz` (Levien et al. origin, c = 5.4054 A).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import spglib
from ase import Atoms
from ase.io import write
from ase.spacegroup import crystal

from .conventions import spglib_quietly

__all__ = [
    "corundum",
    "CORUNDUM_GAMMA_TO_CM1",
    "alpha_quartz",
    "alpha_cristobalite",
    "write_seed_structures",
    "IDEAL_CRYSTAL_SPACE_GROUPS",
    "ideal_crystals",
    "ideal_crystal_species",
]


# ------------------------------------------------------------------------------------ SiO2 seeds
def alpha_quartz() -> Atoms:
    """alpha-quartz (9 atoms), Levien, Prewitt & Weidner, Am. Mineral. 65, 920 (1980), ambient pressure.

    a = 4.916 A, c = 5.4054 A; Si (u, 0, 0) u = 0.4697; O (x, y, z) = (0.4135, 0.2669, 0.1191); origin
    setting with Si on the two-fold axes at z = 0, 1/3, 2/3 (spglib finds P3_221 for this cell, a along x).
    """
    a, c = 4.916, 5.4054
    u, x, y, z = 0.4697, 0.4135, 0.2669, 0.1191
    frac = [
        (u, 0, 0), (0, u, 2 / 3), (-u, -u, 1 / 3),
        (x, y, z), (-y, x - y, 2 / 3 + z), (y - x, -x, 1 / 3 + z),
        (y, x, 2 / 3 - z), (x - y, -y, -z), (-x, y - x, 1 / 3 - z),
    ]
    cell = [[a, 0.0, 0.0], [-a / 2, np.sqrt(3) / 2 * a, 0.0], [0.0, 0.0, c]]
    return Atoms("Si3O6", scaled_positions=np.mod(frac, 1.0), cell=cell, pbc=True)


def alpha_cristobalite() -> Atoms:
    """alpha-cristobalite (12 atoms), P4_12_12 (No. 92), room temperature.

    a = 4.9709 A, c = 6.9278 A; Si 4a (x, x, 0) x = 0.3003; O 8b (0.2392, 0.1044, 0.1787)
    (Downs & Palmer, Am. Mineral. 79, 9 (1994); gives Si-O 1.602-1.604 A, Si-O-Si 146.5 deg).
    """
    atoms = crystal(
        ["Si", "O"], basis=[(0.3003, 0.3003, 0.0), (0.2392, 0.1044, 0.1787)], spacegroup=92,
        cellpar=[4.9709, 4.9709, 6.9278, 90, 90, 90],
    )
    atoms.pbc = True
    return atoms


def corundum() -> Atoms:
    """Corundum alpha-Al2O3 (10-atom rhombohedral primitive cell), R-3c (No. 167), room temperature.

    Hexagonal setting a = 4.7589 A, c = 12.991 A; Al 12c (0, 0, 0.35216), O 18e (0.30624, 0, 1/4)
    (Lewis, Schwarzenbach & Flack, Acta Cryst. A38, 733 (1982); Al-O 1.855 and 1.972 A).
    """
    hexagonal = crystal(["Al", "O"], basis=[(0.0, 0.0, 0.35216), (0.30624, 0.0, 0.25)], spacegroup=167,
                        cellpar=[4.7589, 4.7589, 12.991, 90, 90, 120])  # 30 atoms
    cell = (np.asarray(hexagonal.cell), hexagonal.get_scaled_positions(), hexagonal.numbers)
    with spglib_quietly():
        lattice, frac, numbers = spglib.standardize_cell(cell, to_primitive=True, no_idealize=True, symprec=1e-5)
    return Atoms(numbers=numbers, scaled_positions=frac, cell=lattice, pbc=True)  # [10 atoms]


#: Measured room-temperature Gamma TO frequencies of sapphire by irrep (cm^-1, one per degenerate group,
#: ascending): Raman A1g, Eg (S. P. S. Porto and R. S. Krishnan, J. Chem. Phys. 47, 1009 (1967)); IR TO A2u, Eu
#: (A. S. Barker, Phys. Rev. 132, 1474 (1963)), as commonly tabulated from those papers.
CORUNDUM_GAMMA_TO_CM1 = {"A1g": (418, 645), "Eg": (378, 432, 451, 578, 751), "A2u": (400, 583),
                         "Eu": (385, 442, 569, 635)}


def write_seed_structures(directory: str | os.PathLike = "data/seeds") -> List[Path]:
    """Write ``alpha_quartz.extxyz``, ``alpha_cristobalite.extxyz`` and ``corundum.extxyz`` to ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, atoms in (("alpha_quartz", alpha_quartz()), ("alpha_cristobalite", alpha_cristobalite()),
                        ("corundum", corundum())):
        p = d / f"{name}.extxyz"
        clean = Atoms(atoms.get_chemical_symbols(), positions=atoms.get_positions(), cell=atoms.cell, pbc=True)
        write(str(p), clean, format="extxyz")
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------------ ideal crystals
#: name -> (space-group number, crystal system) that spglib must find at symprec = 1e-5.
IDEAL_CRYSTAL_SPACE_GROUPS: Dict[str, Tuple[int, str]] = {
    "NaCl_rocksalt": (225, "cubic"),
    "GaAs_zincblende": (216, "cubic"),
    "SrTiO3_cubic": (221, "cubic"),
    "TiO2_rutile": (136, "tetragonal"),
    "BaTiO3_P4mm": (99, "tetragonal"),
    "ZnO_wurtzite": (186, "hexagonal"),
    "SiO2_alpha_quartz": (154, "trigonal"),
    "Al2O3_corundum": (167, "trigonal"),
    "BaTiO3_Amm2": (38, "orthorhombic"),
    "ZrO2_baddeleyite": (14, "monoclinic"),
    "LiAlO_triclinic_toy": (2, "triclinic"),
}


def ideal_crystals() -> Dict[str, Atoms]:
    """Fresh copies of the ideal crystals, keyed by name (see the module docstring)."""
    c = {}
    c["NaCl_rocksalt"] = crystal(["Na", "Cl"], [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225,
                                 cellpar=[5.64, 5.64, 5.64, 90, 90, 90], primitive_cell=True)
    c["GaAs_zincblende"] = crystal(["Ga", "As"], [(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=216,
                                   cellpar=[5.653, 5.653, 5.653, 90, 90, 90], primitive_cell=True)
    c["SrTiO3_cubic"] = crystal(["Sr", "Ti", "O"], [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
                                spacegroup=221, cellpar=[3.905, 3.905, 3.905, 90, 90, 90])
    c["TiO2_rutile"] = crystal(["Ti", "O"], [(0, 0, 0), (0.3048, 0.3048, 0)], spacegroup=136,
                               cellpar=[4.594, 4.594, 2.959, 90, 90, 90])
    c["BaTiO3_P4mm"] = crystal(["Ba", "Ti", "O", "O"],
                               [(0, 0, 0), (0.5, 0.5, 0.482), (0.5, 0.5, 0.016), (0.5, 0, 0.515)],
                               spacegroup=99, cellpar=[3.992, 3.992, 4.036, 90, 90, 90])
    c["ZnO_wurtzite"] = crystal(["Zn", "O"], [(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.382)], spacegroup=186,
                                cellpar=[3.25, 3.25, 5.207, 90, 90, 120])
    c["SiO2_alpha_quartz"] = crystal(["Si", "O"], [(0.4697, 0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)],
                                     spacegroup=154, cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    c["Al2O3_corundum"] = crystal(["Al", "O"], [(0, 0, 0.3522), (0.3064, 0, 0.25)], spacegroup=167,
                                  cellpar=[4.759, 4.759, 12.991, 90, 90, 120], primitive_cell=True)
    c["BaTiO3_Amm2"] = crystal(["Ba", "Ti", "O", "O"],
                               [(0, 0, 0), (0.5, 0, 0.517), (0, 0, 0.489), (0.5, 0.2561, 0.2343)],
                               spacegroup=38, cellpar=[3.984, 5.674, 5.692, 90, 90, 90], primitive_cell=True)
    c["ZrO2_baddeleyite"] = crystal(["Zr", "O", "O"],
                                    [(0.2758, 0.0411, 0.2082), (0.0703, 0.3359, 0.3406),
                                     (0.4423, 0.7549, 0.4789)],
                                    spacegroup=14, cellpar=[5.1505, 5.2116, 5.3173, 90, 99.23, 90])
    c["LiAlO_triclinic_toy"] = crystal(["Li", "Al", "O", "O"],
                                       [(0.18, 0.90, 0.89), (0.18, 0.35, 0.68),
                                        (0.24, 0.84, 0.51), (0.65, 0.46, 0.81)],
                                       spacegroup=2, cellpar=[4.1, 4.7, 5.3, 78.0, 85.0, 95.0])
    for name, atoms in c.items():
        atoms.info["name"] = name
        atoms.pbc = True
    return c


def ideal_crystal_species() -> Tuple[str, ...]:
    """Sorted element symbols appearing in :func:`ideal_crystals` (for building a model)."""
    return tuple(sorted({s for a in ideal_crystals().values() for s in a.get_chemical_symbols()}))
