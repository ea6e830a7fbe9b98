"""Tests of `pyro_stein.ops.surrogate.direction_surrogate`."""

import torch

from pyro_stein.ops.surrogate import direction_surrogate

DTYPE = torch.float64


def _sampler(seed=0, n=9):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, 2, dtype=DTYPE, generator=g).requires_grad_(True)
    bias = torch.randn(3, dtype=DTYPE, generator=g).requires_grad_(True)
    noise = torch.randn(n, 2, dtype=DTYPE, generator=g)
    direction = torch.randn(n, 3, dtype=DTYPE, generator=g)
    return weight, bias, noise, direction


def _draw(weight, bias, noise):
    return torch.tanh(noise @ weight.T + bias)  # a nonlinear sampler x_i = G_eta(xi_i)


def test_gradient_is_minus_the_mean_pulled_back_direction():
    weight, bias, noise, direction = _sampler()
    draws = _draw(weight, bias, noise)
    direction_surrogate(draws, direction).backward()
    # -1/N sum_i J_i^T v_i, with J_i = dx_i / d(weight, bias) from autograd's Jacobian.
    jac_w, jac_b = torch.autograd.functional.jacobian(lambda w, b: _draw(w, b, noise), (weight, bias))
    n = len(noise)
    expected_w = -torch.einsum("nd,ndij->ij", direction, jac_w) / n
    expected_b = -torch.einsum("nd,ndj->j", direction, jac_b) / n
    assert torch.allclose(weight.grad, expected_w, rtol=0, atol=1e-14)  # float64 round-off
    assert torch.allclose(bias.grad, expected_b, rtol=0, atol=1e-14)


def test_default_value_and_detached_direction():
    weight, bias, noise, direction = _sampler(1)
    draws = _draw(weight, bias, noise)
    direction = direction.requires_grad_(True)
    surrogate = direction_surrogate(draws, direction)
    assert torch.allclose(surrogate, -(draws * direction).sum() / len(draws), rtol=1e-15, atol=0)
    surrogate.backward()
    assert direction.grad is None  # the direction is a constant of the step


def test_value_is_passed_through_without_its_gradient():
    weight, bias, noise, direction = _sampler(2)
    other = torch.tensor(1.5, dtype=DTYPE, requires_grad=True)
    value = 3.0 * other**2
    draws = _draw(weight, bias, noise)
    surrogate = direction_surrogate(draws, direction, value=value)
    assert surrogate.item() == value.item()
    surrogate.backward()
    assert other.grad is None  # only the value of `value` is used
    plain_w, plain_b = weight.grad.clone(), bias.grad.clone()
    weight.grad = bias.grad = None
    direction_surrogate(_draw(weight, bias, noise), direction).backward()
    assert torch.allclose(weight.grad, plain_w, rtol=0, atol=1e-15) and torch.allclose(bias.grad, plain_b, rtol=0, atol=1e-15)


def test_log_density_mean_is_ascended():
    weight, bias, noise, direction = _sampler(3)
    theta = torch.tensor([0.4, -0.2], dtype=DTYPE, requires_grad=True)
    draws = _draw(weight, bias, noise)
    log_density = -(draws.detach()[:, :2] - theta).pow(2).sum(-1)  # the model's own parameters
    surrogate = direction_surrogate(draws, direction, log_density=log_density)
    expected = -(draws * direction).sum() / len(draws) - log_density.mean()
    assert torch.allclose(surrogate, expected, rtol=1e-14, atol=0)
    surrogate.backward()
    expected_theta = -2 * (draws.detach()[:, :2] - theta.detach()).mean(0)  # d/dtheta of -mean log p
    assert torch.allclose(theta.grad, expected_theta, rtol=0, atol=1e-14)
    # With a value, the gradient is unchanged and the value is reported.
    theta.grad = None
    value = torch.tensor(7.0, dtype=DTYPE)
    log_density = -(draws.detach()[:, :2] - theta).pow(2).sum(-1)
    reported = direction_surrogate(_draw(weight, bias, noise), direction, value=value, log_density=log_density)
    reported.backward()
    assert reported.item() == 7.0 and torch.allclose(theta.grad, expected_theta, rtol=0, atol=1e-14)


def test_one_sgd_step_moves_the_draws_along_the_direction():
    # A shift sampler x = xi + b: one gradient-descent step b -= lr * grad moves every draw
    # by lr * mean(v).
    b = torch.zeros(2, dtype=DTYPE, requires_grad=True)
    noise = torch.randn(50, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    direction = torch.tensor([1.0, -2.0], dtype=DTYPE).expand(50, 2)
    direction_surrogate(noise + b, direction).backward()
    with torch.no_grad():
        b -= 0.1 * b.grad
    assert torch.allclose(b.detach(), 0.1 * torch.tensor([1.0, -2.0], dtype=DTYPE), rtol=0, atol=1e-15)
