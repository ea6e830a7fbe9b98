"""Does a set of draws stay put under a kernel that leaves the target invariant?

Pure tensor math; the log density is a callable, so no Pyro here.

If draws ``z_1..z_M`` come from ``p``, then after ``K`` Metropolis-adjusted Langevin (MALA)
steps, which leave ``p`` exactly invariant, the moved draws come from ``p`` again: the
distribution does not drift.  Draws from a wrong sampler move towards ``p``: too-narrow draws
spread out, too-light tails grow, draws stuck in a funnel's neck climb out of it, draws next
to a hard wall move away from it.  `mala_drift()` runs the chains; `coverage_drift()`
measures, per coordinate, what fraction of the moved draws fall outside the central 95%
and 99% intervals of the starting draws and inside their central 50% interval (5%, 1% and
50% under ``p``), and how far the mean moved (0 under ``p``), each with its Monte Carlo standard error.
Interval coverages are binomial figures, so their noise is known without assuming finite
moments: they work on Cauchy draws as on Gaussian ones.

References:
    G. O. Roberts and R. L. Tweedie. "Exponential convergence of Langevin distributions and
    their discrete approximations." Bernoulli 2(4), 1996.
    J. Gorham and L. Mackey. "Measuring Sample Quality with Stein's Method." NeurIPS 2015
    (why a sample-quality check must see the tails).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .langevin import langevin_flow

__all__ = ["CoverageDrift", "MalaDrift", "coverage_drift", "gaussian_log_density_bands", "mala_drift"]

#: ``(N, D) -> (log_p (N,), score (N, D), valid (N,))``.
LogProbAndScore = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]

#: How fast ``log h`` follows the acceptance rate between steps.
_ADAPTATION_RATE = 1.0


class MalaDrift(NamedTuple):
    """The end of `mala_drift()`.

    Attributes:
        start_log_p, end_log_p: ``(M,)`` log densities at the start and at the end.
        end: ``(M, D)`` the moved draws.
        acceptance: the mean acceptance probability over steps and chains.
        step_size: the last step size.
        invalid_proposals: the fraction of proposals where the log density or its gradient
            was not finite (a hard wall, or arithmetic overflow).
    """

    start_log_p: Tensor
    end_log_p: Tensor
    end: Tensor
    acceptance: float
    step_size: float
    invalid_proposals: float


def mala_drift(
    log_prob_and_score: LogProbAndScore,
    start: Tensor,
    *,
    num_steps: int = 30,
    target_accept: float = 0.6,
    heavy_jumps: bool = True,
    generator: torch.Generator | None = None,
) -> MalaDrift:
    """``num_steps`` MALA steps from every row of ``start`` (assumed whitened: roughly unit
    scale in every direction), with one step size for all chains adapted between steps
    towards ``target_accept``.  Each step is one step of
    [`langevin_flow()`][pyro_stein.ops.langevin.langevin_flow].

    With ``heavy_jumps`` each MALA step is followed by a random-walk Metropolis step that
    moves one coordinate of each chain (chosen at random) by a standard Cauchy jump: a
    symmetric proposal, so it too leaves ``p`` invariant, but it reaches far into heavy
    tails and across a funnel's width in one step, where Langevin steps sized for the
    bulk take hundreds.  (A Gaussian posterior rejects the far jumps, and is not moved.)

    The step size depends on all ``M`` chains together, so its dependence on any one chain
    is ``O(1/M)``: the moves leave ``p`` invariant up to that.  Chains that start where the
    log density is not finite stay put.

    Example:
        >>> import torch
        >>> def gaussian(z):
        ...     return -z.pow(2).sum(-1) / 2, -z, torch.ones(len(z), dtype=torch.bool)
        >>> run = mala_drift(gaussian, 0.5 * torch.randn(4000, 3), generator=torch.Generator().manual_seed(0))
        >>> 0.9 < run.end.std().item() < 1.1  # too-narrow draws spread out to the target's sd
        True
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps!r}")
    z = start.detach()
    log_p, score, valid = log_prob_and_score(z)
    start_log_p = log_p.detach()
    started_valid = valid
    # Roberts & Rosenthal's optimal scaling for a whitened Gaussian, capped.
    step = min(1.0, 2.7 * z.shape[-1] ** (-1.0 / 3.0))
    accepted_sum, invalid_sum = 0.0, 0.0
    for _ in range(num_steps):
        # One step at a time: the step size changes between steps.
        run = langevin_flow(log_prob_and_score, z, 1, step, initial=(log_p, score, valid), generator=generator)
        z, log_p, score, valid = run.particles, run.log_p, run.score, run.valid
        rate, invalid = torch.stack([run.acceptance, run.invalid_proposals]).tolist()
        accepted_sum += rate
        invalid_sum += invalid
        step *= math.exp(_ADAPTATION_RATE * (rate - target_accept))
        if heavy_jumps:
            z, log_p, score, valid = _coordinate_jump(log_prob_and_score, z, log_p, score, valid, started_valid, generator)
    return MalaDrift(start_log_p, log_p.detach(), z, accepted_sum / num_steps, step, invalid_sum / num_steps)


def _coordinate_jump(
    log_prob_and_score: LogProbAndScore,
    z: Tensor,
    log_p: Tensor,
    score: Tensor,
    valid: Tensor,
    started_valid: Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    num, dim = z.shape
    coordinate = torch.randint(dim, (num,), device=z.device, generator=generator)
    uniform = torch.rand(num, dtype=z.dtype, device=z.device, generator=generator)
    jump = torch.tan(math.pi * (uniform - 0.5))  # standard Cauchy
    proposal = z.clone()
    proposal[torch.arange(num, device=z.device), coordinate] += jump
    new_log_p, new_score, new_valid = log_prob_and_score(proposal)
    new_valid = new_valid & torch.isfinite(new_log_p) & torch.isfinite(new_score).all(-1)
    log_alpha = torch.where(new_valid, new_log_p - log_p, torch.full_like(log_p, -math.inf))
    accept = (torch.rand(num, dtype=z.dtype, device=z.device, generator=generator).log() < log_alpha) & started_valid
    z = torch.where(accept.unsqueeze(-1), proposal, z)
    return (
        z,
        torch.where(accept, new_log_p, log_p),
        torch.where(accept.unsqueeze(-1), new_score, score),
        torch.where(accept, new_valid, valid),
    )


class CoverageDrift(NamedTuple):
    """Per-coordinate drift figures of `coverage_drift()`, each ``(C,)``, with standard
    errors under the hypothesis that the start draws come from the invariant law.

    Attributes:
        outer: fraction of the end draws outside the start draws' central 95% interval (0.05).
        tail: fraction outside their central 99% interval (0.01).
        inner: fraction inside their central 50% interval (0.5).
        mean_shift: mean change over the start draws' sd (0).
    """

    outer: Tensor
    outer_se: Tensor
    tail: Tensor
    tail_se: Tensor
    inner: Tensor
    inner_se: Tensor
    mean_shift: Tensor
    mean_shift_se: Tensor


def coverage_drift(start: Tensor, end: Tensor) -> CoverageDrift:
    """Compare ``end`` draws ``(M, C)`` with the ``start`` draws they moved from.

    The standard errors of the coverages are those of a binomial fraction, doubled in
    variance for the estimated interval ends; that of the mean shift is the paired one.

    Example:
        >>> import torch
        >>> start = torch.randn(4000, 2)
        >>> drift = coverage_drift(start, 2.0 * start.roll(1, 0))  # the same draws, twice as wide
        >>> bool((drift.outer > 0.3).all() and (drift.inner < 0.3).all())
        True
    """
    start, end = start.double(), end.double()
    num = start.shape[0]
    levels = torch.tensor([0.005, 0.025, 0.25, 0.75, 0.975, 0.995], dtype=start.dtype, device=start.device)
    q = torch.quantile(start, levels, dim=0)
    tail = ((end < q[0]) | (end > q[5])).double().mean(0)
    outer = ((end < q[1]) | (end > q[4])).double().mean(0)
    inner = ((end >= q[2]) & (end <= q[3])).double().mean(0)
    sd = start.std(0).clamp_min(torch.finfo(start.dtype).tiny)
    change = end - start
    shift = change.mean(0) / sd
    shift_se = change.std(0) / sd / math.sqrt(num)
    outer_se = torch.full_like(outer, math.sqrt(2 * 0.05 * 0.95 / num))
    tail_se = torch.full_like(tail, math.sqrt(2 * 0.01 * 0.99 / num))
    inner_se = torch.full_like(inner, math.sqrt(2 * 0.5 * 0.5 / num))
    return CoverageDrift(outer, outer_se, tail, tail_se, inner, inner_se, shift, shift_se)


def _chi2_quantile(dim: int, q: float) -> float:
    # Wilson-Hilferty: accurate to about 1e-3 relative from a few tens of degrees of freedom.
    z = statistics.NormalDist().inv_cdf(q)
    c = 2.0 / (9.0 * dim)
    return dim * (1.0 - c + z * math.sqrt(c)) ** 3


def _chi2_cdf(dim: int, x: float) -> float:
    return float(torch.special.gammainc(torch.tensor(dim / 2.0, dtype=torch.float64), torch.tensor(x / 2.0, dtype=torch.float64)))


def gaussian_log_density_bands(dim: int, sd_error: float = 0.1, tail_sd_error: float = 0.2) -> dict[str, tuple[float, float]]:
    """What `coverage_drift()` shows in the log density of a ``dim``-dimensional Gaussian
    posterior when the draws' scale is off by ``sd_error`` in every coordinate.

    Draws ``s z`` with ``z`` exact have log density ``c - s^2 chi2_D / 2``; relaxed to the
    posterior, ``c - chi2_D / 2``.  For ``s = 1 -+ sd_error`` (``1 -+ tail_sd_error`` for the
    99% interval, whose coverage is noisier) this gives the fraction of relaxed draws outside
    the central 95% and 99% intervals of the starting log densities, the fraction inside their
    50% interval, and the mean's change in sds of the starting log densities.  In many
    dimensions a small error in every coordinate moves the log density by many of its sds
    (about ``2 sd_error sqrt(D / 2)``), so these bands are wide there.

    Args:
        dim: the number of coordinates ``D``.
        sd_error: the relative scale error the bands allow.
        tail_sd_error: the same for the 99% interval.

    Returns:
        ``{"outside the central 95% interval": (low, high), "outside the central 99%
        interval": ..., "inside the central 50% interval": ..., "mean shift": (low, high)}``.

    Example:
        >>> from pyro_stein.ops.stationarity import gaussian_log_density_bands
        >>> low, high = gaussian_log_density_bands(400)["mean shift"]
        >>> round(low, 2), round(high, 2)
        (-3.32, 2.45)
    """

    def outside(scale: float, level: float) -> float:
        half = (1.0 - level) / 2.0
        lower, upper = (scale**2 * _chi2_quantile(dim, q) for q in (half, 1.0 - half))
        return 1.0 - (_chi2_cdf(dim, upper) - _chi2_cdf(dim, lower))

    def pair(values: list[float]) -> tuple[float, float]:
        return min(values), max(values)

    scales = (1.0 - sd_error, 1.0 + sd_error)
    tail_scales = (1.0 - tail_sd_error, 1.0 + tail_sd_error)
    return {
        "outside the central 95% interval": pair([outside(s, 0.95) for s in scales]),
        "outside the central 99% interval": pair([outside(s, 0.99) for s in tail_scales]),
        "inside the central 50% interval": pair([1.0 - outside(s, 0.5) for s in scales]),
        # (E_end - E_start) / sd_start with E = -s^2 D / 2, sd = s^2 sqrt(2 D) / 2.
        "mean shift": pair([-(1.0 - s**2) / s**2 * math.sqrt(dim / 2.0) for s in scales]),
    }
