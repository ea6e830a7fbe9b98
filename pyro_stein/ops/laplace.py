"""The Laplace approximation of a batched log density ``(N, D) -> (N,)``: its mode by L-BFGS
polished by Newton steps, the exact negative Hessian by double backward, and a safe
Cholesky factor of the Laplace covariance.

Pure tensor math: the log density is a callable, so no Pyro here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .caller import warn

__all__ = [
    "BatchedLogDensity",
    "find_mode",
    "laplace_approximation",
    "laplace_scale_tril",
    "negative_hessian",
    "refine_mode",
]

#: ``(N, D) -> (N,)``.
BatchedLogDensity = Callable[[Tensor], Tensor]

def find_mode(log_density: BatchedLogDensity, init: Tensor, *, max_iter: int = 500) -> Tensor:
    """Maximise a log density with L-BFGS (strong Wolfe line search) from ``init``.

    Args:
        log_density: batched ``(N, D) -> (N,)``.
        init: ``(D,)`` starting point where the density is finite.
        max_iter: iteration budget (function evaluations are bounded by ``2 * max_iter``).

    Returns:
        The best point seen (where the log density was finite and highest).  Whether it is
        a mode is for `laplace_approximation()` to judge, in posterior-scale units.
    """
    z = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [z],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    best = {"value": math.inf, "point": init.detach().clone()}

    def closure() -> Tensor:
        value = -log_density(z.unsqueeze(0))[0]
        if not torch.isfinite(value):
            # An infinite objective makes the line search shrink its step.
            z.grad = torch.zeros_like(z)
            return value.detach().new_tensor(math.inf)
        # autograd.grad, not backward(): the model's own parameters must not collect
        # gradients from the initialisation.
        (z.grad,) = torch.autograd.grad(value, z)
        if not torch.isfinite(z.grad).all():
            z.grad = torch.zeros_like(z)
            return value.detach().new_tensor(math.inf)
        if value.item() < best["value"]:
            best.update(value=value.item(), point=z.detach().clone())
        return value

    try:
        optimizer.step(closure)
    except RuntimeError as error:  # a line search that ran into NaN arithmetic
        warn(f"mode search stopped early: {error}", RuntimeWarning)
    return best["point"]


def _gradient(log_density: BatchedLogDensity, point: Tensor) -> tuple[Tensor, Tensor]:
    z = point.detach().clone().requires_grad_(True)
    value = log_density(z.unsqueeze(0))[0]
    (grad,) = torch.autograd.grad(value, z)
    return value.detach(), grad


def laplace_approximation(
    log_density: BatchedLogDensity,
    init: Tensor,
    *,
    max_iter: int = 500,
    newton_steps: int = 5,
    tolerance: float = 0.05,
) -> tuple[Tensor, Tensor] | None:
    """Mode and negative Hessian of a log density, or ``None`` if no mode is found.

    L-BFGS finds a candidate, then up to ``newton_steps`` damped Newton steps with the
    exact Hessian polish it.  The candidate is accepted when the Hessian is positive
    definite and the Newton decrement ``sqrt(g^T H^{-1} g)``, the distance to the mode in
    units of the Laplace standard deviation, is below ``tolerance``: a criterion that
    does not depend on the scale of the latents.

    Returns:
        ``(mode, precision)`` or ``None``.
    """
    point = find_mode(log_density, init, max_iter=max_iter)
    for _ in range(newton_steps + 1):
        value, grad = _gradient(log_density, point)
        precision = negative_hessian(log_density, point)
        chol, info = torch.linalg.cholesky_ex(precision)
        if info != 0 or not torch.isfinite(chol).all() or not torch.isfinite(grad).all():
            return None
        step = torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
        decrement = torch.dot(grad, step).clamp_min(0).sqrt().item()
        if decrement < tolerance:
            return point, precision
        # Damped Newton: halve the step until the density increases.
        for _ in range(20):
            candidate = point + step
            new_value = log_density(candidate.unsqueeze(0))[0].detach()
            if torch.isfinite(new_value) and new_value >= value:
                point = candidate
                break
            step = step / 2
        else:
            return None
    return None


def refine_mode(
    value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    point: Tensor,
    precision: Tensor,
    *,
    max_steps: int = 10,
    tolerance: float = 0.05,
) -> tuple[Tensor, float]:
    """Move ``point`` to the mode of another log density whose curvature is close to
    ``precision``: quasi-Newton steps ``z + precision^{-1} grad`` with the fixed
    ``precision``, each halved until the log density increases.

    For a subsampled model the Laplace approximation is found on one fixed minibatch,
    whose mode lies about ``sqrt(rows / subsample_size)`` posterior sds from the full
    data's; its Hessian, though, is close to the full data's, so a few steps on the full
    data's value and gradient (one pass over the data each) close that gap.

    Args:
        value_and_grad: ``(D,) -> (value, grad)`` of the log density to maximise.
        point: ``(D,)`` start, where the log density is finite.
        precision: ``(D, D)`` positive definite.
        max_steps: most steps (each costs one evaluation, more when halved).
        tolerance: stop when the decrement ``sqrt(g^T precision^{-1} g)`` (the distance
            to the mode in the Laplace sds) is below it.

    Returns:
        The best point and its last decrement (``inf`` if the gradient was not finite).

    Example:
        >>> import torch
        >>> target = torch.tensor([3.0, -1.0])
        >>> def value_and_grad(z):
        ...     return -0.5 * ((z - target) ** 2).sum(), target - z
        >>> point, decrement = refine_mode(value_and_grad, torch.zeros(2), 1.1 * torch.eye(2))
        >>> torch.allclose(point, target, atol=0.1), decrement < 0.05
        (True, True)
    """
    chol, info = torch.linalg.cholesky_ex(precision)
    if info != 0:
        return point, math.inf
    value, grad = value_and_grad(point)
    decrement = math.inf
    for taken in range(max_steps + 1):
        if not (torch.isfinite(value) and torch.isfinite(grad).all()):
            return point, math.inf
        step = torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
        decrement = torch.dot(grad, step).clamp_min(0).sqrt().item()
        if decrement < tolerance or taken == max_steps:
            break
        for _ in range(20):
            new_value, new_grad = value_and_grad(point + step)
            if torch.isfinite(new_value) and new_value >= value:
                point, value, grad = point + step, new_value, new_grad
                break
            step = step / 2
        else:
            break
    return point, decrement


def negative_hessian(log_density: BatchedLogDensity, point: Tensor, *, chunk_size: int = 256) -> Tensor:
    """``-d^2 log p / dz^2`` at ``point`` (``(D,) -> (D, D)``), exact by double backward.

    Row ``i`` of the Hessian is the gradient of ``d log p / dz_i`` taken at its own copy
    of ``point``, so one batched evaluation on ``D`` copies gives all rows at once
    (in chunks of ``chunk_size`` copies to bound memory).
    """
    dim = point.shape[-1]
    rows = []
    for start in range(0, dim, chunk_size):
        stop = min(start + chunk_size, dim)
        copies = point.detach().expand(stop - start, dim).clone().requires_grad_(True)
        (grads,) = torch.autograd.grad(log_density(copies).sum(), copies, create_graph=True)
        picked = grads[torch.arange(stop - start), torch.arange(start, stop)].sum()
        (block,) = torch.autograd.grad(picked, copies)
        rows.append(block)
    hessian = torch.cat(rows)
    return -0.5 * (hessian + hessian.T)


def laplace_scale_tril(precision: Tensor, fallback_scale: float) -> tuple[Tensor, str]:
    """Lower Cholesky factor of the Laplace covariance ``precision^{-1}``, made safe.

    Computed in float64 without forming the covariance: with ``J`` the order-reversing
    permutation and ``J P J = C C^T``, ``(J C^{-T} J)`` is lower triangular and squares to
    ``P^{-1}``.  Directions of non-positive curvature (a saddle, a flat improper prior)
    get the smallest positive curvature seen, i.e. the widest scale of the others.

    Args:
        precision: symmetric ``(D, D)`` negative Hessian.
        fallback_scale: isotropic scale when no direction has positive curvature.

    Returns:
        ``(scale_tril, status)`` in ``precision``'s dtype, with status ``"laplace"``,
        ``"regularized"`` or ``"isotropic"``.
    """
    dim = precision.shape[-1]
    options = {"dtype": precision.dtype, "device": precision.device}
    if not torch.isfinite(precision).all():
        return fallback_scale * torch.eye(dim, **options), "isotropic"
    p64 = precision.double()
    status = "laplace"
    chol, info = torch.linalg.cholesky_ex(p64.flip(0, 1))
    if info != 0:
        eigvals, eigvecs = torch.linalg.eigh(p64)
        positive = eigvals > eigvals.abs().max() * dim * torch.finfo(torch.float64).eps
        if not positive.any():
            return fallback_scale * torch.eye(dim, **options), "isotropic"
        eigvals = torch.where(positive, eigvals, eigvals[positive].min())
        p64 = (eigvecs * eigvals) @ eigvecs.T
        chol = torch.linalg.cholesky(0.5 * (p64 + p64.T).flip(0, 1))
        status = "regularized"
    eye = torch.eye(dim, dtype=torch.float64, device=precision.device)
    upper_root = torch.linalg.solve_triangular(chol.T, eye, upper=True)  # C^{-T}
    return upper_root.flip(0, 1).to(**options), status
