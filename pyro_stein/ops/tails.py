"""A coordinate-wise map that gives Gaussian noise polynomial tails.  Pure PyTorch.

A sampler built from Gaussian noise by an affine map and a network that is asymptotically
linear (SiLU, ReLU) has Gaussian tails whatever its weights, so it cannot represent a
Cauchy or a Student-t posterior.  ``tail_stretch`` is the identity at ``tail_weight = 0`` and
turns a standard normal ``u`` into a variable whose tail decays like ``|x|^(-2/tail_weight)``,
so one trained number per coordinate moves the sampler between Gaussian and Cauchy-like
tails (``tail_weight = 2`` gives tail index 1, the Cauchy's).  It is strictly increasing,
hence invertible, with a closed-form log-derivative.

The construction follows the idea of tail-adaptive flows (Jaini, Kobyzev, Yu & Brubaker,
"Tails of Lipschitz Triangular Flows", ICML 2020; Hickling & Prangle, "Flexible Tails for
Normalizing Flows", 2023): a base of fixed light tails needs a non-Lipschitz layer to reach
heavy tails.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tail_stretch", "tail_stretch_log_derivative"]

#: ``tail_weight * u**2 / 4`` is clamped here so that a far draw stays finite (``exp(60)``
#: is about ``1e26``, within float32) instead of overflowing.
_MAX_EXPONENT = 60.0


def tail_stretch(u: Tensor, tail_weight: Tensor) -> Tensor:
    """``u * exp(tail_weight * u**2 / 4)``, coordinate-wise.

    Args:
        u: values, shape ``(..., D)``.
        tail_weight: non-negative weights, shape ``(D,)`` (broadcast against ``u``).

    Returns:
        The stretched values, same shape as ``u``.  For ``u ~ N(0, 1)`` the result has
        ``P(|x| > t)`` decaying like ``t^(-2 / tail_weight)`` (up to a logarithmic factor).

    Example:
        >>> import torch
        >>> from pyro_stein.ops.tails import tail_stretch
        >>> u = torch.tensor([-1.0, 0.0, 2.0])
        >>> tail_stretch(u, torch.zeros(3)).tolist()
        [-1.0, 0.0, 2.0]
        >>> round(tail_stretch(torch.tensor([2.0]), torch.tensor([1.0])).item(), 3)
        5.437
    """
    return u * torch.exp((tail_weight * u.square() / 4).clamp(max=_MAX_EXPONENT))


def tail_stretch_log_derivative(u: Tensor, tail_weight: Tensor) -> Tensor:
    """``log d tail_stretch(u) / du`` coordinate-wise (away from the clamp), same shape as ``u``."""
    half = tail_weight * u.square() / 2
    return half / 2 + torch.log1p(half)

