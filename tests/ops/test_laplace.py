"""Tests of `pyro_stein.ops.laplace`: mode search, exact negative Hessian, safe Cholesky factor."""

import math
import sys
import warnings

import pytest
import torch

from pyro_stein.ops.laplace import find_mode, laplace_approximation, laplace_scale_tril, negative_hessian

DTYPE = torch.float64


def _precision(dim, seed, shift=0.5):
    a = torch.randn(dim, dim, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))
    return a @ a.T + shift * torch.eye(dim, dtype=DTYPE)


def gaussian(mean, precision):
    def log_density(z):
        centered = z - mean
        return -0.5 * ((centered @ precision) * centered).sum(-1)

    return log_density


def smooth_non_gaussian(z):
    """A log density with a non-constant, dense Hessian (batched over rows)."""
    return -(z.pow(4) / 4).sum(-1) + torch.sin(z[:, 0] * z[:, 1]) + z[:, 2] * z[:, -1] ** 2 - torch.exp(0.3 * z).sum(-1)


MEAN = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DTYPE)


@pytest.mark.parametrize("max_iter", [500, 1], ids=["lbfgs", "newton-polish"])
def test_exact_mode_and_precision_of_a_correlated_gaussian(max_iter):
    precision = _precision(4, 0)
    result = laplace_approximation(gaussian(MEAN, precision), torch.zeros(4, dtype=DTYPE), max_iter=max_iter)
    assert result is not None
    mode, found_precision = result
    # A quadratic: L-BFGS, or one exact Newton step after one L-BFGS iteration, lands on the
    # mode up to float64 round-off, and the Hessian of a quadratic is exact.
    assert torch.allclose(mode, MEAN, rtol=0, atol=1e-9)
    assert torch.allclose(found_precision, precision, rtol=1e-12, atol=1e-12)


def test_mode_criterion_is_in_posterior_units():
    # Scales 1e-4 and 1e4: the Newton decrement (distance in Laplace sd) is what must be small.
    precision = torch.diag(torch.tensor([1e8, 1e-8, 1.0, 1.0], dtype=DTYPE))
    result = laplace_approximation(gaussian(MEAN, precision), torch.zeros(4, dtype=DTYPE), max_iter=50)
    assert result is not None
    mode, _ = result
    assert ((mode - MEAN) * precision.diagonal().sqrt()).abs().max() < 0.05  # the default tolerance


def test_negative_hessian_matches_autograd():
    point = torch.tensor([0.3, -0.7, 1.1, 0.2, -0.4], dtype=DTYPE)
    expected = -torch.autograd.functional.hessian(lambda z: smooth_non_gaussian(z.unsqueeze(0))[0], point)
    found = negative_hessian(smooth_non_gaussian, point)
    assert torch.allclose(found, expected, rtol=0, atol=1e-12)  # the same derivatives, float64 round-off
    assert torch.equal(found, found.T)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5])
def test_negative_hessian_chunks_agree(chunk_size):
    point = torch.tensor([0.3, -0.7, 1.1, 0.2, -0.4], dtype=DTYPE)
    full = negative_hessian(smooth_non_gaussian, point)
    assert torch.allclose(negative_hessian(smooth_non_gaussian, point, chunk_size=chunk_size), full, rtol=0, atol=1e-14)


def test_negative_hessian_does_not_touch_parameter_gradients():
    weight = torch.tensor(2.0, dtype=DTYPE, requires_grad=True)

    def log_density(z):
        return -weight * z.pow(2).sum(-1)

    hessian = negative_hessian(log_density, torch.ones(3, dtype=DTYPE))
    assert torch.allclose(hessian, 4.0 * torch.eye(3, dtype=DTYPE), rtol=0, atol=1e-14)
    assert weight.grad is None
    find_mode(log_density, torch.ones(3, dtype=DTYPE), max_iter=5)
    assert weight.grad is None  # autograd.grad, not backward()


def test_find_mode_of_a_smooth_density():
    mode = find_mode(smooth_non_gaussian, torch.zeros(5, dtype=DTYPE))
    z = mode.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(smooth_non_gaussian(z.unsqueeze(0))[0], z)
    # A stationary point: L-BFGS stops where f stops changing in float64, |g| ~ sqrt(eps |f| H) ~ 1e-8.
    assert grad.abs().max() < 1e-6
    result = laplace_approximation(smooth_non_gaussian, torch.zeros(5, dtype=DTYPE))
    assert result is not None
    assert torch.allclose(result[0], mode, rtol=0, atol=1e-6)
    assert torch.linalg.eigvalsh(result[1]).min() > 0


def test_no_mode_returns_none():
    def linear_tail(z):  # increases without bound along z_1
        return -0.5 * z[:, 0] ** 2 + z[:, 1]

    def scale_collapse(z):  # funnel-like: x = 0 and log-scale v -> -inf sends the density to +inf
        v, x = z[:, :1], z[:, 1:]
        return (-0.5 * x**2 * torch.exp(-v) - 0.5 * v).sum(-1)

    def bowl(z):  # a minimum, not a maximum
        return 0.5 * z.pow(2).sum(-1)

    assert laplace_approximation(linear_tail, torch.zeros(2, dtype=DTYPE), max_iter=50) is None
    assert laplace_approximation(scale_collapse, torch.ones(4, dtype=DTYPE), max_iter=50) is None
    assert laplace_approximation(bowl, torch.ones(2, dtype=DTYPE), max_iter=50) is None


def _check_square(scale_tril, covariance):
    assert torch.equal(scale_tril, scale_tril.tril())
    assert torch.allclose(scale_tril @ scale_tril.T, covariance, rtol=1e-10, atol=1e-12)  # float64 solves


def test_scale_tril_squares_to_the_inverse_precision():
    precision = _precision(6, 1)
    scale_tril, status = laplace_scale_tril(precision, fallback_scale=1.0)
    assert status == "laplace" and scale_tril.dtype == DTYPE
    _check_square(scale_tril, torch.linalg.inv(precision))
    assert (scale_tril.diagonal() > 0).all()


def test_scale_tril_computes_in_float64_for_float32_input():
    precision = torch.diag(torch.tensor([1e6, 1.0, 1e-6], dtype=DTYPE))
    precision[0, 1] = precision[1, 0] = 10.0
    scale_tril, status = laplace_scale_tril(precision.float(), fallback_scale=1.0)
    assert status == "laplace" and scale_tril.dtype == torch.float32
    expected = torch.linalg.cholesky(torch.linalg.inv(precision.float().double()))
    # Only the final cast rounds: float32 relative precision on every entry.
    assert torch.allclose(scale_tril.double(), expected, rtol=1e-6, atol=0)


def test_scale_tril_regularizes_an_indefinite_precision():
    eigvecs, _ = torch.linalg.qr(torch.randn(4, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(2)))
    eigvals = torch.tensor([4.0, 2.0, -1.0, 0.0], dtype=DTYPE)  # a saddle and a flat direction
    precision = (eigvecs * eigvals) @ eigvecs.T
    scale_tril, status = laplace_scale_tril(precision, fallback_scale=1.0)
    assert status == "regularized"
    # Non-positive curvature is replaced by the smallest positive one (2).
    repaired = torch.tensor([4.0, 2.0, 2.0, 2.0], dtype=DTYPE)
    _check_square(scale_tril, (eigvecs / repaired) @ eigvecs.T)


@pytest.mark.parametrize(
    "precision",
    [
        torch.tensor([[1.0, math.nan], [math.nan, 1.0]], dtype=DTYPE),
        torch.tensor([[math.inf, 0.0], [0.0, 1.0]], dtype=DTYPE),
        -torch.eye(2, dtype=DTYPE),
        torch.zeros(2, 2, dtype=DTYPE),
    ],
    ids=["nan", "inf", "negative-definite", "zero"],
)
def test_scale_tril_falls_back_to_isotropic(precision):
    scale_tril, status = laplace_scale_tril(precision, fallback_scale=0.3)
    assert status == "isotropic"
    assert torch.equal(scale_tril, 0.3 * torch.eye(2, dtype=DTYPE))


def _next_line():
    """The line after the caller's."""
    return sys._getframe(1).f_lineno + 1


def test_mode_search_warning_points_at_the_callers_line():
    calls = []

    def failing_once(z):
        calls.append(None)
        if len(calls) == 2:
            raise RuntimeError("arithmetic gone wrong")
        return -z.pow(2).sum(-1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        find_mode(failing_once, torch.ones(2, dtype=torch.float64), max_iter=5)
    (record,) = caught
    assert record.category is RuntimeWarning and "mode search stopped early" in str(record.message)
    assert record.filename == __file__ and record.lineno == line

    # One level deeper (laplace_approximation -> find_mode -> warn): still this file's line.
    calls.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        result = laplace_approximation(failing_once, torch.ones(2, dtype=torch.float64), max_iter=5)
    assert result is not None  # the Newton polish finishes the interrupted search
    (record,) = caught
    assert record.filename == __file__ and record.lineno == line
