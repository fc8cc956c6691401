"""The CUDA path (runs only where CUDA is available): same results as the CPU, conservative mode included."""
import numpy as np
import pytest
import torch

from ase_etgnn import ETGNNCalculator

from conftest import small_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_cuda_equals_cpu(quartz_perturbed, forces):
    model = small_model()
    results = {}
    for device in ("cpu", "cuda"):
        calc = ETGNNCalculator(model, device=device, dtype="float64", forces=forces, symmetrize=False)
        atoms = quartz_perturbed.copy()
        atoms.calc = calc
        results[device] = {p: calc.get_property(p, atoms) for p in
                           ("forces", "energy", "born_effective_charges", "dielectric_tensor")}
    for p, v in results["cpu"].items():
        assert np.allclose(results["cuda"][p], v, rtol=1e-9, atol=1e-10), p


def test_cuda_batch_is_on_the_device_and_pinned_copies_match(quartz_perturbed):
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    g = atoms_to_graph(quartz_perturbed, 4.0, 3.0)
    gpu, cpu = collate_graphs([g], device="cuda"), collate_graphs([g])
    for k, v in cpu.items():
        if isinstance(v, torch.Tensor):
            assert gpu[k].device.type == "cuda" and torch.equal(gpu[k].cpu(), v), k
        else:  # the radii the graph was built with
            assert gpu[k] == v, k
