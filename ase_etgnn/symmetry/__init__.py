"""Crystal symmetry for ETGNN predictions.

Submodules: :mod:`.projection` (space-group projection used by the calculator: :class:`CrystalSymmetry`,
:func:`symmetrize_results`, tensor rotation, intrinsic projectors, elastic Voigt <-> tensor),
:mod:`.irreducible` (spherical-harmonic decompositions) and :mod:`.metrics` (GMTNet symmetry-success
metrics).  Crystal systems and Voigt pairs come from :mod:`ase_etgnn.conventions`.
"""
from ..conventions import crystal_system_from_number
from .irreducible import (
    PART_DEGREES,
    from_spherical_components,
    irreducible_parts,
    part_irreps,
    spherical_components,
    wigner_d,
)
from .metrics import (
    SymmetryConstraints,
    equality_success,
    format_success_table,
    success_rates,
    symmetry_constraints,
    symmetry_success,
    zero_success,
)
from .projection import (
    CrystalSymmetry,
    elastic_tensor_to_voigt,
    elastic_voigt_to_tensor,
    intrinsic_projector,
    rotate_tensor,
    symmetrize_results,
)

__all__ = [
    "CrystalSymmetry",
    "symmetrize_results",
    "crystal_system_from_number",
    "rotate_tensor",
    "intrinsic_projector",
    # irreducible decompositions
    "PART_DEGREES",
    "irreducible_parts",
    "spherical_components",
    "from_spherical_components",
    "part_irreps",
    "wigner_d",
    "elastic_voigt_to_tensor",
    "elastic_tensor_to_voigt",
    # GMTNet metrics
    "SymmetryConstraints",
    "symmetry_constraints",
    "zero_success",
    "equality_success",
    "symmetry_success",
    "success_rates",
    "format_success_table",
]
