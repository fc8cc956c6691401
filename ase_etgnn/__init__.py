"""ase_etgnn: ETGNN tensor predictions (forces, Born charges, dielectric and piezoelectric tensors) for ASE.

Quick start::

    from ase_etgnn import ETGNNCalculator
    atoms.calc = ETGNNCalculator("sio2.pt")
    atoms.get_forces()
    atoms.calc.get_property("born_effective_charges", atoms)
"""
from .calculator import ETGNNCalculator
from .committee import CommitteeCalculator
from .composed import ComposedModel, compose
from .model import ETGNN, ETGNNConfig, build_model
from .model_file import ModelFileError, load_model, save_model
from .properties import PROPERTIES, PropertySpec

__version__ = "0.1.0"

__all__ = [
    "CommitteeCalculator",
    "ComposedModel",
    "ETGNN",
    "ETGNNConfig",
    "ETGNNCalculator",
    "ModelFileError",
    "PROPERTIES",
    "PropertySpec",
    "build_model",
    "compose",
    "load_model",
    "save_model",
    "__version__",
]
