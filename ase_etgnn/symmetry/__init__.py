"""Crystal symmetry for ETGNN predictions.

Submodules: :mod:`.projection` (space-group projection used by the calculator: :class:`CrystalSymmetry`,
:func:`symmetrize_results`, tensor rotation, intrinsic projectors, elastic Voigt <-> tensor),
:mod:`.irreducible` (spherical-harmonic decompositions) and :mod:`.metrics` (GMTNet symmetry-success
metrics).  Crystal systems and Voigt pairs come from :mod:`ase_etgnn.conventions`.
"""
from . import irreducible, metrics, projection
from .irreducible import *  # noqa: F401,F403 - the package exports its submodules' public names
from .metrics import *  # noqa: F401,F403
from .projection import *  # noqa: F401,F403

__all__ = [*projection.__all__, *irreducible.__all__, *metrics.__all__]
