import math

import pytest
import torch

from pyro_stein.ops.kernels import IMQKernel, RBFKernel, median_sq_dist
from pyro_stein.ops.stein import kernel_gram, pairwise_sq_dists, squared_ksd, stein_direction

KERNELS = [RBFKernel(), RBFKernel(bandwidth_factor=3.0), IMQKernel(), IMQKernel(c=2.0, beta=-0.3)]


@pytest.mark.parametrize("kernel", KERNELS, ids=repr)
def test_radial_derivatives_match_autograd(kernel):
    r = torch.linspace(0.0, 10.0, 50, dtype=torch.float64).requires_grad_(True)
    h = torch.tensor(1.7, dtype=torch.float64)
    prof = kernel.profile(r, h)
    (d1,) = torch.autograd.grad(prof.value.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    assert torch.allclose(prof.d1, d1, rtol=1e-10, atol=1e-12)
    assert torch.allclose(prof.d2, d2, rtol=1e-10, atol=1e-12)


def test_median_heuristics():
    x = torch.randn(40, 3, dtype=torch.float64)
    r = pairwise_sq_dists(x)
    upper = r[torch.triu_indices(40, 40, offset=1).unbind()]
    assert median_sq_dist(r) == upper.median()
    # Liu & Wang: h = med^2 / log N, times the factor.
    assert torch.isclose(RBFKernel().bandwidth(r), upper.median() / math.log(40))
    assert torch.isclose(RBFKernel(bandwidth_factor=2.0).bandwidth(r), 2 * upper.median() / math.log(40))
    assert torch.isclose(IMQKernel().bandwidth(r), upper.median())
    assert RBFKernel(bandwidth=0.5).bandwidth(r).item() == 0.5


def test_median_ignores_masked_particles():
    x = torch.randn(30, 2, dtype=torch.float64)
    mask = torch.ones(30, dtype=torch.bool)
    mask[:5] = False
    far = x.clone()
    far[:5] += 1e6
    assert median_sq_dist(pairwise_sq_dists(far), mask) == median_sq_dist(pairwise_sq_dists(x[5:]))


def test_median_of_many_particles_looks_at_the_first_valid_ones():
    x = torch.randn(60, 2, dtype=torch.float64)
    r = pairwise_sq_dists(x)
    assert median_sq_dist(r, max_particles=60) == median_sq_dist(r)
    assert median_sq_dist(r, max_particles=20) == median_sq_dist(pairwise_sq_dists(x[:20]))
    mask = torch.ones(60, dtype=torch.bool)
    mask[:5] = False
    assert median_sq_dist(r, mask, max_particles=20) == median_sq_dist(pairwise_sq_dists(x[5:25]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: RBFKernel(bandwidth=0.0),
        lambda: RBFKernel(bandwidth_factor=-1.0),
        lambda: IMQKernel(beta=0.5),
        lambda: IMQKernel(beta=-1.0),
        lambda: IMQKernel(c=0.0),
    ],
)
def test_bad_kernel_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_memory_is_quadratic_in_particles_not_cubic():
    # An N x N x D tensor here would take 400*400*40000*4 bytes = 25.6 GB.
    x = torch.randn(400, 40000)
    gram = kernel_gram(x, RBFKernel())
    phi = stein_direction(-x, gram)
    assert phi.shape == x.shape and torch.isfinite(phi).all()
    assert torch.isfinite(squared_ksd(-x, gram))
