"""``ETGNNCalculator``: the ASE calculator front door of ase_etgnn.

    from ase_etgnn import ETGNNCalculator
    atoms.calc = ETGNNCalculator("sio2.pt")
    atoms.get_forces()                                          # eV/A, direct forces (Eq. 3)
    atoms.calc.get_property("born_effective_charges", atoms)    # (N, 3, 3), e, Z[a, i, j] = dF_j/dE_i
    atoms.calc.get_property("dielectric_tensor", atoms)         # (3, 3), eps_inf

One forward pass fills every property the model has; ASE's ``check_state`` caching means asking for
several properties of unchanged atoms costs one pass.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols

from .graph import Graph, atoms_to_graph, collate_graphs, prune_graph
from .io import load_model
from .model import ETGNN
from .properties import PROPERTIES

__all__ = ["ETGNNCalculator", "resolve_model_path", "shipped_models"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32, torch.float64: torch.float64}

#: atoms closer than this (A) are rejected: unit edge vectors are undefined
MIN_DISTANCE = 1e-3


def _models_dir() -> Path:
    """Folder of the shipped model files (works for editable and regular installs)."""
    try:
        from importlib.resources import files

        return Path(str(files("ase_etgnn.models")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - source checkout without install
        return Path(__file__).resolve().parent.parent / "models"


def shipped_models() -> list:
    """Names of the model files shipped in ``models/``."""
    d = _models_dir()
    return sorted(p.name for p in d.glob("*.pt")) if d.is_dir() else []


def resolve_model_path(name: Union[str, os.PathLike]) -> Path:
    """A path as given if it exists, else a file of that name shipped in ``models/``."""
    p = Path(name)
    if p.is_file():
        return p
    shipped = _models_dir() / p.name
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"model {str(name)!r} is neither a file nor a shipped model; shipped models: {shipped_models()}"
    )


class ETGNNCalculator(Calculator):
    """ASE calculator for an ETGNN model.

    Args:
        model: path to a model file, the name of a file shipped in ``models/`` (e.g. ``"sio2.pt"``), or a
            loaded ``ETGNN``.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ... .
        dtype: ``"float32"`` (default) or ``"float64"`` (or the torch dtypes).
        forces: ``"direct"`` (Eq. 3, the forces head; default) or ``"conservative"`` (``-dE/dr`` of the
            energy head by autograd, plus stress for periodic cells).
        symmetrize: project results onto the invariant subspace of the crystal's space group (spglib,
            ``ase_etgnn.symmetry``; Neumann's principle exact on ideal crystals). Structures without
            symmetry at ``symprec`` (MD snapshots) are returned unchanged; the symmetry is cached while
            numbers, positions and cell are unchanged. The BEC sum rule is applied only if the model's
            ``bec_asr`` is on. Default True.
        symprec: symmetry tolerance, A.
        skin: neighbour-list skin, A: the graph is reused while no atom moved more than ``skin / 2``.
    """

    default_parameters: dict = {}

    def __init__(
        self,
        model: Union[str, os.PathLike, ETGNN],
        device: str = "auto",
        dtype: Union[str, torch.dtype, None] = None,
        forces: str = "direct",
        symmetrize: bool = True,
        symprec: float = 1e-5,
        skin: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if dtype is None:
            dtype = "float32"
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = _DTYPES[dtype]
        if isinstance(model, ETGNN):
            self.model_path = None
            net = model
        else:
            self.model_path = resolve_model_path(model)
            net = load_model(self.model_path)
        self.model = net.to(device=self.device, dtype=self.dtype).eval()
        if forces not in ("direct", "conservative"):
            raise ValueError(f"forces must be 'direct' or 'conservative', got {forces!r}")
        heads = set(self.model.heads)
        if forces == "direct" and "forces" not in heads and "energy" in heads:
            forces = "conservative"  # an energy-only model still gives forces
        if forces == "conservative" and "energy" not in heads:
            raise ValueError("forces='conservative' needs a model with an energy head; this model has "
                             f"{sorted(heads)}")
        self.forces_mode = forces
        self.symmetrize = bool(symmetrize)
        self.symprec = float(symprec)
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.skin = float(skin)
        props = [h for h in self.model.heads if h != "energy"]
        if "energy" in heads:
            props += ["energy", "free_energy"]
        if forces == "conservative":
            props += ["forces", "stress"]
        self.implemented_properties = sorted(set(props))
        self._graph: Optional[Graph] = None
        self._graph_ref_positions: Optional[np.ndarray] = None
        self._symmetry = None
        self._symmetry_key = None
        self.n_graph_builds = 0

    # ------------------------------------------------------------------------------------------------
    def _check_atoms(self, atoms) -> None:
        if len(atoms) == 0:
            raise ValueError("cannot compute properties of an empty Atoms object")
        known = set(self.model.species)
        unknown = sorted({chemical_symbols[z] for z in atoms.numbers} - known)
        if unknown:
            raise ValueError(f"element(s) {unknown} not known to this model; it was trained for "
                             f"{list(self.model.species)}")

    def _get_graph(self, atoms) -> Graph:
        """The graph at the current positions: the cached skin graph pruned to the cutoffs, rebuilt when
        an atom moved more than ``skin / 2`` or numbers, cell or pbc changed (Verlet list)."""
        g = self._graph
        if g is not None and (
            len(g.numbers) == len(atoms)
            and np.array_equal(g.numbers, atoms.numbers)
            and np.array_equal(g.pbc, atoms.pbc)
            and np.array_equal(g.cell, atoms.cell.array)
        ):
            pos = atoms.positions
            if np.all(np.isfinite(pos)):
                disp = np.linalg.norm(pos - self._graph_ref_positions, axis=1).max()
                if disp <= 0.5 * self.skin:
                    return prune_graph(g, pos)
        cfg = self.model.config
        g = atoms_to_graph(atoms, cfg.cutoff, cfg.effective_triplet_cutoff, skin=self.skin)
        self._check_distances(atoms, g)
        self.n_graph_builds += 1
        self._graph, self._graph_ref_positions = g, atoms.positions.copy()
        return prune_graph(g, atoms.positions)

    @staticmethod
    def _check_distances(atoms, g: Graph) -> None:
        if g.n_edges == 0:
            return
        vec = g.positions[g.edge_dst] - g.positions[g.edge_src] + g.edge_shift @ g.cell
        d = np.linalg.norm(vec, axis=1)
        bad = np.nonzero(d < MIN_DISTANCE)[0]
        if len(bad):
            e = bad[0]
            raise ValueError(
                f"atoms {g.edge_src[e]} and {g.edge_dst[e]} overlap (distance {d[e]:.2e} A < {MIN_DISTANCE} A)"
            )

    def _get_symmetry(self, atoms):
        from .symmetry import CrystalSymmetry

        key = (atoms.numbers.tobytes(), atoms.positions.tobytes(), atoms.cell.array.tobytes(), atoms.pbc.tobytes())
        if self._symmetry_key != key:
            self._symmetry = CrystalSymmetry.from_atoms(atoms, symprec=self.symprec)
            self._symmetry_key = key
        return self._symmetry

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Run one forward pass and fill ``self.results`` with every property the model has."""
        for p in properties:
            if p not in self.implemented_properties:
                raise PropertyNotImplementedError(
                    f"property {p!r} is not available from this model (heads: {list(self.model.heads)})"
                )
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check_atoms(atoms)
        graph = self._get_graph(atoms)
        batch = collate_graphs([graph], dtype=self.dtype, device=self.device)
        if self.forces_mode == "conservative":
            out = self.model.energy_and_derivatives(batch, stress=bool(np.all(atoms.pbc)))
            out = {k: v.detach() for k, v in out.items()}
            out["forces"] = out.pop("forces_conservative")
        else:
            with torch.no_grad():
                out = self.model(batch)
        results = {}
        for name, value in out.items():
            v = value.detach().cpu().numpy().astype(np.float64)
            results[name] = v if PROPERTIES[name].per_atom else v[0]  # one structure in the batch
        if self.symmetrize:
            results = self._get_symmetry(atoms).symmetrize(results, asr=self.model.config.bec_asr)
        if "energy" in results:
            results["energy"] = float(results["energy"])
            results["free_energy"] = results["energy"]
        if "stress" in results:
            s = results["stress"]  # 3x3 -> Voigt (xx, yy, zz, yz, xz, xy), ASE's layout
            results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        self.results = results
