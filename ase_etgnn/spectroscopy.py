"""Alias of :mod:`ase_etgnn.spectra` (phonon, IR and Raman workflows for any ASE calculator).

``from ase_etgnn.spectroscopy import make_phonopy, gamma_spectroscopy, ...`` is equivalent to importing
from ``ase_etgnn.spectra``; see that package for the documentation.
"""
from .spectra import *  # noqa: F401,F403
from .spectra import __all__  # noqa: F401
