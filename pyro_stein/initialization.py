"""Initialisation: per-site starting values, and a Laplace fit in unconstrained space.

Per-site strategies follow `pyro.infer.autoguide.initialization`, but never sample
from a distribution that cannot be sampled (``ImproperUniform``): they build values from
the site's shape and support instead.

`find_mode()`, `laplace_approximation()` and `negative_hessian()` work on any
batched log density ``(N, D) -> (N,)``, `laplace_scale_tril()` on a precision matrix;
none of them holds Pyro.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch
from pyro.infer.autoguide import initialization as pyro_init
from torch import Tensor
from torch.distributions import transform_to

__all__ = [
    "find_mode",
    "laplace_approximation",
    "init_to_feasible",
    "init_to_median",
    "init_to_uniform",
    "init_to_value",
    "laplace_scale_tril",
    "negative_hessian",
]

BatchedLogDensity = Callable[[Tensor], Tensor]


def _from_unconstrained(site: dict, fill: Callable[[torch.Size], Tensor]) -> Tensor:
    fn = site["fn"]
    transform = transform_to(fn.support)
    shape = fn.batch_shape + fn.event_shape
    unconstrained = fill(transform.inverse_shape(shape))
    value = transform(unconstrained).detach()
    value._pyro_custom_init = False
    return value


def _prototype_options(site: dict) -> dict:
    # Follow the dtype and device of the distribution's parameters.
    fn = site["fn"]
    for attr in ("loc", "probs", "rate", "concentration", "low", "scale", "covariance_matrix"):
        value = getattr(fn, attr, None)
        if isinstance(value, Tensor):
            return {"dtype": value.dtype, "device": value.device}
    return {"dtype": torch.get_default_dtype()}


def init_to_feasible(site: dict | None = None):
    """Initialise to the image of zero under ``transform_to(support)``; shape-based, so it
    works for ``ImproperUniform`` too."""
    if site is None:
        return init_to_feasible
    options = _prototype_options(site)
    return _from_unconstrained(site, lambda shape: torch.zeros(shape, **options))


def init_to_uniform(site: dict | None = None, radius: float = 2.0):
    """Initialise to a uniform draw on ``(-radius, radius)`` in unconstrained space, as Stan
    does; shape-based, so it works for ``ImproperUniform`` too."""
    if site is None:
        return lambda s: init_to_uniform(s, radius=radius)
    options = _prototype_options(site)
    return _from_unconstrained(site, lambda shape: (2 * torch.rand(shape, **options) - 1) * radius)


def init_to_median(site: dict | None = None, num_samples: int = 15):
    """Initialise to the median of ``num_samples`` prior draws (Pyro's default for
    autoguides); fall back to `init_to_feasible()` where the prior cannot be sampled
    or is multivariate."""
    if site is None:
        return functools.partial(init_to_median, num_samples=num_samples)
    try:
        return pyro_init.init_to_median(site, num_samples=num_samples, fallback=init_to_feasible)
    except NotImplementedError:
        return init_to_feasible(site)


def init_to_value(site: dict | None = None, values: dict | None = None, *, fallback: Callable = init_to_median):
    """Initialise sites named in ``values`` to those values, the others with ``fallback``.

    Example:
        >>> guide = AutoNeuralSampler(model, init_loc_fn=init_to_value(values={"mu": torch.tensor(1.0)}))  # doctest: +SKIP
    """
    if site is None:
        return functools.partial(init_to_value, values=values or {}, fallback=fallback)
    values = values or {}
    if site["name"] in values:
        return values[site["name"]]
    return fallback(site)


# ---------------------------------------------------------------- Laplace fit
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
        warnings.warn(f"mode search stopped early: {error}", RuntimeWarning, stacklevel=2)
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
