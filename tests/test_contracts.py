"""Contracts of every model output, driven by the property registry, in float32 and float64, on CPU and CUDA.

The model under test has every head the registry knows and is run with ``forces="both", stress=True``, so
its outputs are all registry properties plus ``forces_conservative``. Each output is checked as its registry
entry (``output_spec``) says: ``rank`` fixes how it rotates, ``per_atom`` how it follows a permutation, a
batch or a supercell, ``extensive`` whether a supercell multiplies it. Contracts: equivariance under
rotations and reflections, permutation (with translations and wrapping), batch == single, supercell
consistency. Tolerances are relative to the largest value of the expected output, one per dtype.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, make_supercell, molecule

from ase_etgnn.graph import atoms_to_graph, collate_graphs
from ase_etgnn.properties import FORCES_CONSERVATIVE, PROPERTIES, TENSOR_HEADS, output_spec

from conftest import random_rotation, small_model

#: largest error relative to max |expected| of the output (measured on CPU: float64 <= 2e-14, float32 <= 1e-5,
#: stress and -dE/dr worst; summation orders differ between a batch, a supercell and a rotated frame)
TOL = {torch.float64: 1e-10, torch.float32: 5e-5}
#: batch == single reorders fewer sums: tighter in float64
TOL_BATCH = {torch.float64: 1e-11, torch.float32: 5e-5}

DTYPES = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]

#: the paper's force head (last edge message) and the pair head (every block's edge messages, both node features)
FORCE_HEADS = [pytest.param("edge", id="edge_head"), pytest.param("pair", id="pair_head")]

_MODELS: dict = {}


def _model(dtype: torch.dtype, device: str, force_head: str = "edge"):
    """A small random model with every head of the registry (one per dtype, device and force head, shared)."""
    if (dtype, device, force_head) not in _MODELS:
        _MODELS[dtype, device, force_head] = small_model(heads=TENSOR_HEADS, dtype=dtype,
                                                         force_head=force_head).to(device)
    return _MODELS[dtype, device, force_head]


def _outputs(model, structures, stress: bool = True) -> dict:
    """Every output for ``structures`` in one batch (numpy, float64): heads, ``forces_conservative``, stress."""
    cfg = model.config
    graphs = [atoms_to_graph(a, cfg.cutoff, cfg.effective_triplet_cutoff) for a in structures]
    batch = collate_graphs(graphs, dtype=model.dtype, device=model.device)
    out = model(batch, forces="both", stress=stress)
    return {k: v.detach().cpu().double().numpy() for k, v in out.items()}


def _check_covers_registry(out: dict, stress: bool = True) -> None:
    """The outputs are every registry property (``stress`` only with ``stress``) plus ``forces_conservative``."""
    want = {n for n, spec in PROPERTIES.items() if spec.head or stress} | {FORCES_CONSERVATIVE}
    assert set(out) == want


def _close(got: np.ndarray, expected: np.ndarray, tol: float, what) -> None:
    assert got.shape == expected.shape, what
    scale = float(np.abs(expected).max())
    err = float(np.abs(got - expected).max())
    assert err <= tol * scale, (what, err, scale)


def _rotated(atoms, R: np.ndarray):
    out = atoms.copy()
    out.positions = atoms.positions @ R.T
    out.cell = atoms.cell.array @ R.T
    return out


def _transform(name: str, value: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``value`` of output ``name`` in the frame rotated by the orthogonal ``R`` (its registry rank decides)."""
    rank = output_spec(name).rank
    if rank == 0:
        return value
    letters = "abc"[:rank]
    spec = ",".join(f"{c.upper()}{c}" for c in letters)
    return np.einsum(f"{spec},...{letters}->...{letters.upper()}", *([R] * rank), value)


@pytest.fixture(scope="module")
def quartz_rattled(quartz_perturbed):
    atoms = quartz_perturbed.copy()
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.mark.parametrize("force_head", FORCE_HEADS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_equivariance(quartz_rattled, dtype, device, force_head, reflect):
    model = _model(dtype, device, force_head)
    R = random_rotation(np.random.default_rng(1 + reflect), reflect=reflect)
    ref = _outputs(model, [quartz_rattled])
    rot = _outputs(model, [_rotated(quartz_rattled, R)])
    _check_covers_registry(ref)
    for name, value in ref.items():
        assert np.abs(value).max() > 1e-5, name  # not trivially zero: the check can fail
        _close(rot[name], _transform(name, value, R), TOL[dtype], name)
    assert np.abs(ref["born_effective_charges"]).max() > 1e-3


@pytest.mark.parametrize("force_head", FORCE_HEADS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_permutation_translation_and_wrapping(quartz_rattled, dtype, device, force_head):
    model = _model(dtype, device, force_head)
    atoms = quartz_rattled
    ref = _outputs(model, [atoms])
    moved = atoms.copy()
    moved.positions += [0.3, -1.7, 2.2]
    moved.positions[2] += atoms.cell[0] - 2 * atoms.cell[2]  # a lattice translation of one atom
    perm = np.random.default_rng(0).permutation(len(atoms))
    out = _outputs(model, [moved[perm]])
    wrapped = atoms.copy()
    wrapped.positions += 3.0
    wrapped.wrap()
    out_wrapped = _outputs(model, [wrapped])
    _check_covers_registry(out)
    for name, value in ref.items():
        expected = value[perm] if output_spec(name).per_atom else value
        _close(out[name], expected, TOL[dtype], (name, "permuted"))
        _close(out_wrapped[name], value, TOL[dtype], (name, "wrapped"))


@pytest.mark.parametrize("force_head", FORCE_HEADS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_supercell_consistency(quartz_rattled, dtype, device, force_head):
    """Per-atom outputs repeat cell by cell, extensive ones scale with the cell count, intensive ones stay."""
    model = _model(dtype, device, force_head)
    n_cells = 8
    sc = make_supercell(quartz_rattled, 2 * np.eye(3))  # replicas ordered cell by cell
    ref, big = _outputs(model, [quartz_rattled]), _outputs(model, [sc])
    _check_covers_registry(big)
    for name, value in ref.items():
        spec = output_spec(name)
        if spec.per_atom:
            expected = np.tile(value, (n_cells,) + (1,) * (value.ndim - 1))
        elif spec.extensive:
            expected = n_cells * value
        else:
            expected = value
        _close(big[name], expected, TOL[dtype], name)
    assert big["forces"].shape == (n_cells * len(quartz_rattled), 3)


@pytest.mark.parametrize("force_head", FORCE_HEADS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("periodic", [True, False], ids=["crystals", "with_molecule"])
def test_batch_equals_single(quartz_rattled, dtype, device, force_head, periodic):
    """A batch gives what each structure gives alone (stress only where every structure is periodic)."""
    model = _model(dtype, device, force_head)
    silicon = bulk("Si", "diamond", a=5.43, cubic=True)
    silicon.rattle(0.05, seed=2)
    last = silicon if periodic else molecule("SiO")
    structs = [quartz_rattled, make_supercell(quartz_rattled, np.diag([1, 1, 2])), last]
    batched = _outputs(model, structs, stress=periodic)
    _check_covers_registry(batched, stress=periodic)
    offset = 0
    for b, atoms in enumerate(structs):
        single = _outputs(model, [atoms], stress=periodic)
        n = len(atoms)
        for name, value in single.items():
            got = batched[name][offset:offset + n] if output_spec(name).per_atom else batched[name][b:b + 1]
            _close(got, value, TOL_BATCH[dtype], (name, b))
        offset += n
