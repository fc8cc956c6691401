"""The property registry: one table that drives batching, losses, calculator results and tests.

Every target or prediction of ``ase_etgnn`` is named here, with its shape, symmetry and units, so that
no other module hard-codes these facts (in the spirit of nequip's key registry).

Index conventions (tested in ``tests/test_model.py``):

* ``born_effective_charges``: ``Z[a, i, j] = dF_j / dE_i = Omega dP_i / du_j`` (first index: field /
  polarisation, second: displacement), as printed by ph.x rows ``E_i``.
* ``piezoelectric_tensor``: ``e[i, j, k]``, ``i`` field, ``(j, k)`` strain, symmetric in ``j, k``.
* ``stress``: 3x3 Cartesian, ASE sign convention (positive = tensile), eV/A^3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ["PropertySpec", "PROPERTIES", "get_property_spec", "TENSOR_HEADS", "LOSS_TARGETS", "loss_target"]


@dataclass(frozen=True)
class PropertySpec:
    """Static description of one property.

    Attributes:
        name: registry key, equal to ASE's property name where ASE defines one.
        per_atom: True for per-atom quantities (first axis = atoms).
        rank: Cartesian tensor rank (0 scalar, 1 vector, ...).
        symmetry: "none", "symmetric" (rank 2, T = T^T) or "symmetric_last2" (rank 3, T_ijk = T_ikj).
        units: units stored in data files and returned by the calculator.
        ase_name: name under which ASE's calculator API exposes it.
        extensive: True when the structure-level value is a sum over atoms (energy), False when an average.
    """

    name: str
    per_atom: bool
    rank: int
    symmetry: str
    units: str
    ase_name: str
    extensive: bool = False

    def shape(self, n_atoms: int | None = None) -> Tuple[int, ...]:
        """Shape of one structure's value (``n_atoms`` required for per-atom properties)."""
        cart = (3,) * self.rank
        if self.per_atom:
            if n_atoms is None:
                raise ValueError(f"{self.name} is per-atom: n_atoms is required")
            return (n_atoms,) + cart
        return cart


PROPERTIES: Dict[str, PropertySpec] = {
    p.name: p
    for p in (
        PropertySpec("energy", False, 0, "none", "eV", "energy", extensive=True),
        PropertySpec("forces", True, 1, "none", "eV/A", "forces"),
        PropertySpec("stress", False, 2, "symmetric", "eV/A^3", "stress"),
        PropertySpec("born_effective_charges", True, 2, "none", "e", "born_effective_charges"),
        PropertySpec("dielectric_tensor", False, 2, "symmetric", "1", "dielectric_tensor"),
        PropertySpec("piezoelectric_tensor", False, 3, "symmetric_last2", "C/m^2", "piezoelectric_tensor"),
    )
}

#: properties that a model head predicts directly (stress only comes from a conservative energy).
TENSOR_HEADS = ("energy", "forces", "born_effective_charges", "dielectric_tensor", "piezoelectric_tensor")


#: loss terms whose prediction is not a head of the same name, mapped to the registry target they are compared
#: with: ``forces_conservative`` (-dE/dr of the energy head) is trained against the ``forces`` labels.
LOSS_TARGETS = {"forces_conservative": "forces"}


def loss_target(name: str) -> str:
    """The registry property whose labels a loss term ``name`` is compared with."""
    return LOSS_TARGETS.get(name, name)


def get_property_spec(name: str) -> PropertySpec:
    """Look up a property, with an error that lists the known names."""
    try:
        return PROPERTIES[name]
    except KeyError:
        raise KeyError(f"unknown property {name!r}; known properties: {sorted(PROPERTIES)}") from None
