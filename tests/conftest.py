"""Shared fixtures: small float64 models (exactness tests) and real SiO2 structures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

DATA = Path(__file__).parent / "data"
ALL_HEADS = ("energy", "forces", "born_effective_charges", "dielectric_tensor", "piezoelectric_tensor")
#: a small but complete architecture: every block type is present, tests stay fast on 2 cores
SMALL = dict(hidden=16, triplet_hidden=16, n_blocks=2, int_emb=8, basis_emb=4, out_emb=16,
             n_spherical=4, n_sbf_radial=3, n_radial=6)


def small_model(species=("Si", "O"), heads=ALL_HEADS, dtype=torch.float64, seed=0, **over):
    from ase_etgnn import build_model

    hyper = dict(SMALL, cutoff=4.0, triplet_cutoff=3.0)
    hyper.update(over)
    cutoff = hyper.pop("cutoff")
    return build_model(species, heads=heads, cutoff=cutoff, seed=seed, dtype=dtype, **hyper).eval()


def predict(model, atoms_list, dtype=torch.float64):
    """Model outputs (numpy) for a list of structures in one batch."""
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    cfg = model.config
    graphs = [atoms_to_graph(a, cfg.cutoff, cfg.effective_triplet_cutoff) for a in atoms_list]
    with torch.no_grad():
        out = model(collate_graphs(graphs, dtype=dtype))
    return {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread (and CI has 2 cores); restored after the session."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def quartz_perturbed():
    """The perturbed 9-atom alpha-quartz cell of the QE worked example (no symmetry)."""
    return read(DATA / "qe_sio2_example" / "scf.in", format="espresso-in")


@pytest.fixture(scope="session")
def model64():
    return small_model()


def random_rotation(rng: np.random.Generator, reflect: bool = False) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q
