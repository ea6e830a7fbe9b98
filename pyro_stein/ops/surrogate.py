"""The surrogate through which a particle engine moves a sampler's draws.

For draws ``x_i = G_eta(xi_i)`` and per-draw directions ``v_i`` (a Stein direction, a
transport towards a flow's batch), the surrogate

    - 1/N sum_i <x_i, v_i>,    v_i detached,

has the gradient ``-1/N sum_i (dx_i / deta)^T v_i``: one optimizer step on it moves every
draw along its direction (Wang & Liu 2016, eq. 6).  Pure tensor math.

References:
    D. Wang and Q. Liu. "Learning to Draw Samples: With Application to Amortized MLE for
    Generative Adversarial Learning." arXiv:1611.01722, 2016.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["direction_surrogate"]


def direction_surrogate(
    draws: Tensor, direction: Tensor, value: Tensor | None = None, log_density: Tensor | None = None
) -> Tensor:
    """A scalar whose gradient moves each row of ``draws`` along ``direction``.

    Args:
        draws: ``(N, D)``, differentiable in the sampler's parameters.
        direction: ``(N, D)``, the direction of each draw (detached here).
        value: what the scalar evaluates to (a monitored figure); default the surrogate's
            own value.  Only its value is used, never its gradient.
        log_density: optional ``(M,)`` log densities whose mean is ascended too, e.g. the
            model's log joint at the draws for its own parameters (amortized maximum
            likelihood).

    Returns:
        A 0-dim tensor.

    Example:
        >>> import torch
        >>> from pyro_stein.ops.surrogate import direction_surrogate
        >>> shift = torch.zeros(2, requires_grad=True)
        >>> draws = torch.randn(100, 2) + shift
        >>> direction_surrogate(draws, torch.ones(100, 2)).backward()
        >>> torch.allclose(shift.grad, -torch.ones(2))  # descent moves the draws along the direction
        True
    """
    surrogate = -(draws * direction.detach()).sum() / draws.shape[0]
    if log_density is not None:
        surrogate = surrogate - log_density.mean()
    if value is None:
        return surrogate
    return surrogate + (value.detach() - surrogate).detach()
