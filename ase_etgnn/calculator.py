"""``ETGNNCalculator``: the ASE calculator front door of ase_etgnn.

    from ase_etgnn import ETGNNCalculator
    atoms.calc = ETGNNCalculator("sio2.pt")
    atoms.get_forces()                                          # eV/A, direct forces (Eq. 3)
    atoms.calc.get_property("born_effective_charges", atoms)    # (N, 3, 3), e, Z[a, i, j] = dF_j/dE_i
    atoms.calc.get_property("dielectric_tensor", atoms)         # (3, 3), eps_inf

Tensors on demand: asking for forces (or energy) runs the trunk and only the heads forces and energy need;
asking afterwards for a tensor on the same geometry reuses the cached trunk and runs only the missing heads.
MD that records tensors every N steps therefore pays for them only on those steps.

Settings follow ASE's parameter convention: ``calc.set(symmetrize=False)`` (or ``calc.symmetrize = False``)
changes a setting and discards results computed with the old one; ``calc.todict()`` lists the settings.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from .composed import ComposedState
from .conventions import resolve_device, resolve_dtype
from .graph import Graph, atoms_to_graph, check_overlaps, collate_graphs, prune_graph
from .model import ModelView, TrunkState
from .model_file import load_model
from .properties import FORCES_CONSERVATIVE, output_spec
from .runtime import configure_allocator
from .symmetry import CrystalSymmetry

__all__ = ["ETGNNCalculator", "resolve_model_path", "shipped_models", "default_num_threads"]


#: properties computed together with forces (the trunk's edge part plus the energy head's node features)
FORCE_GROUP = ("energy", "free_energy", "forces", "stress")


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
    """A model file: the path as given if it exists; a bare file name (no directory part, e.g. ``"sio2.pt"``)
    that is not a file here names a model shipped in ``models/``. A path with a directory part that does
    not exist is an error (never silently replaced by a shipped model of the same name)."""
    p = Path(name)
    if p.is_file():
        return p
    if p.exists():
        raise IsADirectoryError(f"model {str(name)!r} is not a file")
    if p.parent == Path("."):
        shipped = _models_dir() / p.name
        if shipped.is_file():
            return shipped
        raise FileNotFoundError(
            f"model {str(name)!r} is neither a file here nor a shipped model; shipped models: {shipped_models()}"
        )
    raise FileNotFoundError(f"model file {str(name)!r} does not exist (shipped models, by bare name: "
                            f"{shipped_models()})")


def default_num_threads() -> int:
    """Torch threads a calculator uses by default: ``OMP_NUM_THREADS`` when set, else the number of cores this
    process may run on (its CPU affinity, e.g. under ``taskset`` or a batch scheduler)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env.split(",")[0])
            if n >= 1:
                return n
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _setting(name: str, cast) -> property:
    """A calculator setting read from ``self.parameters`` and written through ``set()`` (ASE convention)."""
    return property(lambda self: cast(self.parameters[name]), lambda self, value: self.set(**{name: cast(value)}),
                    doc=f"The ``{name}`` setting; assigning it calls ``set()``, which discards stale results.")


class ETGNNCalculator(Calculator):
    """ASE calculator for an ETGNN model.

    Args:
        model: path to a model file, the bare name of a file shipped in ``models/`` (e.g. ``"sio2.pt"``), or a
            loaded ``ETGNN`` or ``ComposedModel`` (properties from several members, ``ase_etgnn.composed``).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ... .
        dtype: ``"float32"`` (default) or ``"float64"``.
        forces: ``"direct"`` (Eq. 3, the forces head) or ``"conservative"`` (``-dE/dr`` of the energy head by
            autograd, plus stress for periodic cells). ``None`` (default): ``"direct"`` when the model has a
            forces head, else ``"conservative"``.
        symmetrize: project results onto the invariant subspace of the crystal's space group (spglib,
            ``ase_etgnn.symmetry``; Neumann's principle exact on ideal crystals). Structures without
            symmetry at ``symprec`` (MD snapshots) are returned unchanged; the symmetry is cached while
            numbers, positions and cell are unchanged. The BEC sum rule is applied only if the model's
            ``bec_asr`` is on. Default True.
        symprec: symmetry tolerance, A.
        skin: neighbour-list skin, A: the graph is reused while no atom moved more than ``skin / 2``.
        num_threads: torch threads used inside this calculator's calls (set for the call, restored after);
            ``None`` = :func:`default_num_threads` (``OMP_NUM_THREADS``, else the CPU affinity).
    """

    default_parameters: dict = {
        "device": "auto",
        "dtype": "float32",
        "forces": None,
        "symmetrize": True,
        "symprec": 1e-5,
        "skin": 0.5,
        "num_threads": None,
    }

    def __init__(
        self,
        model: Union[str, os.PathLike, ModelView],
        device: str = "auto",
        dtype: str = "float32",
        forces: Optional[str] = None,
        symmetrize: bool = True,
        symprec: float = 1e-5,
        skin: float = 0.5,
        num_threads: Optional[int] = None,
        **kwargs,
    ) -> None:
        if isinstance(model, (list, tuple)):
            raise TypeError(f"ETGNNCalculator takes one model, got a {type(model).__name__} of {len(model)}: "
                            "for the mean and spread of a committee use ase_etgnn.CommitteeCalculator(models)")
        if isinstance(model, ModelView):  # an ETGNN or a ComposedModel
            self.model_path: Optional[Path] = None
            net = model
        else:
            self.model_path = resolve_model_path(model)
            net = load_model(self.model_path)
        self._net = net
        self.model: ModelView = net
        self._graph: Optional[Graph] = None
        self._graph_ref_positions: Optional[np.ndarray] = None
        self._state: Optional[Union[TrunkState, ComposedState]] = None
        self._symmetry = None
        self._symmetry_key = None
        self._warned: set = set()
        self.n_graph_builds = 0
        self.n_trunk_passes = 0
        super().__init__(device=device, dtype=dtype, forces=forces, symmetrize=symmetrize, symprec=symprec,
                         skin=skin, num_threads=num_threads, **kwargs)
        self._apply()  # set() applies only changes from the defaults
        # large temporaries stay mapped between steps (no page-fault storm); glibc only, idempotent,
        # opt out with ASE_ETGNN_NO_MALLOPT=1 (see ase_etgnn.runtime)
        self.allocator = configure_allocator()

    # ------------------------------------------------------------------------------------------------
    # parameters (ASE convention)
    # ------------------------------------------------------------------------------------------------
    def set(self, **kwargs) -> dict:
        """Change settings (see the class docstring); results computed with other settings are discarded."""
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        if unknown:
            raise TypeError(f"unknown ETGNNCalculator parameter(s) {unknown}; known: {sorted(self.default_parameters)}")
        new = {**self.parameters, **kwargs} if self.parameters is not None else dict(kwargs)
        self._validate(new)
        changed = super().set(**kwargs)
        if changed:
            self._apply(drop_graph="skin" in changed)
            if set(changed) - {"num_threads"}:  # every other setting changes the results
                self.reset()
        return changed

    def _validate(self, p: dict) -> None:
        resolve_dtype(p.get("dtype"))
        resolve_device(p.get("device", "auto"))
        heads = set(self._net.heads)
        forces = p.get("forces")
        if forces not in (None, "direct", "conservative"):
            raise ValueError(f"forces must be 'direct', 'conservative' or None, got {forces!r}")
        if forces == "direct" and "forces" not in heads:
            raise ValueError(f"forces='direct' needs a model with a forces head; this model has {sorted(heads)} "
                             "(use forces='conservative')")
        if forces == "conservative" and "energy" not in heads:
            raise ValueError(f"forces='conservative' needs a model with an energy head; this model has "
                             f"{sorted(heads)}")
        if float(p.get("skin", 0.0)) < 0:
            raise ValueError(f"skin must be >= 0, got {p.get('skin')}")
        if float(p.get("symprec", 1e-5)) <= 0:
            raise ValueError(f"symprec must be > 0, got {p.get('symprec')}")
        n = p.get("num_threads")
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {n!r}")

    def _apply(self, drop_graph: bool = True) -> None:
        """Bring model, caches and the property list in line with ``self.parameters``."""
        p = self.parameters
        self.device = resolve_device(p["device"])
        self.dtype = resolve_dtype(p["dtype"])
        self.model = self._net.to(device=self.device, dtype=self.dtype).eval()
        heads = set(self.model.heads)
        self.forces_mode = p["forces"] or ("direct" if "forces" in heads else "conservative")
        props = [h for h in self.model.heads if h != "energy"]
        if "energy" in heads:
            props += ["energy", "free_energy"]
        if self.forces_mode == "conservative":
            props += ["forces", "stress"]
        elif "energy" in heads:
            props += [FORCES_CONSERVATIVE]
        self.implemented_properties = sorted(set(props))
        if drop_graph:  # built with another skin
            self._graph = None
        self._state = None

    symmetrize = _setting("symmetrize", bool)
    symprec = _setting("symprec", float)
    skin = _setting("skin", float)

    @property
    def num_threads(self) -> int:
        """Torch threads used inside this calculator's calls."""
        n = self.parameters["num_threads"]
        return default_num_threads() if n is None else int(n)

    @num_threads.setter
    def num_threads(self, value: Optional[int]) -> None:
        self.set(num_threads=value)

    def todict(self, skip_default: bool = True) -> dict:
        """Settings (ASE convention), plus the model file when the calculator was made from one."""
        d = super().todict(skip_default=skip_default)
        if self.model_path is not None:
            d["model"] = str(self.model_path)
        return d

    def reset(self) -> None:
        super().reset()
        self._state = None

    # ------------------------------------------------------------------------------------------------
    def get_property(self, name, atoms=None, allow_calculation=True):
        if name == "stress" and "stress" not in self.implemented_properties and "energy" in self.model.heads:
            raise PropertyNotImplementedError(
                "stress needs conservative forces: ETGNNCalculator(..., forces='conservative') or "
                "calc.set(forces='conservative') (direct forces, Eq. 3, have no stress)"
            )
        return super().get_property(name, atoms, allow_calculation)

    def _check_atoms(self, atoms) -> None:
        if len(atoms) == 0:
            raise ValueError("cannot compute properties of an empty Atoms object")
        known = set(self.model.species)
        unknown = sorted({chemical_symbols[z] for z in atoms.numbers} - known)
        if unknown:
            raise ValueError(f"element(s) {unknown} not known to this model; it was trained for "
                             f"{list(self.model.species)}")
        if not np.all(atoms.pbc) and "pbc" not in self._warned:
            self._warned.add("pbc")
            warnings.warn(
                f"atoms.pbc = {atoms.pbc.tolist()}: this model was trained on periodic crystals; a cell that is "
                "not periodic in all directions (e.g. read from a plain .xyz, or a molecule) is outside its "
                "training domain and its forces and tensors are not validated there",
                stacklevel=3,
            )

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
                    pruned = prune_graph(g, pos)
                    check_overlaps(pruned)  # raises < 1e-3 A, warns < 0.5 A, also when the graph is reused
                    return pruned
        cfg = self.model.config
        g = atoms_to_graph(atoms, cfg.cutoff, cfg.effective_triplet_cutoff, skin=self.skin)
        self.n_graph_builds += 1
        self._graph, self._graph_ref_positions = g, atoms.positions.copy()
        pruned = prune_graph(g, atoms.positions)
        check_overlaps(pruned)
        return pruned

    def _get_symmetry(self, atoms):
        key = (atoms.numbers.tobytes(), atoms.positions.tobytes(), atoms.cell.array.tobytes(), atoms.pbc.tobytes())
        if self._symmetry_key != key:
            self._symmetry = CrystalSymmetry.from_atoms(atoms, symprec=self.symprec)
            self._symmetry_key = key
        return self._symmetry

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """Run with ``num_threads`` torch threads and restore the process setting afterwards."""
        want, before = self.num_threads, torch.get_num_threads()
        if want != before:
            torch.set_num_threads(want)
        try:
            yield
        finally:
            if want != before:
                torch.set_num_threads(before)

    def _heads_for(self, properties) -> list:
        """Model heads needed for ``properties``: forces and energy go together, tensors only when asked."""
        heads = []
        for p in properties:
            if p in FORCE_GROUP or p == FORCES_CONSERVATIVE:
                heads += [h for h in ("forces", "energy") if h in self.model.heads]
            else:
                heads.append(p)
        if self.forces_mode == "conservative":
            heads = [h for h in heads if h != "forces"]
        return list(dict.fromkeys(heads))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Fill ``self.results`` with ``properties`` (and what comes at no extra cost with them).

        A new geometry runs the trunk once; later calls on the same geometry (``system_changes`` empty) run
        only the heads whose results are missing, on the cached trunk state.
        """
        for p in properties:
            if p not in self.implemented_properties:
                raise PropertyNotImplementedError(
                    f"property {p!r} is not available from this model (heads: {list(self.model.heads)}, "
                    f"forces={self.forces_mode!r})"
                )
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if system_changes or self._state is None:
            self.results = {}
            self._state = None
        missing = [h for h in self._heads_for(properties) if h not in self.results]
        autograd = FORCES_CONSERVATIVE in properties and FORCES_CONSERVATIVE not in self.results
        if self.forces_mode == "conservative" and "energy" in missing:
            autograd = True  # energy, forces (and stress) come from one autograd pass
        if not missing and not autograd:
            return
        with self._threads():
            out = self._run(atoms, missing, autograd)
        results = {}
        for name, value in out.items():
            v = value.detach().cpu().numpy().astype(np.float64)
            results[name] = v if output_spec(name).per_atom else v[0]  # one structure in the batch
        for name in self._net_force_free(results):
            results[name] -= results[name].mean(axis=0)  # [N, 3]: float32 round-off of sum_a F_a = 0, in float64
        if self.symmetrize:
            sym = self._get_symmetry(atoms)
            results = sym.symmetrize(results, asr=self.model.config.bec_asr)
        if "energy" in results:
            results["energy"] = float(results["energy"])
            results["free_energy"] = results["energy"]
        if "stress" in results:
            results["stress"] = full_3x3_to_voigt_6_stress(results["stress"])  # xx yy zz yz xz xy
        self.results.update(results)

    def _net_force_free(self, results: dict) -> list:
        """Force results whose sum over atoms is zero by construction: -dE/dr (translation invariance of E), and
        direct forces of a model with ``zero_net_force``. The calculator removes the float32 round-off of that
        sum in float64, so that MD conserves total momentum over long runs."""
        direct_exact = self.model.config.zero_net_force and self.forces_mode == "direct"
        return [n for n in ("forces", FORCES_CONSERVATIVE)
                if n in results and (n == FORCES_CONSERVATIVE or direct_exact or self.forces_mode == "conservative")]

    def _run(self, atoms, heads: list, autograd: bool) -> dict:
        """Torch outputs of ``heads`` for ``atoms``, reusing the trunk state of this geometry when there is one.

        ``autograd``: run a new trunk pass with gradients (conservative forces, stress); in direct mode its
        ``-dE/dr`` is returned as ``forces_conservative`` next to the direct ``forces`` (model ``forces="both"``).
        """
        if self._state is None or autograd:
            if self._state is None:
                self._check_atoms(atoms)
            batch = collate_graphs([self._get_graph(atoms)], dtype=self.dtype, device=self.device)
            self.n_trunk_passes += 1
            if autograd:
                direct = self.forces_mode == "direct"
                # stress is a result of conservative mode only
                out, self._state = self.model.conservative(
                    batch, stress=not direct and bool(np.all(atoms.pbc)), heads=[h for h in heads if h != "energy"],
                    recompute=True, forces="both" if direct else "conservative")
                return out
            with torch.no_grad():
                self._state = self.model.trunk(batch)
        heads = [h for h in heads if h in self.model.heads]
        with torch.no_grad():
            return self.model.predict(self._state, heads)
