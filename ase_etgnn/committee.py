"""``CommitteeCalculator``: the mean and the spread of several ETGNN models, as one ASE calculator.

    from ase_etgnn import CommitteeCalculator
    atoms.calc = CommitteeCalculator(["seed0.pt", "seed1.pt", "seed2.pt", "seed3.pt"], device="cpu")
    atoms.get_forces()                                          # eV/A, committee mean, (N, 3)
    atoms.calc.get_property("forces_std", atoms)                # eV/A, per atom, (N,)
    atoms.calc.get_property("born_effective_charges_std", atoms)  # e, per atom, (N,)
    atoms.calc.get_property("dielectric_tensor_std", atoms)     # 1, scalar

A committee (Musil et al., J. Chem. Theory Comput. 15, 906 (2019)) is several models trained on the same
data that differ in what the data do not fix: the initial weights (seeds), the order of the batches, a
subsample of the data. Where the data constrain the answer they agree; away from it they spread, and the
spread estimates the error. A cheaper equivalent is a valid committee too, as long as its members differ:
e.g. one trained trunk whose heads are fine-tuned from different seeds (each saved as its own model file),
which costs one short fine-tune per member instead of a full training run. Members that are equal give a
spread of exactly zero, which estimates nothing.

Results are the committee mean under the members' names (``energy``, ``forces``, ``born_effective_charges``,
``dielectric_tensor``, ...) plus ``<name>_std``: the sample standard deviation over members (``ddof=1``)
of every component, reduced to

* per-atom properties (forces, Born charges): the norm of the component std of each atom, shape (N,);
  for forces ``sqrt(sum_c std(F_ac)^2)`` (eV/A), for Born charges the Frobenius norm (e);
* structure properties (energy, dielectric and piezoelectric tensors, stress): the norm of the std over
  all components of the result as returned (Frobenius for tensors, the 6 Voigt components for stress).

These norms are the expected norm of the error vector when the committee is calibrated (the per-component
errors have the members' variance), so they compare directly with ``|F_pred - F_ref|`` per atom or
``||eps_pred - eps_ref||_F`` (see :mod:`ase_etgnn.uncertainty`). ``std_scale`` (per property, from
:func:`ase_etgnn.uncertainty.fit_std_scale` on a validation set) multiplies them.

Tensors on demand, as for ``ETGNNCalculator``: each member is asked only for the property requested
(``member.get_property(name, atoms)``), so asking for forces runs no tensor head of any member; asking
afterwards for a tensor on the same geometry reuses each member's cached trunk.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .calculator import ETGNNCalculator
from .model import ModelView
from .properties import PROPERTIES, loss_target

__all__ = ["CommitteeCalculator", "committee_from_files", "STD_SUFFIX"]

#: suffix of the committee spread of a property: ``forces`` -> ``forces_std``
STD_SUFFIX = "_std"

ModelLike = Union[str, os.PathLike, ModelView, ETGNNCalculator]


def _is_per_atom(name: str) -> bool:
    """Per-atom results have the atoms on their first axis (registry, plus the conservative forces)."""
    spec = PROPERTIES.get(loss_target(name))  # forces_conservative: as forces
    return spec is not None and spec.per_atom


def _label(member: ETGNNCalculator, i: int) -> str:
    return f"member {i}" + (f" ({member.model_path})" if member.model_path is not None else "")


class CommitteeCalculator(Calculator):
    """ASE calculator returning the mean and the spread of a committee of ETGNN models (module docstring).

    Args:
        models: at least two members: model files (or bare names of shipped models), loaded ``ETGNN`` models
            or ``ETGNNCalculator`` objects (used as they are: their settings must equal the committee's).
            All members must have the same species and the same heads.
        std_scale: factor per property multiplying ``<name>_std`` (calibration; default 1 for all).
        **calculator_parameters: ``ETGNNCalculator`` settings (``device``, ``dtype``, ``forces``,
            ``symmetrize``, ...), given to every member.
    """

    default_parameters: dict = {**ETGNNCalculator.default_parameters, "std_scale": {}}

    def __init__(self, models: Sequence[ModelLike], std_scale: Optional[Mapping[str, float]] = None,
                 **calculator_parameters) -> None:
        if isinstance(models, (str, os.PathLike, ModelView, ETGNNCalculator)):
            raise TypeError("CommitteeCalculator needs a sequence of models (files or ETGNN objects), got one model")
        models = list(models)
        if len(models) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(models)}")
        unknown = sorted(set(calculator_parameters) - set(ETGNNCalculator.default_parameters))
        if unknown:
            raise TypeError(f"unknown CommitteeCalculator parameter(s) {unknown}; known: "
                            f"{sorted(self.default_parameters)}")
        self.members = [m if isinstance(m, ETGNNCalculator) else ETGNNCalculator(m, **calculator_parameters)
                        for m in models]
        self._check_members()  # calculators given as members are used as they are: settings must agree
        for i, m in enumerate(self.members):
            differ = {k: m.parameters[k] for k, v in calculator_parameters.items() if m.parameters[k] != v}
            if differ:
                raise ValueError(f"{_label(m, i)} has {differ}, the committee was asked for "
                                 f"{ {k: calculator_parameters[k] for k in differ} }: set them on the member first")
        settings = {k: self.members[0].parameters[k] for k in ETGNNCalculator.default_parameters}
        super().__init__(std_scale=dict(std_scale or {}), **settings)
        self._apply()

    # ------------------------------------------------------------------------------------------------
    def _check_members(self) -> None:
        """Same species (in the same order), same heads and the same settings for every member."""
        ref = self.members[0]
        for i, m in enumerate(self.members[1:], start=1):
            for what, get in (("species", lambda c: tuple(c.model.species)), ("heads", lambda c: tuple(c.model.heads)),
                              ("settings", lambda c: c.todict(skip_default=False) | {"model": None})):
                if get(m) != get(ref):
                    raise ValueError(f"committee members differ in {what}: {_label(ref, 0)} has {get(ref)}, "
                                     f"{_label(m, i)} has {get(m)}")

    def _apply(self) -> None:
        base = sorted(set.intersection(*(set(m.implemented_properties) for m in self.members)))
        self.implemented_properties = base + [p + STD_SUFFIX for p in base]

    def set(self, **kwargs) -> dict:
        """Change settings: ``std_scale`` here, every other one on all members (see ``ETGNNCalculator``)."""
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        if unknown:
            raise TypeError(f"unknown CommitteeCalculator parameter(s) {unknown}; known: "
                            f"{sorted(self.default_parameters)}")
        member_kwargs = {k: v for k, v in kwargs.items() if k != "std_scale"}
        if member_kwargs and hasattr(self, "members"):
            for m in self.members:
                m.set(**member_kwargs)
        if "std_scale" in kwargs:
            kwargs["std_scale"] = dict(kwargs["std_scale"] or {})
        changed = super().set(**kwargs)
        if changed and hasattr(self, "members"):
            self._apply()
            self.reset()
        return changed

    def todict(self, skip_default: bool = True) -> dict:
        """Settings (ASE convention), plus the members' model files where they were made from files."""
        d = super().todict(skip_default=skip_default)
        d["models"] = [None if m.model_path is None else str(m.model_path) for m in self.members]
        return d

    def __len__(self) -> int:
        return len(self.members)

    # ------------------------------------------------------------------------------------------------
    def member_values(self, name: str, atoms=None) -> np.ndarray:
        """Every member's ``name`` for ``atoms`` (default: the last structure), stacked: (M, ...) ."""
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise ValueError("member_values: no atoms given and none computed yet")
        return np.stack([np.asarray(m.get_property(name, atoms), dtype=np.float64) for m in self.members])

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        """Mean and spread of the requested properties; members compute only what is requested."""
        for p in properties:
            if p not in self.implemented_properties:
                raise PropertyNotImplementedError(
                    f"property {p!r} is not available from this committee; available: {self.implemented_properties}")
        super().calculate(atoms, properties, system_changes)
        if system_changes:
            self.results = {}
        names = list(dict.fromkeys(p[: -len(STD_SUFFIX)] if p.endswith(STD_SUFFIX) else p for p in properties))
        scale = self.parameters["std_scale"]
        for name in names:
            if name in self.results and name + STD_SUFFIX in self.results:
                continue
            values = self.member_values(name, self.atoms)  # (M, ...)
            mean = values.mean(axis=0)
            var = values.var(axis=0, ddof=1)  # per component
            if _is_per_atom(name):
                std = np.sqrt(var.reshape(len(self.atoms), -1).sum(axis=1))  # (N,)
            else:
                std = float(np.sqrt(var.sum()))
            std = std * float(scale.get(name, 1.0))
            self.results[name] = float(mean) if np.ndim(mean) == 0 else mean
            self.results[name + STD_SUFFIX] = std


def committee_from_files(paths: Sequence[Union[str, os.PathLike]], **calculator_parameters) -> CommitteeCalculator:
    """A committee of the model files ``paths`` (at least two), with ``ETGNNCalculator`` settings for all."""
    return CommitteeCalculator([os.fspath(p) for p in paths], **calculator_parameters)
