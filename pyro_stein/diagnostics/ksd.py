"""Judging draws against the model itself: `ksd()`, the kernelized Stein discrepancy,
which needs no reference draws."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..glue.density import UnconstrainedLogDensity
from ..glue.layout import LatentLayout
from ..ops.caller import warn
from ..ops.kernels import IMQKernel
from ..ops.stein import squared_ksd_blocked

__all__ = ["ksd", "ksd_of_latents"]

def ksd(
    model: Callable[..., Any],
    samples: dict[str, Tensor],
    *args: Any,
    max_draws: int = 4000,
    block_size: int = 1024,
    **kwargs: Any,
) -> float:
    """Kernelized Stein discrepancy between draws and the posterior of ``model``.

    Needs no reference: only the score of the model's log joint at the draws.  Draws from
    the posterior give a value near zero (the estimate is unbiased for the squared
    discrepancy, so it fluctuates around zero by ``O(1/n)``); draws that are shifted, too
    narrow, too wide or miss a mode give clearly larger values.  Use it to compare samplers
    on the same model, or to see whether a run has converged.

    It is computed in the model's unconstrained space (where the engines work), in
    coordinates whitened by the draws' own mean and covariance (so the figure does not
    depend on the units of the parameters), with the inverse multiquadric kernel
    ``k(x, y) = (1 + ||x - y||^2)^(-1/2)``, whose discrepancy detects non-convergence
    (Gorham & Mackey, 2017); the U-statistic over pairs of distinct draws.

    Args:
        model: the Pyro model.
        samples: constrained draws of every latent site, ``{site: (n, *site_shape)}``, as
            ``FitResult.sample``, ``MCMC.get_samples()`` or ``Predictive`` return them
            (other sites are ignored).
        *args: the model's positional arguments.
        **kwargs: the model's keyword arguments.
        max_draws: at most this many draws are used, evenly spaced (the cost is
            ``O(n^2 D)``).
        block_size: rows of the Stein kernel matrix held in memory at a time.

    Returns:
        The discrepancy, ``sqrt(max(KSD^2 estimate, 0))``; ``inf`` (with a warning) when
        the log density or its gradient is not finite at some draw, i.e. draws lie where
        the posterior has no mass.

    Raises:
        KeyError: a latent site has no draws.
        ValueError: draws of a site lie outside its support or have the wrong shape.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> import pyro_stein
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> good = pyro_stein.ksd(model, {"x": torch.randn(2000)})
        >>> shifted = pyro_stein.ksd(model, {"x": torch.randn(2000) + 1.0})
        >>> good < 0.05 < shifted
        True

    References:
        J. Gorham and L. Mackey. "Measuring Sample Quality with Kernels." ICML 2017.
        Q. Liu, J. Lee and M. Jordan. "A Kernelized Stein Discrepancy for Goodness-of-fit
        Tests." ICML 2016.

    Subsampled models are judged on one fixed minibatch, whose score is a noisy estimate
    of the full-data score; the figure is then biased upwards.
    """
    layout = LatentLayout(model, *args, **kwargs)
    latents = layout.pack(samples)
    density = UnconstrainedLogDensity(model, layout, frozen_subsample=True)
    return ksd_of_latents(density, latents, args, kwargs, max_draws=max_draws, block_size=block_size)


def ksd_of_latents(
    density: UnconstrainedLogDensity,
    latents: Tensor,
    args: tuple,
    kwargs: dict,
    *,
    max_draws: int = 4000,
    block_size: int = 1024,
) -> float:
    """`ksd()` for unconstrained latent draws ``(n, D)`` of ``density``'s layout."""
    if not isinstance(max_draws, int) or max_draws < 2:
        raise ValueError(f"max_draws must be an integer >= 2, got {max_draws!r}")
    num = latents.shape[0]
    if num < 2:
        raise ValueError(f"ksd needs at least two draws, got {num}")
    if num > max_draws:
        latents = latents[torch.linspace(0, num - 1, max_draws).round().long()]
    scores, valid = [], []
    for chunk in latents.split(block_size):
        _, score, ok = density.log_prob_and_score(chunk, args, kwargs)
        scores.append(score)
        valid.append(ok)
    score, ok = torch.cat(scores), torch.cat(valid)
    if not bool(ok.all()):
        warn(
            f"the log density or its gradient is not finite at {int((~ok).sum())} of {len(ok)} "
            "draws (they lie where the posterior has no mass); ksd is infinite",
            RuntimeWarning,
        )
        return math.inf
    centered = latents - latents.mean(0)
    cov = centered.T @ centered / (len(latents) - 1)
    cov = cov + 1e-10 * torch.diagonal(cov).mean() * torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    scale_tril, info = torch.linalg.cholesky_ex(cov)
    if info != 0 and len(latents) <= 10 * latents.shape[1]:
        # Too few draws for a full covariance in this dimension: shrink it towards its
        # diagonal (Ledoit & Wolf's direction), fully once there are fewer draws than
        # coordinates.
        shrinkage = min(1.0, latents.shape[1] / len(latents))
        cov = (1 - shrinkage) * cov + shrinkage * torch.diag(torch.diagonal(cov))
        scale_tril, info = torch.linalg.cholesky_ex(cov)
    if info != 0:
        raise ValueError("the draws' covariance is singular (are some coordinates constant?)")
    whitened = torch.linalg.solve_triangular(scale_tril, centered.T, upper=False).T
    squared = squared_ksd_blocked(
        whitened, score @ scale_tril, IMQKernel(c=1.0, beta=-0.5, bandwidth=1.0), 1.0, block_size=block_size
    )
    return math.sqrt(max(float(squared), 0.0))
