"""Quantum ESPRESSO (pw.x / ph.x) input writers and output parsers for the SiO2 protocol.

Pure functions, no QE run here (see :mod:`ase_etgnn.dfpt` for the driver). The protocol is described in
``docs/sio2_protocol.md`` (version :data:`PROTOCOL_VERSION`): LDA (PZ), ``Si.pz-vbc.UPF`` +
``O.pz-rrkjus.UPF``, ``ecutwfc = 40`` / ``ecutrho = 320`` Ry, ``conv_thr = 1e-9``, unshifted Monkhorst-Pack
grid with ``n_i = max(1, ceil(|b_i| / 0.12 1/A))``; ph.x at Gamma with ``epsil``/``zeu`` only.

Units returned by the parsers (project registry, :mod:`ase_etgnn.properties`): energy eV, forces eV/A,
stress eV/A^3 in ASE's sign convention (positive = tensile, i.e. minus QE's printed stress), Born
effective charges in e with ``Z[a, i, j]`` = row ``E_i``, column ``j`` of ph.x's "d Force / dE" block
(as printed, no acoustic-sum-rule correction), dielectric tensor dimensionless (eps_inf).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple, Union

import numpy as np
from ase import Atoms
from ase.units import Bohr, Ry

__all__ = [
    "PROTOCOL_NAME",
    "PROTOCOL_VERSION",
    "PROTOCOL_PW",
    "PROTOCOL_PH",
    "PSEUDOPOTENTIALS",
    "PSEUDO_MD5",
    "MASSES",
    "DEFAULT_PSEUDO_DIR",
    "kpoint_grid",
    "format_pw_input",
    "write_pw_input",
    "format_ph_input",
    "write_ph_input",
    "parse_pw_output",
    "parse_ph_output",
    "read_pw_input",
    "read_qe_outputs",
]

PROTOCOL_NAME = "sio2-lda-dfpt"
PROTOCOL_VERSION = 1
DEFAULT_PSEUDO_DIR = "/usr/share/espresso/pseudo"

#: pw.x settings of the protocol (Ry for cutoffs, Ry for conv_thr).
PROTOCOL_PW: Mapping[str, object] = {
    "ecutwfc": 40,
    "ecutrho": 320,
    "conv_thr": "1e-9",
    "kspacing": 0.12,  # 1/A, without 2 pi
}
#: ph.x settings of the protocol.
PROTOCOL_PH: Mapping[str, object] = {"tr2_ph": "1e-12", "trans": False, "epsil": True, "zeu": True}
PSEUDOPOTENTIALS: Mapping[str, str] = {"Si": "Si.pz-vbc.UPF", "O": "O.pz-rrkjus.UPF", "Al": "Al.pz-vbc.UPF"}
PSEUDO_MD5: Mapping[str, str] = {
    "Si.pz-vbc.UPF": "a974d1b8727157e37210f3f86afb6210",
    "O.pz-rrkjus.UPF": "c5abe3fd05217cb51bb0c605dcba6842",
    "Al.pz-vbc.UPF": "69dcd8cd7cc1bedf536afd524f174f6a",
}
#: masses (amu) written in ATOMIC_SPECIES, as in the worked example (irrelevant for trans=.false.).
MASSES: Mapping[str, float] = {"Si": 28.086, "O": 15.999, "Al": 26.982}

PathLike = Union[str, os.PathLike]
_FLOAT = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eEdD][-+]?\d+)?"


# --------------------------------------------------------------------------------------------- inputs
def kpoint_grid(atoms: Atoms, spacing: float = 0.12) -> Tuple[int, int, int]:
    """Unshifted Monkhorst-Pack grid: ``n_i = max(1, ceil(|b_i| / spacing))``.

    ``b_i`` are the rows of ``atoms.cell.reciprocal()`` in 1/A, *without* the 2 pi factor; ``spacing``
    in 1/A. A tiny tolerance (1e-8) protects against ``ceil`` of round-off (e.g. 2.0000000001).
    """
    if spacing <= 0:
        raise ValueError(f"kpoint spacing must be positive, got {spacing}")
    if atoms.cell.rank != 3:
        raise ValueError("kpoint_grid needs a full 3D cell (atoms.cell has rank < 3)")
    b = np.linalg.norm(np.asarray(atoms.cell.reciprocal()), axis=1)  # [3] 1/A
    return tuple(max(1, int(math.ceil(x / spacing - 1e-8))) for x in b)  # type: ignore[return-value]


def _fmt(x: float) -> str:
    """Fixed 10-decimal format without a ``-0.0000000000``."""
    s = f"{float(x):.10f}"
    return "0.0000000000" if s == "-0.0000000000" else s


def _species_order(atoms: Atoms) -> list:
    order: list = []
    for s in atoms.get_chemical_symbols():
        if s not in order:
            order.append(s)
    return order


def format_pw_input(
    atoms: Atoms,
    prefix: str,
    outdir: str,
    pseudo_dir: str = DEFAULT_PSEUDO_DIR,
    kpts: Sequence[int] | None = None,
    pseudopotentials: Mapping[str, str] | None = None,
    masses: Mapping[str, float] | None = None,
    ecutwfc: float = 40,
    ecutrho: float = 320,
    conv_thr: str = "1e-9",
    kspacing: float = 0.12,
) -> str:
    """pw.x scf input text of the protocol (cell and positions in angstrom, ``ibrav = 0``)."""
    pseudos = dict(PSEUDOPOTENTIALS if pseudopotentials is None else pseudopotentials)
    mass = dict(MASSES if masses is None else masses)
    species = _species_order(atoms)
    for s in species:
        if s not in pseudos:
            raise ValueError(f"no pseudopotential for element {s!r} (protocol has {sorted(pseudos)})")
        if s not in mass:
            raise ValueError(f"no mass for element {s!r} (protocol has {sorted(mass)})")
    if atoms.cell.rank != 3 or not all(atoms.pbc):
        raise ValueError("pw.x input needs a periodic structure with a full 3D cell")
    k = tuple(kpoint_grid(atoms, kspacing) if kpts is None else kpts)
    if len(k) != 3:
        raise ValueError(f"kpts must have 3 entries, got {k}")

    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else repr(float(x))

    lines = [
        "&control",
        f" calculation='scf', prefix='{prefix}', outdir='{outdir}', pseudo_dir='{pseudo_dir}', "
        "tprnfor=.true., tstress=.true.",
        "/",
        "&system",
        f" ibrav=0, nat={len(atoms)}, ntyp={len(species)}, ecutwfc={num(ecutwfc)}, ecutrho={num(ecutrho)}",
        "/",
        "&electrons",
        f" conv_thr={conv_thr}",
        "/",
        "ATOMIC_SPECIES",
    ]
    lines += [f"{s} {mass[s]} {pseudos[s]}" for s in species]
    lines.append("CELL_PARAMETERS angstrom")
    lines += [" ".join(_fmt(x) for x in row) for row in np.asarray(atoms.cell)]
    lines.append("ATOMIC_POSITIONS angstrom")
    lines += [
        f"{s} " + " ".join(_fmt(x) for x in p)
        for s, p in zip(atoms.get_chemical_symbols(), atoms.get_positions())
    ]
    lines += ["K_POINTS automatic", f"{k[0]} {k[1]} {k[2]} 0 0 0"]
    return "\n".join(lines) + "\n"


def write_pw_input(
    atoms: Atoms,
    path: PathLike,
    prefix: str,
    outdir: str,
    pseudo_dir: str = DEFAULT_PSEUDO_DIR,
    **kwargs,
) -> Path:
    """Write the protocol's pw.x scf input to ``path`` (see :func:`format_pw_input`); returns the path."""
    path = Path(path)
    path.write_text(format_pw_input(atoms, prefix, outdir, pseudo_dir, **kwargs))
    return path


def format_ph_input(prefix: str, outdir: str, fildyn: str, tr2_ph: str = "1e-12") -> str:
    """ph.x input text: Gamma only, electric-field response (``epsil``, ``zeu``), no phonons."""
    return (
        "ph\n&inputph\n"
        f" prefix='{prefix}', outdir='{outdir}', fildyn='{fildyn}', tr2_ph={tr2_ph}, "
        "trans=.false., epsil=.true., zeu=.true.\n/\n0.0 0.0 0.0\n"
    )


def write_ph_input(path: PathLike, prefix: str, outdir: str, fildyn: str, tr2_ph: str = "1e-12") -> Path:
    """Write the protocol's ph.x input to ``path``; returns the path."""
    path = Path(path)
    path.write_text(format_ph_input(prefix, outdir, fildyn, tr2_ph))
    return path


def read_pw_input(path: PathLike) -> Atoms:
    """Structure of a pw.x input (ASE's ``espresso-in`` reader), pbc on."""
    from ase.io import read

    try:
        atoms = read(str(path), format="espresso-in")
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: cannot read pw.x input ({type(err).__name__}: {err})") from err
    atoms.pbc = True
    return atoms


# -------------------------------------------------------------------------------------------- outputs
def _load(text_or_path: Union[str, os.PathLike]) -> Tuple[str, str]:
    """Return (text, name) for a path or for output text (text has newlines, a path does not)."""
    if isinstance(text_or_path, os.PathLike) or (
        isinstance(text_or_path, str) and "\n" not in text_or_path
    ):
        p = Path(text_or_path)
        if not p.is_file():
            raise ValueError(f"{p}: QE output file not found")
        return p.read_text(errors="replace"), str(p)
    return str(text_or_path), "<text>"


def _qe_version(text: str) -> str | None:
    m = re.search(r"Program \w+ v\.(\S+)", text)
    return m.group(1) if m else None


def _floats(s: str) -> list:
    return [float(x.replace("d", "e").replace("D", "e")) for x in re.findall(_FLOAT, s)]


def parse_pw_output(text_or_path: Union[str, os.PathLike]) -> Dict[str, object]:
    """Parse a pw.x scf output (last SCF in the file).

    Returns a dict with ``energy`` (eV), ``forces`` [N,3] (eV/A), ``stress`` [3,3] (eV/A^3, ASE sign),
    ``atoms`` (structure from the output, ~1e-6 A precision), ``qe_version``, ``pseudo_md5``
    {file name: md5}, ``n_scf_iterations``, ``wall_time_s``.

    Raises ValueError (naming the file and what is missing) for a non-converged SCF, a pw.x error, or a
    truncated output (missing energy, forces, stress or "JOB DONE").
    """
    text, name = _load(text_or_path)
    if "Program PWSCF" not in text:
        raise ValueError(f"{name}: not a pw.x output ('Program PWSCF' header missing)")
    if "%%%%%%%%%%%%%%" in text and re.search(r"Error in routine", text):
        m = re.search(r"Error in routine\s+(.*?)\n\s*(.*?)\n", text)
        msg = f"{m.group(1).strip()}: {m.group(2).strip()}" if m else "unknown"
        raise ValueError(f"{name}: pw.x stopped with an error ({msg})")
    if "convergence NOT achieved" in text:
        raise ValueError(f"{name}: SCF convergence NOT achieved; the record must not be used")

    # structure: alat (bohr), crystal axes (alat), positions (alat)
    m = re.search(r"lattice parameter \(alat\)\s*=\s*(" + _FLOAT + r")\s*a\.u\.", text)
    if not m:
        raise ValueError(f"{name}: truncated pw.x output (no 'lattice parameter (alat)')")
    alat = float(m.group(1)) * Bohr  # A
    axes = re.findall(r"a\(\d\) = \(\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s*\)", text)
    if len(axes) < 3:
        raise ValueError(f"{name}: truncated pw.x output (crystal axes missing)")
    cell = np.array(axes[:3], dtype=float) * alat  # [3,3] A
    m = re.search(r"number of atoms/cell\s*=\s*(\d+)", text)
    if not m:
        raise ValueError(f"{name}: truncated pw.x output (no 'number of atoms/cell')")
    nat = int(m.group(1))
    pos_re = re.compile(
        r"^\s*\d+\s+(\S+)\s+tau\(\s*\d+\)\s*=\s*\(\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")",
        re.M,
    )
    idx = text.find("positions (alat units)")
    pos = pos_re.findall(text, idx) if idx >= 0 else []
    if len(pos) < nat:
        raise ValueError(f"{name}: truncated pw.x output (atomic positions missing)")
    symbols = [re.sub(r"\d+$", "", p[0]) for p in pos[:nat]]
    positions = np.array([p[1:] for p in pos[:nat]], dtype=float) * alat  # [N,3] A
    atoms = Atoms(symbols=symbols, positions=positions, cell=cell, pbc=True)

    energies = re.findall(r"^!\s+total energy\s*=\s*(" + _FLOAT + r")\s*Ry", text, re.M)
    if not energies:
        raise ValueError(f"{name}: truncated pw.x output (no converged '!    total energy' line)")
    energy = float(energies[-1]) * Ry  # eV

    fidx = text.rfind("Forces acting on atoms")
    if fidx < 0:
        raise ValueError(f"{name}: pw.x output has no forces ('Forces acting on atoms'; tprnfor=.true.?)")
    f_re = re.compile(
        r"^\s*atom\s+(\d+)\s+type\s+\d+\s+force\s*=\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")",
        re.M,
    )
    f_rows = f_re.findall(text, fidx)[:nat]
    if len(f_rows) < nat or [int(r[0]) for r in f_rows] != list(range(1, nat + 1)):
        raise ValueError(f"{name}: truncated pw.x output (forces block has fewer than {nat} atoms)")
    forces = np.array([r[1:] for r in f_rows], dtype=float) * (Ry / Bohr)  # [N,3] eV/A

    sidx = text.rfind("total   stress")
    if sidx < 0:
        raise ValueError(f"{name}: pw.x output has no stress ('total   stress'; tstress=.true.?)")
    s_lines = text[sidx:].splitlines()[1:4]
    s_rows = [_floats(line) for line in s_lines]
    if len(s_rows) < 3 or any(len(r) < 6 for r in s_rows):
        raise ValueError(f"{name}: truncated pw.x output (stress block incomplete)")
    stress_qe = np.array([r[:3] for r in s_rows], dtype=float)  # [3,3] Ry/bohr^3, pressure-positive
    stress = -stress_qe * (Ry / Bohr**3)  # [3,3] eV/A^3, ASE sign (tensile positive)

    if "JOB DONE" not in text:
        raise ValueError(f"{name}: truncated pw.x output ('JOB DONE' missing: pw.x did not finish)")

    md5 = dict(
        re.findall(r"PseudoPot\. #\s*\d+ for \S+\s+read from file:\s*\n\s*\S*?([^/\s]+)\s*\n\s*MD5 check sum:\s*(\w+)", text)
    )
    it = re.findall(r"convergence has been achieved in\s+(\d+)\s+iterations", text)
    wall = re.findall(r"PWSCF\s*:.*CPU\s+(.*?)\s+WALL", text)
    return {
        "energy": energy,
        "forces": forces,
        "stress": stress,
        "atoms": atoms,
        "qe_version": _qe_version(text),
        "pseudo_md5": md5,
        "n_scf_iterations": int(it[-1]) if it else None,
        "wall_time_s": _qe_time(wall[-1]) if wall else None,
    }


def _qe_time(s: str) -> float | None:
    """QE time strings like ``51.31s``, ``9m 1.68s``, ``1h 2m`` -> seconds."""
    total, found = 0.0, False
    for val, unit in re.findall(r"(" + _FLOAT + r")\s*([hms])", s):
        total += float(val) * {"h": 3600.0, "m": 60.0, "s": 1.0}[unit]
        found = True
    return total if found else None


def parse_ph_output(text_or_path: Union[str, os.PathLike]) -> Dict[str, object]:
    """Parse a ph.x (Gamma, ``epsil``/``zeu``) output.

    Returns ``dielectric_tensor`` [3,3] (eps_inf, from "Dielectric constant in cartesian axis"),
    ``born_effective_charges`` [N,3,3] (e; ``Z[a, i, j]`` = row ``E_i``, column ``j`` of
    "Effective charges (d Force / dE) in cartesian axis", as printed), ``symbols``, ``qe_version``,
    ``wall_time_s``. Raises ValueError naming the file and the missing block for truncated/failed runs.
    """
    text, name = _load(text_or_path)
    if "Program PHONON" not in text:
        raise ValueError(f"{name}: not a ph.x output ('Program PHONON' header missing)")
    m = re.search(r"Error in routine\s+(.*?)\n\s*(.*?)\n", text)
    if m:
        raise ValueError(f"{name}: ph.x stopped with an error ({m.group(1).strip()}: {m.group(2).strip()})")
    if re.search(r"No convergence has been achieved", text):
        raise ValueError(f"{name}: ph.x linear response did not converge")

    didx = text.rfind("Dielectric constant in cartesian axis")
    if didx < 0:
        raise ValueError(f"{name}: ph.x output has no 'Dielectric constant in cartesian axis' block")
    row_re = re.compile(r"^\s*\(\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s*\)", re.M)
    block = text[didx:].splitlines()[1:6]
    rows = [row_re.match(line) for line in block]
    rows = [r for r in rows if r]
    if len(rows) < 3:
        raise ValueError(f"{name}: truncated ph.x output (dielectric tensor has fewer than 3 rows)")
    eps = np.array([r.groups() for r in rows[:3]], dtype=float)  # [3,3]

    zidx = text.rfind("Effective charges (d Force / dE) in cartesian axis")
    if zidx < 0:
        raise ValueError(
            f"{name}: ph.x output has no 'Effective charges (d Force / dE) in cartesian axis' block"
        )
    m = re.search(r"number of atoms/cell\s*=\s*(\d+)", text)
    nat = int(m.group(1)) if m else None
    zlines = text[zidx:].splitlines()[1:]
    zrow = re.compile(
        r"^\s*E([xyz])\s*\(\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s*\)"
    )
    atom_re = re.compile(r"^\s*atom\s+(\d+)\s+(\S+)")
    z: list = []
    symbols: list = []
    current: list = []
    for line in zlines:
        ma = atom_re.match(line)
        if ma:
            if current:
                z.append(current)
            current = []
            symbols.append(ma.group(2))
            if int(ma.group(1)) != len(symbols):
                raise ValueError(f"{name}: corrupt effective-charge block (atom numbering)")
            continue
        mr = zrow.match(line)
        if mr:
            if "xyz"[len(current)] != mr.group(1):
                raise ValueError(f"{name}: corrupt effective-charge block (rows not Ex, Ey, Ez)")
            current.append([float(x) for x in mr.groups()[1:]])
            continue
        if line.strip() and symbols:
            break
    if current:
        z.append(current)
    if not z or any(len(b) != 3 for b in z) or (nat is not None and len(z) != nat):
        raise ValueError(
            f"{name}: truncated ph.x output (effective charges for {len(z)} complete atoms, expected {nat})"
        )
    bec = np.array(z, dtype=float)  # [N,3,3]: Z[a, i(field E_i), j(displacement)]
    if "JOB DONE" not in text:
        raise ValueError(f"{name}: truncated ph.x output ('JOB DONE' missing: ph.x did not finish)")
    wall = re.findall(r"PHONON\s*:.*CPU\s+(.*?)\s+WALL", text)
    return {
        "dielectric_tensor": eps,
        "born_effective_charges": bec,
        "symbols": symbols,
        "qe_version": _qe_version(text),
        "wall_time_s": _qe_time(wall[-1]) if wall else None,
    }


def read_qe_outputs(
    pw_out: Union[str, os.PathLike],
    ph_out: Union[str, os.PathLike, None] = None,
    pw_in: Union[str, os.PathLike, None] = None,
) -> Tuple[Atoms, Dict[str, np.ndarray]]:
    """Structure and registry targets of one pw.x (+ optional ph.x) calculation.

    The structure comes from ``pw_in`` when given (exact), otherwise from the pw.x output (~1e-6 A).
    Targets: ``energy`` (eV, 0-d array), ``forces`` [N,3] eV/A, ``stress`` [3,3] eV/A^3 ASE sign, and
    with ``ph_out`` also ``born_effective_charges`` [N,3,3] e and ``dielectric_tensor`` [3,3].
    """
    pw = parse_pw_output(pw_out)
    atoms_out: Atoms = pw["atoms"]  # type: ignore[assignment]
    if pw_in is not None:
        atoms = read_pw_input(pw_in)
        if atoms.get_chemical_symbols() != atoms_out.get_chemical_symbols() or not np.allclose(
            atoms.get_positions(), atoms_out.get_positions(), atol=1e-4
        ):
            raise ValueError(f"{pw_in} and {pw_out}: input and output structures differ")
    else:
        atoms = atoms_out
    targets: Dict[str, np.ndarray] = {
        "energy": np.asarray(pw["energy"], dtype=float),
        "forces": np.asarray(pw["forces"], dtype=float),
        "stress": np.asarray(pw["stress"], dtype=float),
    }
    if ph_out is not None:
        ph = parse_ph_output(ph_out)
        if list(ph["symbols"]) != atoms.get_chemical_symbols():
            raise ValueError(f"{ph_out}: atoms of the ph.x output do not match {pw_out}")
        targets["born_effective_charges"] = np.asarray(ph["born_effective_charges"], dtype=float)
        targets["dielectric_tensor"] = np.asarray(ph["dielectric_tensor"], dtype=float)
    return atoms, targets
