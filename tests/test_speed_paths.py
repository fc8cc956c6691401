"""The fast paths of issue 20 give the numbers of the reference formulas.

* Eq. 14 evaluated per edge in float32 (``spherical_bessel_radial`` + ``spherical_basis_from_edges``)
  against the per-triplet float64 ``spherical_bessel_basis``;
* the stage-2 SiO2 model (``tests/data/sio2_stage2.pt``, shipped until stage 3) against predictions stored by
  the code before the speed work (``tests/data/sio2_speed_reference.npz``, written by
  ``tests/data/make_sio2_speed_reference.py``);
* the trunk blocks with and without autograd (in-place and out-of-place paths);
* ``ase_etgnn.runtime``: idempotent allocator settings, a no-op where unsupported or opted out.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ase_etgnn import runtime
from ase_etgnn.basis import (
    spherical_basis_from_edges,
    spherical_bessel_basis,
    spherical_bessel_l,
    spherical_bessel_norm,
    spherical_bessel_radial,
    spherical_bessel_zeros,
)

from conftest import small_model

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def test_per_edge_float32_basis_matches_float64_reference():
    """Eq. 14 from a per-edge float32 radial part, gathered, vs the per-triplet float64 formula:
    max error below 2e-6 absolute (values up to ~2.7 A^-3/2; float32 epsilon is 1.2e-7)."""
    rc, n_sph, n_rad = 6.0, 7, 6
    zeros = spherical_bessel_zeros(n_sph, n_rad)  # [7, 6] float64
    norm = spherical_bessel_norm(zeros, rc)
    gen = torch.Generator().manual_seed(3)
    length = torch.rand(500, generator=gen, dtype=torch.float64) * rc  # [E], covers the series/recurrence switch
    length[:3] = torch.tensor([1e-4, rc, 0.5 * rc])
    t_in = torch.randint(0, 500, (4000,), generator=gen)  # [T]
    angle = torch.rand(4000, generator=gen, dtype=torch.float64) * math.pi  # [T]
    weight = torch.rand(4000, generator=gen, dtype=torch.float64)  # [T]
    ref = spherical_bessel_basis(length[t_in], angle, torch.as_tensor(zeros), rc) * weight.unsqueeze(-1)
    radial = spherical_bessel_radial(length.float(), torch.as_tensor(zeros).float(), torch.as_tensor(norm).float(), rc)
    assert radial.dtype == torch.float32
    fast = spherical_basis_from_edges(radial, t_in, torch.cos(angle).float(), weight.float())
    assert fast.dtype == torch.float32 and fast.shape == ref.shape
    err = (fast.double() - ref).abs().max().item()
    assert err < 2e-6, err
    assert ref.abs().max().item() > 0.5  # the comparison is not between near-zero values
    # in float64 the same per-edge path equals the reference to round-off
    radial64 = spherical_bessel_radial(length, torch.as_tensor(zeros), torch.as_tensor(norm), rc)
    fast64 = spherical_basis_from_edges(radial64, t_in, torch.cos(angle), weight)
    assert (fast64 - ref).abs().max().item() < 1e-12


def test_spherical_bessel_norm_is_eq14():
    """``spherical_bessel_norm`` = sqrt(2 / (rc^3 j_{l+1}(z_ln)^2)) with j_{l+1} from the float64 routine."""
    zeros = spherical_bessel_zeros(4, 3)
    norm = spherical_bessel_norm(zeros, 5.0)
    for l in range(4):
        j1 = spherical_bessel_l(l + 1, torch.as_tensor(zeros[l])).numpy()
        np.testing.assert_allclose(norm[l], np.sqrt(2.0 / (5.0**3 * j1**2)), rtol=1e-14)


def _reference_cells():
    sys.path.insert(0, str(DATA))
    try:
        from make_sio2_speed_reference import cells, predict
    finally:
        sys.path.remove(str(DATA))
    return cells, predict


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_shipped_model_predictions_unchanged(dtype):
    """The stage-2 SiO2 model on two perturbed, strained quartz cells equals the baseline code's float64 predictions
    (direct heads and conservative forces/stress), errors relative to each quantity's largest value.
    float64: 2e-6 (the baseline evaluated Eq. 14's normalisation at float32-rounded zeros: up to 7e-7 in the
    conservative forces); float32: round-off, 5e-5 (measured up to 7e-6)."""
    from ase_etgnn.model_file import load_model

    cells, predict = _reference_cells()
    ref = np.load(DATA / "sio2_speed_reference.npz")
    model = load_model(DATA / "sio2_stage2.pt").to(dtype).eval()
    res = predict(model, cells(), dtype)
    tol = 2e-6 if dtype == torch.float64 else 5e-5
    assert len(res) == 12
    for key, value in res.items():
        want = ref[key]
        scale = max(np.abs(want).max(), 1.0)
        err = np.abs(value - want).max() / scale
        assert err < tol, (key, err)


def test_blocks_same_with_and_without_autograd():
    """The in-place (no autograd) and out-of-place (autograd) code paths of the blocks give the same outputs."""
    from ase.build import bulk

    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    model = small_model(activation="silu")
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    batch = collate_graphs([atoms_to_graph(atoms, model.config.cutoff, model.config.effective_triplet_cutoff)],
                           dtype=torch.float64)
    with torch.no_grad():
        a = model(batch)
    b = model(batch)  # autograd tracks the weights
    assert any(v.requires_grad for v in b.values())
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].detach().numpy(), rtol=1e-12, atol=1e-12)


class _FakeLibc:
    def __init__(self) -> None:
        self.calls = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_configure_allocator_idempotent(monkeypatch):
    """The first call sets M_TRIM_THRESHOLD and M_MMAP_MAX=0 once; later calls return the same status."""
    fake = _FakeLibc()
    monkeypatch.setattr(runtime, "_status", None)
    monkeypatch.setattr(runtime, "_glibc", lambda: fake)
    monkeypatch.delenv("ASE_ETGNN_NO_MALLOPT", raising=False)
    first = runtime.configure_allocator()
    second = runtime.configure_allocator(trim_threshold=1 << 20)
    assert first.applied and second is first
    assert sorted(fake.calls) == sorted([(-1, runtime.DEFAULT_TRIM_THRESHOLD), (-4, 0)])
    assert runtime.allocator_status() is first


def test_configure_allocator_noop_where_unsupported(monkeypatch):
    """Off Linux/glibc, or with ASE_ETGNN_NO_MALLOPT=1, nothing is called and the status says why."""
    monkeypatch.setattr(runtime, "_status", None)
    monkeypatch.setattr(runtime, "_glibc", lambda: None)
    monkeypatch.delenv("ASE_ETGNN_NO_MALLOPT", raising=False)
    status = runtime.configure_allocator()
    assert not status.applied and "glibc" in status.reason
    fake = _FakeLibc()
    monkeypatch.setattr(runtime, "_status", None)
    monkeypatch.setattr(runtime, "_glibc", lambda: fake)
    monkeypatch.setenv("ASE_ETGNN_NO_MALLOPT", "1")
    status = runtime.configure_allocator()
    assert not status.applied and "ASE_ETGNN_NO_MALLOPT" in status.reason and fake.calls == []


def test_configure_allocator_real_process():
    """On this platform, in a fresh process: applied on Linux/glibc (else a no-op), twice without error."""
    import subprocess

    code = ("from ase_etgnn.runtime import configure_allocator as c; a = c(); b = c(); "
            "assert a is b; print(a.applied)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    import platform

    expect = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out.stdout.strip() == str(expect)


def test_openmp_wait_policy_after_torch_import(monkeypatch):
    """torch (and so libgomp) is loaded here: the helper changes nothing and says so; a user value is kept."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert runtime.set_openmp_wait_policy() is False
    assert runtime.openmp_wait_policy() is None
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert runtime.set_openmp_wait_policy("PASSIVE") is False
    assert runtime.openmp_wait_policy() == "active"
    with pytest.raises(ValueError, match="OMP_WAIT_POLICY"):
        runtime.set_openmp_wait_policy("sleepy")


def test_compile_trunk_failure_restores_eager(monkeypatch):
    """If torch.compile fails, compile_trunk reports it and the model stays eager with unchanged outputs."""
    from ase.build import bulk

    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    model = small_model()
    atoms = bulk("Si", "diamond", a=5.43)
    batch = collate_graphs([atoms_to_graph(atoms, model.config.cutoff, model.config.effective_triplet_cutoff)],
                           dtype=torch.float64)
    with torch.no_grad():
        before = model(batch)

    def broken_compile(self, *args, **kwargs):
        self._compiled_call_impl = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no compiler here"))

    monkeypatch.setattr(torch.nn.Module, "compile", broken_compile)
    status = runtime.compile_trunk(model, batch)
    assert status.compiled == () and "no compiler here" in status.reason
    with torch.no_grad():
        after = model(batch)
    for k in before:
        assert torch.equal(before[k], after[k])
    assert all(m._compiled_call_impl is None for m in model.modules())
