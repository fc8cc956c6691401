r"""Active learning: pick the most uncertain, mutually distinct frames of trajectories for DFPT labelling.

One round of the loop::

    etgnn explore data/seeds/alpha_quartz.extxyz data/seeds/alpha_cristobalite.extxyz --model sio2.pt \
        --directory al-1/md                      # the model's own MD: 300/600/900 K, strains -3/0/+3 %
    etgnn select al-1/md/*.traj --models c0.pt c1.pt c2.pt c3.pt --n 20 --output al-1/selected.extxyz
    python -m ase_etgnn.dfpt generate --seeds al-1/selected.extxyz --n-structures 20 \
        --rms 0 0 --strain-max 0 --tag al-1 --ph  # labels each selected frame once, unperturbed
    # append the records, fine-tune the committee members, repeat with --tag al-2

Score: every frame is scored by the committee spread (:class:`ase_etgnn.committee.CommitteeCalculator`):
the largest per-atom std of the forces (eV/A) or of the Born charges (e), or the std of a structure
property (``dielectric_tensor``, ``energy``). The frames are taken greedily in decreasing score; a frame is
kept when its descriptor distance to every frame kept so far (and to every ``exclude`` structure, e.g. the
training set) is at least ``min_distance``, until ``n`` frames are kept or the score falls below ``min_std``.

Descriptor: for every ordered species pair (centre ``a``, neighbour ``b``), the distribution of the distances
from each ``a`` atom to its ``n_neighbors`` nearest ``b`` atoms (periodic images included), sampled at
``n_quantiles`` quantiles. The distance between two frames is the RMS over species pairs of the
Wasserstein-2 distance between these distributions (the RMS difference of their quantile functions), in A.
Why this one: it is invariant to rotations, translations, the order of the atoms and the choice of
supercell (the distributions are per atom); a fixed number of neighbours, not a cutoff, keeps it continuous
(no pair jumps in or out); it is exactly 0 for a repeated frame and reads as a length: a uniform strain
``s`` moves it by ``s`` times the RMS neighbour distance (1 % -> 0.035 A for quartz, k = 12). Measured on
the shipped model's Langevin MD of 72-atom quartz (frames every 20 fs): consecutive frames are 0.018 A
(300 K) / 0.022 A (900 K) apart, frames 100 fs or more apart 0.024 / 0.031 A, frames and the ideal crystal
0.07 / 0.11 A; so the default ``min_distance`` of 0.02 A drops repeats and most correlated neighbours in time
and keeps decorrelated frames. It needs no model (the committee's node features would tie it to one
member's training) and costs one neighbour list per frame (~50 ms for 72 atoms). Frames of different
composition are always distinct.

Output: ``OUTPUT``, one extxyz with all selected frames: the DFPT driver takes every frame of a seed file as
a seed and gives structure ``i`` seed ``i % n_seeds``, so ``--seeds OUTPUT --n-structures K --rms 0 0
--strain-max 0`` labels every selected frame exactly once, unchanged. Provenance in ``atoms.info``:
``select_source`` (trajectory file), ``select_frame`` (frame index in it), ``select_score`` (property
scored), ``select_std`` (its score, eV/A or e or as the property), ``select_rank`` (0 = most uncertain).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms

from .calculator import ETGNNCalculator
from .committee import committee_from_files
from .conventions import atomic_write
from .records import iter_records

__all__ = [
    "SelectionConfig",
    "Candidate",
    "SCORES",
    "pair_distance_descriptor",
    "descriptor_distance",
    "frame_score",
    "read_frames",
    "score_frames",
    "select_distinct",
    "write_selection",
    "select_frames",
    "explore",
    "register_cli",
    "main",
]

#: properties a frame can be scored by: per-atom stds are reduced by their maximum over atoms
SCORES = ("forces", "born_effective_charges", "dielectric_tensor", "energy")

Descriptor = Tuple[Tuple[Tuple[str, float], ...], Dict[Tuple[int, int], np.ndarray]]


@dataclass(frozen=True)
class SelectionConfig:
    """Settings of one selection.

    Attributes:
        n: number of frames to select (at most).
        score: committee property scored (:data:`SCORES`).
        min_distance: minimum descriptor distance between selected frames (and to ``exclude``), A.
        min_std: frames scoring below this are never selected (units of ``score``).
        n_neighbors: nearest neighbours of each species per atom in the descriptor.
        n_quantiles: quantiles of each pair-distance distribution.
        stride: score every ``stride``-th frame of each trajectory.
    """

    n: int
    score: str = "forces"
    min_distance: float = 0.02
    min_std: float = 0.0
    n_neighbors: int = 12
    n_quantiles: int = 64
    stride: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SelectionConfig.n must be >= 1, got {self.n}")
        if self.score not in SCORES:
            raise ValueError(f"SelectionConfig.score must be one of {SCORES}, got {self.score!r}")
        if self.min_distance < 0 or self.min_std < 0:
            raise ValueError("SelectionConfig: min_distance and min_std must be >= 0")
        if self.n_neighbors < 1 or self.n_quantiles < 1 or self.stride < 1:
            raise ValueError("SelectionConfig: n_neighbors, n_quantiles and stride must be >= 1")


@dataclass(frozen=True)
class Candidate:
    """One frame of a trajectory with its committee score."""

    source: str
    frame: int
    atoms: Atoms = field(repr=False, compare=False)
    std: float = float("nan")


# ------------------------------------------------------------------------------------------ descriptor
def pair_distance_descriptor(atoms: Atoms, n_neighbors: int = 12, n_quantiles: int = 64) -> Descriptor:
    """Composition and, per ordered species pair (centre ``a``, neighbour ``b``), ``n_quantiles`` quantiles (A)
    of the distances from every ``a`` atom to its ``n_neighbors`` nearest ``b`` atoms (module docstring)."""
    from ase.neighborlist import neighbor_list

    numbers = atoms.numbers
    species, counts = np.unique(numbers, return_counts=True)
    composition = tuple((int(z), round(float(c) / len(numbers), 12)) for z, c in zip(species, counts))
    volume_per_atom = abs(atoms.get_volume()) / len(atoms) if np.all(atoms.pbc) else 10.0
    cutoff = 1.5 * (3 * volume_per_atom * n_neighbors * len(numbers) / counts.min() / (4 * np.pi)) ** (1 / 3)
    while True:  # a sphere holding n_neighbors of the rarest species, grown until it does
        i, j, d = neighbor_list("ijd", atoms, cutoff)
        per = np.zeros((len(numbers), len(species)), dtype=int)  # neighbours of each atom per species
        np.add.at(per, (i, np.searchsorted(species, numbers[j])), 1)
        if per.min() >= n_neighbors:
            break
        if not np.all(atoms.pbc) and cutoff > 1e3:
            raise ValueError(f"pair_distance_descriptor: fewer than {n_neighbors} neighbours of some species")
        cutoff *= 1.5
    order = np.lexsort((d, numbers[j], i))  # by centre, neighbour species, distance
    i, j, d = i[order], numbers[j][order], d[order]
    start = np.searchsorted(i * (len(species) + 1) + np.searchsorted(species, j),
                            np.arange(len(numbers))[:, None] * (len(species) + 1) + np.arange(len(species)))
    q = (np.arange(n_quantiles) + 0.5) / n_quantiles
    out = {}
    for ia, a in enumerate(species):
        centres = np.flatnonzero(numbers == a)
        for ib, b in enumerate(species):
            first = start[centres, ib][:, None] + np.arange(n_neighbors)  # (N_a, k)
            out[(int(a), int(b))] = np.quantile(d[first].ravel(), q, method="inverted_cdf")
    return composition, out


def descriptor_distance(d1: Descriptor, d2: Descriptor) -> float:
    """RMS over species pairs of the Wasserstein-2 distance of the nearest-neighbour distance distributions,
    A; ``inf`` for frames of other compositions (or descriptors of other sizes)."""
    (c1, q1), (c2, q2) = d1, d2
    if c1 != c2 or q1.keys() != q2.keys() or any(len(q1[k]) != len(q2[k]) for k in q1):
        return float("inf")
    return float(np.sqrt(np.mean([np.mean((q1[k] - q2[k]) ** 2) for k in q1])))


# ------------------------------------------------------------------------------------------ scoring
def frame_score(calc, atoms: Atoms, score: str = "forces") -> float:
    """Committee spread of ``score`` for ``atoms``: max over atoms of the per-atom std, or the structure std."""
    std = calc.get_property(score + "_std", atoms)
    return float(np.max(std))


def read_frames(paths: Iterable[str], stride: int = 1) -> Iterator[Tuple[str, int, Atoms]]:
    """``(path, frame index, atoms)`` for every ``stride``-th frame of every ASE-readable file
    (``.traj``, ``.extxyz``, ...); the index counts all frames of the file."""
    from ase.io import iread

    for path in paths:
        for k, atoms in enumerate(iread(str(path), index=slice(None, None, stride))):
            yield str(path), k * stride, atoms


def score_frames(calc, frames: Iterable[Tuple[str, int, Atoms]], score: str = "forces") -> List[Candidate]:
    """A :class:`Candidate` per frame, scored by the committee ``calc`` (:func:`frame_score`)."""
    out = []
    for source, index, atoms in frames:
        atoms = atoms.copy()
        atoms.calc = None
        out.append(Candidate(source, index, atoms, frame_score(calc, atoms, score)))
    return out


def select_distinct(candidates: Sequence[Candidate], n: int, min_distance: float, min_std: float = 0.0,
                    exclude: Sequence[Atoms] = (), n_neighbors: int = 12, n_quantiles: int = 64) -> List[Candidate]:
    """Greedy selection: the highest-scoring candidates (score >= ``min_std``), each at least ``min_distance``
    (A, :func:`descriptor_distance`) from every one selected before it and from every ``exclude`` structure."""
    kept: List[Descriptor] = [pair_distance_descriptor(a, n_neighbors, n_quantiles) for a in exclude]
    order = sorted(range(len(candidates)), key=lambda k: -candidates[k].std)  # stable: file order on ties
    chosen: List[Candidate] = []
    for k in order:
        c = candidates[k]
        if len(chosen) >= n or not c.std >= min_std:  # NaN scores never qualify
            break
        desc = pair_distance_descriptor(c.atoms, n_neighbors, n_quantiles)
        if all(descriptor_distance(desc, other) >= min_distance for other in kept):
            chosen.append(c)
            kept.append(desc)
    return chosen


# ------------------------------------------------------------------------------------------ output
def write_selection(selected: Sequence[Candidate], output, score: str = "forces",
                    overwrite: bool = False) -> Path:
    """Write ``output`` (all frames, extxyz; the DFPT driver's seed file).

    The frames are written bare (symbols, positions, cell, pbc; no velocities, no calculator results) with
    their provenance in ``atoms.info`` (module docstring). Returns ``output``.
    """
    from ase.io import write

    output = Path(output)
    if not selected:
        raise ValueError("no frames to write")
    if output.suffix != ".extxyz":
        raise ValueError(f"selection output must end in .extxyz, got {str(output)!r}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; choose another output or overwrite")
    images = []
    for rank, c in enumerate(selected):
        a = Atoms(c.atoms.numbers, positions=c.atoms.positions, cell=c.atoms.cell, pbc=c.atoms.pbc)
        a.info.update(select_source=c.source, select_frame=int(c.frame), select_score=score,
                      select_std=float(c.std), select_rank=rank)
        images.append(a)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda tmp: write(tmp, images, format="extxyz"))
    return output


def select_frames(trajectories: Sequence[str], calc, config: SelectionConfig,
                  exclude: Sequence[Atoms] = ()) -> List[Candidate]:
    """Score every ``config.stride``-th frame of ``trajectories`` with the committee ``calc`` and select."""
    candidates = score_frames(calc, read_frames(trajectories, config.stride), config.score)
    return select_distinct(candidates, config.n, config.min_distance, config.min_std, exclude, config.n_neighbors,
                           config.n_quantiles)


# ------------------------------------------------------------------------------------------ exploration
def explore(atoms: Atoms, calc, directory, temperatures: Sequence[float] = (300.0, 600.0, 900.0),
            strains: Sequence[float] = (-0.03, 0.0, 0.03), steps: int = 2000, interval: int = 20,
            timestep_fs: float = 1.0, friction_per_fs: float = 0.01, seed: int = 0,
            name: str = "md") -> List[Path]:
    """The model's own Langevin MD, one run per (temperature, strain): candidate trajectories for selection.

    Each run starts from ``atoms`` with the cell (and atoms) scaled isotropically by ``1 + strain`` and
    Maxwell-Boltzmann velocities at the temperature (K), runs ``steps`` steps of ``timestep_fs`` fs with
    friction ``friction_per_fs`` (1/fs) and writes every ``interval``-th frame to
    ``directory/{name}_T{T}K_{strain:+.3f}.traj``. ``calc`` drives the MD (one member is cheaper than the
    committee and is the model whose own MD is sampled); ``seed`` makes the runs reproducible.
    Returns the trajectory files.
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.io.trajectory import Trajectory
    from ase.md.langevin import Langevin

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (temp, strain) in enumerate((t, s) for t in temperatures for s in strains):
        rng = np.random.default_rng([seed, k])
        a = atoms.copy()
        a.set_cell(np.asarray(atoms.cell) * (1.0 + strain), scale_atoms=True)
        a.calc = calc
        a.set_constraint(FixCom())  # ASE's recommended replacement of Langevin(fixcm=True)
        p = rng.standard_normal((len(a), 3)) * np.sqrt(a.get_masses() * units.kB * temp)[:, None]  # Maxwell-Boltzmann
        a.set_momenta(p - p.mean(axis=0), apply_constraint=False)  # no drift
        path = directory / f"{name}_T{temp:g}K_{strain:+.3f}.traj"
        dyn = Langevin(a, timestep_fs * units.fs, temperature_K=temp, friction=friction_per_fs / units.fs,
                       fixcm=False, rng=rng)
        with Trajectory(str(path), "w", a) as traj:
            dyn.attach(traj.write, interval=interval)
            dyn.run(steps)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------ CLI
def _read_structures(paths: Sequence[str]) -> List[Atoms]:
    """Structures of ASE-readable files (all frames) and HDF5 data sets (``ase_etgnn.records``)."""
    from ase.io import read

    out: List[Atoms] = []
    for p in paths:
        if str(p).endswith((".h5", ".hdf5")):
            out += [atoms for atoms, _, _ in iter_records(p, properties=())]
        else:
            out += read(str(p), index=":")
    return out


def _cmd_select(args: argparse.Namespace) -> int:
    config = SelectionConfig(n=args.n, score=args.score, min_distance=args.min_distance, min_std=args.min_std,
                             n_neighbors=args.neighbors, stride=args.stride)
    calc = committee_from_files(args.models, device=args.device, dtype=args.dtype, symmetrize=False)
    exclude = _read_structures(args.exclude or [])
    selected = select_frames(args.trajectories, calc, config, exclude)
    unit = {"forces": "eV/A", "born_effective_charges": "e"}.get(config.score, "")
    if not selected:
        print(f"no frame qualifies (max {config.score} std >= {config.min_std} {unit}, distinct from "
              f"{len(exclude)} excluded structures): nothing written")
        return 1
    output = write_selection(selected, args.output, config.score, overwrite=args.force)
    print(f"{output}: {len(selected)} frames (score: max {config.score} std {unit}; min distance "
          f"{config.min_distance} A; {len(exclude)} structures excluded)")
    for rank, c in enumerate(selected):
        print(f"  {rank:4d}  {c.std:10.4f}  {c.source}@{c.frame}")
    print("label them (each once, unperturbed):\n  python -m ase_etgnn.dfpt generate --seeds "
          f"{output} --n-structures {len(selected)} --rms 0 0 --strain-max 0 --tag TAG --ph")
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    from ase.io import read


    calc = ETGNNCalculator(args.model, device=args.device, dtype=args.dtype, symmetrize=False)
    for structure in args.structures:
        paths = explore(read(structure), calc, args.directory, temperatures=args.temperatures,
                        strains=args.strains, steps=args.steps, interval=args.interval,
                        timestep_fs=args.timestep, seed=args.seed, name=Path(structure).stem)
        for p in paths:
            print(p)
    return 0


_SELECT_DESCRIPTION = """\
Pick the most uncertain, mutually distinct frames of trajectories for DFPT labelling: score each frame
by the committee spread, take them greedily in decreasing score, skip frames closer than MIN_DISTANCE
(A, Wasserstein distance of nearest-neighbour distances) to one already taken or to an --exclude structure.

  etgnn select al-1/md/*.traj --models c0.pt c1.pt c2.pt c3.pt --n 20 --output al-1/selected.extxyz \\
      --exclude data/sio2_dfpt.h5

Writes OUTPUT (extxyz, every selected frame) for
  python -m ase_etgnn.dfpt generate --seeds al-1/selected.extxyz --n-structures 20 \\
      --rms 0 0 --strain-max 0 --tag al-1 --ph
"""


def _add_select_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("select", help="pick uncertain, distinct frames of trajectories for DFPT labelling",
                              description=_SELECT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trajectories", nargs="+", help="ASE-readable trajectories (.traj, .extxyz)")
    p.add_argument("--models", nargs="+", required=True, help="committee model files (at least 2)")
    p.add_argument("--n", type=int, required=True, help="frames to select (at most)")
    p.add_argument("--score", choices=SCORES, default="forces",
                   help="committee std scored: max per atom for forces / born_effective_charges (default forces)")
    p.add_argument("--min-distance", type=float, default=SelectionConfig.min_distance,
                   help=f"A, between selected frames (default {SelectionConfig.min_distance})")
    p.add_argument("--min-std", type=float, default=0.0, help="skip frames scoring below this (default 0)")
    p.add_argument("--neighbors", type=int, default=SelectionConfig.n_neighbors,
                   help=f"nearest neighbours per species in the descriptor (default {SelectionConfig.n_neighbors})")
    p.add_argument("--stride", type=int, default=1, help="score every STRIDE-th frame (default 1)")
    p.add_argument("--exclude", nargs="+", metavar="FILE",
                   help="structures already labelled (extxyz/traj/... or an HDF5 data set): select away from them")
    p.add_argument("--output", default="selected.extxyz", help="extxyz to write (default selected.extxyz)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.set_defaults(func=_cmd_select)
    return p


def _add_explore_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("explore", help="the model's own Langevin MD at several temperatures and strains "
                                              "(candidate trajectories for select)")
    p.add_argument("structures", nargs="+", help="start structures (one MD set each)")
    p.add_argument("--model", required=True, help="model file driving the MD (e.g. one committee member)")
    p.add_argument("--directory", required=True, help="folder for the trajectories")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0, 900.0], help="K")
    p.add_argument("--strains", type=float, nargs="+", default=[-0.03, 0.0, 0.03],
                   help="isotropic linear strains (default -0.03 0 0.03)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--interval", type=int, default=20, help="write every INTERVAL-th step")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.set_defaults(func=_cmd_explore)
    return p


def register_cli(subparsers) -> None:
    """Add ``select`` and ``explore`` to an argparse sub-parser collection (``etgnn select``, ``etgnn explore``)."""
    _add_select_parser(subparsers)
    _add_explore_parser(subparsers)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ase_etgnn.select {select,explore} ...``; exit status 1 when no frame qualifies (the loop has
    converged at this ``--min-std``), 2 on bad settings or files."""
    from .cli import main as etgnn  # the package CLI registers this module's commands (import cycle otherwise)

    return etgnn(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
