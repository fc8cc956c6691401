"""Constants of ase_etgnn.basis computed once (cached) equal the values formerly recomputed on every call."""
import math

import numpy as np
import torch

from ase_etgnn.basis import double_factorial_odd, legendre_y0, spherical_bessel_l, y0_norms


def test_y0_norms_equal_the_per_call_formula():
    for l_max in range(10):
        assert y0_norms(l_max) == tuple(math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(l_max + 1))
    assert y0_norms(6) is y0_norms(6)  # computed once
    cos = torch.linspace(-1.0, 1.0, 7, dtype=torch.float64)
    y = legendre_y0(2, cos)  # [7, 3]: Y_0^0, Y_1^0, Y_2^0 in closed form
    torch.testing.assert_close(y[:, 0], torch.full_like(cos, 0.5 / math.sqrt(math.pi)), rtol=0, atol=1e-15)
    torch.testing.assert_close(y[:, 1], math.sqrt(3 / (4 * math.pi)) * cos, rtol=0, atol=1e-15)
    torch.testing.assert_close(y[:, 2], math.sqrt(5 / (4 * math.pi)) * 0.5 * (3 * cos**2 - 1), rtol=0, atol=1e-15)


def test_double_factorial_equals_the_per_call_product():
    for l in range(12):
        assert double_factorial_odd(l) == float(np.prod(np.arange(1, 2 * l + 2, 2)))
    assert double_factorial_odd(3) == 105.0
    x = torch.tensor([0.3, 1.1], dtype=torch.float64)  # series branch of j_2 (x < 3)
    j2 = (3 / x**2 - 1) * torch.sin(x) / x - 3 * torch.cos(x) / x**2
    torch.testing.assert_close(spherical_bessel_l(2, x), j2, rtol=1e-10, atol=1e-12)
