"""Tests of `pyro_stein.ops.matching`: sliced-Wasserstein and energy-distance directions."""

import math

import pytest
import torch

from pyro_stein.ops.matching import (
    energy_distance_direction,
    random_projections,
    sliced_wasserstein_direction,
)

DTYPE = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_projections", [1, 5])
def test_sliced_wasserstein_in_one_dimension_is_quantile_matching(num_projections):
    g = _gen(0)
    x = torch.randn(50, 1, dtype=DTYPE, generator=g)
    y = 2.0 + 3.0 * torch.randn(50, 1, dtype=DTYPE, generator=g)
    # In 1-D a projection is +1 or -1; both give the monotone matching.
    projections = random_projections(1, num_projections, dtype=DTYPE, generator=g)
    direction, value = sliced_wasserstein_direction(x, y, projections)
    rank = x[:, 0].argsort().argsort()
    displacement = y[:, 0].sort().values[rank] - x[:, 0]
    assert torch.allclose(direction[:, 0], displacement, rtol=0, atol=1e-13)  # float64 round-off
    assert torch.allclose(value, displacement.pow(2).mean(), rtol=1e-13, atol=0)
    # A full step lands exactly on y's points: the distance becomes zero.
    _, after = sliced_wasserstein_direction(x + direction, y, projections)
    assert after < 1e-24


def test_sliced_wasserstein_interpolates_quantiles_of_a_larger_batch():
    g = _gen(1)
    x = torch.randn(20, 1, dtype=DTYPE, generator=g)
    y = torch.randn(40, 1, dtype=DTYPE, generator=g)
    direction, _ = sliced_wasserstein_direction(x, y, torch.ones(1, 1, dtype=DTYPE))
    # x's k-th order statistic sits at level (k + 1/2) / 20, between y's (2k)-th and (2k+1)-th.
    sorted_y = y[:, 0].sort().values
    target = 0.5 * (sorted_y[0::2] + sorted_y[1::2])
    rank = x[:, 0].argsort().argsort()
    assert torch.allclose(direction[:, 0], target[rank] - x[:, 0], rtol=0, atol=1e-13)


def test_sliced_wasserstein_direction_is_minus_the_scaled_gradient():
    g = _gen(2)
    n, d = 30, 3
    x = torch.randn(n, d, dtype=DTYPE, generator=g).requires_grad_(True)
    y = torch.randn(45, d, dtype=DTYPE, generator=g) * torch.tensor([1.0, 2.0, 0.5], dtype=DTYPE) + 1.0
    projections = random_projections(d, 7, dtype=DTYPE, generator=g)
    direction, value = sliced_wasserstein_direction(x, y, projections)
    (grad,) = torch.autograd.grad(value, x)
    # value = 1/(N P) sum gap^2 and direction = gap theta^T / B with P = B D: v = -(N D / 2) grad.
    assert torch.allclose(direction, -(n * d / 2) * grad, rtol=0, atol=1e-12)


def test_a_step_along_the_direction_lowers_the_distance():
    g = _gen(3)
    x = torch.randn(500, 2, dtype=DTYPE, generator=g)
    y = torch.tensor([1.0, -1.0], dtype=DTYPE) + 2.0 * torch.randn(500, 2, dtype=DTYPE, generator=g)
    projections = random_projections(2, 32, dtype=DTYPE, generator=g)
    direction, before = sliced_wasserstein_direction(x, y, projections)
    for step in (0.1, 0.5):
        _, after = sliced_wasserstein_direction(x + step * direction, y, projections)
        assert after < before
    direction, before = energy_distance_direction(x, y)
    # The energy direction is N/2 times minus the gradient; a step of 0.1 moves each point by <= 0.2.
    _, after = energy_distance_direction(x + 0.1 * direction, y)
    assert after < before


def test_identical_batches_give_no_sliced_wasserstein_push():
    g = _gen(4)
    x = torch.randn(100, 3, dtype=DTYPE, generator=g)
    y = x[torch.randperm(100, generator=g)]
    direction, value = sliced_wasserstein_direction(x, y, random_projections(3, 9, dtype=DTYPE, generator=g))
    # The same sorted values: zero up to the round-off of the projection products.
    assert direction.abs().max() < 1e-14 and value < 1e-28


def _energy_brute_force(x, y):
    n, m = len(x), len(y)

    def unit(v):
        return v / v.norm()

    direction = torch.zeros_like(x)
    for i in range(n):
        direction[i] = sum(unit(x[i] - x[j]) for j in range(n) if j != i) / (n - 1)
        direction[i] -= sum(unit(x[i] - y[j]) for j in range(m)) / m
    xy = sum((x[i] - y[j]).norm() for i in range(n) for j in range(m)) / (n * m)
    xx = sum((x[i] - x[j]).norm() for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum((y[i] - y[j]).norm() for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return direction, 2 * xy - xx - yy


def test_energy_distance_against_brute_force_and_gradient():
    g = _gen(5)
    x = torch.randn(6, 2, dtype=DTYPE, generator=g).requires_grad_(True)
    y = torch.randn(4, 2, dtype=DTYPE, generator=g) + 0.5
    direction, value = energy_distance_direction(x, y)
    expected_direction, expected_value = _energy_brute_force(x.detach(), y)
    assert torch.allclose(direction, expected_direction, rtol=0, atol=1e-13)  # float64 round-off
    assert torch.allclose(value, expected_value, rtol=1e-13, atol=0)
    # Each pair enters the x-x U-statistic twice: direction = -(N / 2) grad.
    (grad,) = torch.autograd.grad(value, x)
    assert torch.allclose(direction, -(len(x) / 2) * grad, rtol=0, atol=1e-13)


def test_energy_distance_of_a_batch_with_itself():
    g = _gen(6)
    x = torch.randn(40, 3, dtype=DTYPE, generator=g)
    direction, value = energy_distance_direction(x, x)
    n = len(x)
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    # y = x: the x-y V-statistic over N^2 pairs against two U-statistics over N(N-1): exactly
    # -2 S / (N^2 (N-1)), S the sum of distances, i.e. -2/N of the mean distance.
    assert torch.allclose(value, -2 * dist.sum() / (n * n * (n - 1)), rtol=1e-12, atol=0)
    # The pull towards y = x is (N-1)/N of the push from the rest of x (the j = i pair is 0).
    away, _ = energy_distance_direction(x, x + 1e6)  # y far: its pull is a common unit vector
    common = torch.nn.functional.normalize(-torch.ones(3, dtype=DTYPE), dim=0)
    assert torch.allclose(direction, (away + common) / n, rtol=0, atol=1e-6)  # unit vectors to y at 1e6: O(1e-6)


def test_energy_direction_has_mean_zero_for_draws_of_one_law():
    g = _gen(7)
    n = 1000
    x, y = torch.randn(n, 2, dtype=DTYPE, generator=g), torch.randn(n, 2, dtype=DTYPE, generator=g)
    direction, value = energy_distance_direction(x, y)
    # The x-x part sums to zero exactly (antisymmetric); the x-y part is a mean of unit vectors
    # with E u(X - Y) = 0, a two-sample U-statistic whose coordinates have sd at most
    # sqrt((1/N + 1/M) E u_1^2) with E u_1^2 = 1/D: 5 sd.
    bound = 5 * math.sqrt((2 / n) / 2)
    assert direction.mean(0).abs().max() < bound
    shifted, shifted_value = energy_distance_direction(x, y + torch.tensor([1.0, 0.0], dtype=DTYPE))
    assert shifted.mean(0)[0] > bound  # now it points towards y (by ~0.4)
    # The null estimate is O(1/N) (degenerate U-statistic); a shift by 1 sd gives ~0.4.
    assert abs(value) < 0.02
    assert shifted_value > 0.2


def test_energy_distance_with_coincident_points_is_finite():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]], dtype=DTYPE)
    direction, value = energy_distance_direction(x, x[:1].clone())
    assert torch.isfinite(direction).all() and torch.isfinite(value)
    # Coincident pairs push with u(0) = 0: only x_2 pushes x_0 and x_1 (by -e_0 / 2 each).
    assert torch.allclose(direction[0], torch.tensor([-0.5, 0.0], dtype=DTYPE), rtol=0, atol=1e-7)


@pytest.mark.parametrize("dim,num,bases", [(3, 9, 3), (3, 7, 3), (4, 1, 1), (1, 3, 3)])
def test_random_projections_are_orthonormal_blocks(dim, num, bases):
    projections = random_projections(dim, num, dtype=DTYPE, generator=_gen(8))
    assert projections.shape == (dim, bases * dim) and projections.dtype == DTYPE
    for b in range(bases):
        block = projections[:, b * dim:(b + 1) * dim]
        assert torch.allclose(block.T @ block, torch.eye(dim, dtype=DTYPE), rtol=0, atol=1e-13)
    assert torch.equal(projections, random_projections(dim, num, dtype=DTYPE, generator=_gen(8)))


def test_random_projections_are_haar_distributed():
    n = 3000
    projections = random_projections(3, 3 * n, dtype=DTYPE, generator=_gen(9)).reshape(3, n, 3)
    # A coordinate of a uniform unit vector in R^3 is Uniform(-1, 1) (Archimedes): mean 0,
    # variance 1/3; 5 standard errors.  Without the QR sign fix the first basis vector's
    # first coordinate would have one sign.
    first = projections[0, :, 0]
    assert abs(first.mean()) < 5 * math.sqrt(1 / 3 / n)
    assert abs(first.pow(2).mean() - 1 / 3) < 5 * math.sqrt(4 / 45 / n)  # Var(U^2) = 1/5 - 1/9
    assert abs((first > 0).double().mean() - 0.5) < 5 * math.sqrt(0.25 / n)


def test_groups_are_matched_separately():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 50, 2, generator=generator, dtype=DTYPE)
    y = torch.randn(4, 70, 2, generator=generator, dtype=DTYPE) * torch.arange(1.0, 5.0, dtype=DTYPE).reshape(4, 1, 1)
    projections = random_projections(2, 8, dtype=DTYPE, generator=generator)
    direction, distance = sliced_wasserstein_direction(x, y, projections)
    assert direction.shape == (4, 50, 2) and distance.shape == (4,)
    for group in range(4):
        alone, alone_distance = sliced_wasserstein_direction(x[group], y[group], projections)
        torch.testing.assert_close(direction[group], alone)
        torch.testing.assert_close(distance[group], alone_distance)
