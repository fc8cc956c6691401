"""The property registry: one table that drives batching, losses, model heads, calculator results and tests.

Every target or prediction of ``ase_etgnn`` is named here, with its shape, symmetry, units and how a
structure's value is made from atomic ones, so that no other module hard-codes these facts (in the spirit
of nequip's key registry). The one output that is not a registry property, ``forces_conservative``
(``-dE/dr`` next to direct forces), is named once here too (``FORCES_CONSERVATIVE``).

Index conventions (tested in ``tests/test_model.py``):

* ``born_effective_charges``: ``Z[a, i, j] = dF_j / dE_i = Omega dP_i / du_j`` (first index: field /
  polarisation, second: displacement), as printed by ph.x rows ``E_i``.
* ``piezoelectric_tensor``: ``e[i, j, k]``, ``i`` field, ``(j, k)`` strain, symmetric in ``j, k``.
* ``stress``: 3x3 Cartesian, ASE sign convention (positive = tensile), eV/A^3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = [
    "PropertySpec",
    "PROPERTIES",
    "get_property_spec",
    "TENSOR_HEADS",
    "FORCES_CONSERVATIVE",
    "LOSS_TARGETS",
    "loss_target",
    "output_spec",
]


@dataclass(frozen=True)
class PropertySpec:
    """Static description of one property.

    Attributes:
        name: registry key, equal to ASE's property name where ASE defines one (the calculator's result key).
        per_atom: True for per-atom quantities (first axis = atoms).
        rank: Cartesian tensor rank (0 scalar, 1 vector, ...).
        symmetry: "none", "symmetric" (rank 2, T = T^T) or "symmetric_last2" (rank 3, T_ijk = T_ikj).
        units: units stored in data files and returned by the calculator.
        extensive: True when the structure-level value is a sum over atoms (energy: doubles with a doubled
            cell), False when an average (Eq. 1: unchanged by a supercell).
        head: True when a model head predicts it directly; False when it only comes from the energy by
            autograd (stress).
    """

    name: str
    per_atom: bool
    rank: int
    symmetry: str
    units: str
    extensive: bool = False
    head: bool = True

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
        PropertySpec("energy", False, 0, "none", "eV", extensive=True),
        PropertySpec("forces", True, 1, "none", "eV/A"),
        PropertySpec("stress", False, 2, "symmetric", "eV/A^3", head=False),
        PropertySpec("born_effective_charges", True, 2, "none", "e"),
        PropertySpec("dielectric_tensor", False, 2, "symmetric", "1"),
        PropertySpec("piezoelectric_tensor", False, 3, "symmetric_last2", "C/m^2"),
    )
}

#: properties that a model head predicts directly (stress only comes from a conservative energy).
TENSOR_HEADS: Tuple[str, ...] = tuple(name for name, spec in PROPERTIES.items() if spec.head)

#: the output ``-dE/dr`` (eV/A) of the energy head when it sits next to the direct ``forces`` (model
#: ``forces="both"``, a direct-mode calculator, joint training); where it replaces them it is ``forces``.
FORCES_CONSERVATIVE = "forces_conservative"

#: outputs that are not a registry property, mapped to the property whose shape and units they have and
#: whose labels they are trained against: ``forces_conservative`` is compared with the ``forces`` labels.
LOSS_TARGETS: Dict[str, str] = {FORCES_CONSERVATIVE: "forces"}


def loss_target(name: str) -> str:
    """The registry property whose labels a loss term ``name`` is compared with."""
    return LOSS_TARGETS.get(name, name)


def output_spec(name: str) -> PropertySpec:
    """The registry entry describing a model or calculator output ``name`` (``forces_conservative``: forces)."""
    return get_property_spec(loss_target(name))


def get_property_spec(name: str) -> PropertySpec:
    """Look up a property, with an error that lists the known names."""
    try:
        return PROPERTIES[name]
    except KeyError:
        raise KeyError(f"unknown property {name!r}; known properties: {sorted(PROPERTIES)}") from None
