"""Is a set of posterior draws right?  The reliability verdict of every fit.

Three checks, each on the model itself (no reference draws), each with a figure, the
threshold it was judged against, and what to do when it fails:

* ``support``: every draw, and every proposal of the stationarity check, has a finite log
  density.  A draw where it is ``-inf`` lies beyond a hard wall (``pyro.factor(..., -inf)``),
  where the posterior has no mass.
* ``stationarity``: a posterior-invariant kernel leaves posterior draws where they are.
  Thirty Metropolis-adjusted Langevin steps, each followed by a Cauchy jump of one
  coordinate (random-walk Metropolis), from the draws (in coordinates whitened by the
  draws' own mean and covariance) must not change, in any coordinate or in the log density,
  the fraction of draws outside the draws' central 95% interval (5%) or 99% interval (1%),
  inside their central 50% interval (50%) or their mean, by more than a sampler 10% too
  narrow or too wide would (20% for the 99% interval), and by more than the Monte Carlo
  error allows ([`pyro_stein.ops.stationarity`][pyro_stein.ops.stationarity]).
  Too narrow or too light-tailed draws spread out, draws stuck in a funnel's neck climb
  out, draws that are too wide contract.
* ``modes``: gradient ascents from dispersed starts find the posterior's modes, ascents from
  the draws find the modes the draws cover; a mode that holds, by its Laplace estimate, a
  share of the mass the draws do not reflect fails the check (the stationarity check cannot
  see it: Langevin steps do not jump between well-separated modes, and neither does any
  kernelized Stein discrepancy see the modes' weights).

The kernelized Stein discrepancy (`ksd()`) stays a figure beside the verdict: it misses
light tails and mode weights (Gorham & Mackey 2017).

References:
    Y. Yao, A. Vehtari, D. Simpson and A. Gelman. "Yes, but Did It Work?: Evaluating
    Variational Inference." ICML 2018.
    J. Gorham and L. Mackey. "Measuring Sample Quality with Kernels." ICML 2017.
    G. O. Roberts and R. L. Tweedie. "Exponential convergence of Langevin distributions and
    their discrete approximations." Bernoulli 2(4), 1996.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..glue.density import UnconstrainedLogDensity
from ..glue.layout import LatentLayout
from ..ops.dimensions import HIGH_DIMENSION
from ..ops.laplace import negative_hessian
from ..ops.modes import ascend, group_modes
from ..ops.stationarity import coverage_drift, gaussian_log_density_bands, mala_drift

__all__ = [
    "COVERAGE_BANDS",
    "Check",
    "Reliability",
    "UnreliableFitWarning",
    "check_reliability",
    "reliability_of_latents",
]


class UnreliableFitWarning(UserWarning):
    """A fit, or a set of draws, failed a reliability check: its draws may not be the
    posterior's.  The message names the check, its figure and threshold, and what to try;
    ``FitResult.reliability`` holds every check."""


#: Draws the checks use (evenly spaced from those given).
CHECK_DRAWS = 2000
#: Metropolis-adjusted Langevin steps of the stationarity check.
MALA_STEPS = 30
#: For a subsampled model the stationarity and modes checks run on the full data's log
#: density (`UnconstrainedLogDensity.on_full_data`): at most this many likelihood rows
#: times draws per evaluation (2000 draws up to 10k rows), and at least
#: `MIN_FULL_DATA_DRAWS` draws; beyond that they do not apply.
FULL_DATA_TERMS = 20_000_000
MIN_FULL_DATA_DRAWS = 500
#: Family-wise false-alarm rate of the stationarity check's noise allowance.
FALSE_ALARM_RATE = 0.001
#: What a Gaussian sampler whose sds are 10% off (20% for the 99% interval, whose
#: coverage is noisier and where a 10% band gave false alarms on exact draws) would show
#: after full relaxation: ``{statistic: (value for posterior draws, lowest allowed,
#: highest allowed)}``.
COVERAGE_BANDS = {
    "outside the central 95% interval": (0.05, 0.031, 0.078),
    "outside the central 99% interval": (0.01, 0.0020, 0.0394),
    "inside the central 50% interval": (0.5, 0.456, 0.542),
}
#: The largest allowed mean change, in sds of the draws.
MAX_MEAN_SHIFT = 0.1
#: The largest allowed fraction of the stationarity check's proposals with a non-finite log
#: density (a few overflow in a funnel's neck; a wall rejects a third of them).
MAX_INVALID_PROPOSALS = 0.01
#: Mode search: dispersed starts (the draws pushed out by these factors from their mean),
#: starts at the draws, ascent steps, and the largest allowed gap between a mode's share of
#: the mass and the share of draws that climb to it.
DISPERSION_FACTORS = (2.0, 3.0, 5.0, 8.0)
STARTS_PER_FACTOR = 8
OWN_STARTS = 128
ASCENT_STEPS = 200
MAX_MODE_SHARE_GAP = 0.15
#: Modes with a smaller share of the mass are not judged.
MIN_MODE_SHARE = 0.05
#: Dimensions up to which a mode's Laplace mass uses its Hessian (above: its height only).
HESSIAN_MAX_DIM = 100


@dataclass(frozen=True)
class Check:
    """One reliability check.

    Attributes:
        name: ``"support"``, ``"stationarity"`` or ``"modes"``.
        passed: ``True``, ``False``, or ``None`` where the check does not apply.
        figure: the figure that decided it.
        threshold: what the figure was judged against, in words.
        summary: what was measured, with the figure.
        advice: what to try when it failed (empty otherwise).
    """

    name: str
    passed: bool | None
    figure: float
    threshold: str
    summary: str
    advice: str = ""


@dataclass(frozen=True)
class Reliability:
    """The verdict on a set of draws: every `Check`, and the time they took.

    ``reliable`` is ``False`` when some check failed; a check that does not apply (``None``)
    does not count against it.
    """

    checks: tuple[Check, ...]
    seconds: float

    @property
    def reliable(self) -> bool:
        """No check failed."""
        return all(check.passed is not False for check in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that failed."""
        return tuple(check for check in self.checks if check.passed is False)

    def message(self) -> str:
        """The failed checks, their figures and advice, as one message."""
        if self.reliable:
            return "every reliability check passed: " + "; ".join(c.summary for c in self.checks)
        parts = [f"{c.name} check failed: {c.summary} (threshold: {c.threshold}). {c.advice}" for c in self.failed]
        return "the draws may not be the posterior's: " + " | ".join(parts)

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; the checks are {[c.name for c in self.checks]}")


def check_reliability(model: Callable[..., Any], samples: dict[str, Tensor], *args: Any, seed: int = 0, **kwargs: Any) -> Reliability:
    """The reliability checks (module docstring) on any posterior draws of ``model``: a fit's,
    MCMC's, an autoguide's.

    Args:
        model: the Pyro model.
        samples: constrained draws of every latent site, ``{site: (n, *site_shape)}``, as
            ``FitResult.sample``, ``MCMC.get_samples()`` or ``Predictive`` return them.
        *args: the model's positional arguments.
        seed: seeds the checks' own randomness (they leave the global generators alone).
        **kwargs: the model's keyword arguments.

    Returns:
        A `Reliability`; ``.reliable`` is the verdict, ``.message()`` says why.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> import pyro_stein
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> pyro_stein.check_reliability(model, {"x": torch.randn(2000)}).reliable
        True
        >>> narrow = pyro_stein.check_reliability(model, {"x": 0.6 * torch.randn(2000)})
        >>> narrow.reliable, narrow["stationarity"].passed
        (False, False)
    """
    layout = LatentLayout(model, *args, **kwargs)
    latents = layout.pack(samples)
    density = UnconstrainedLogDensity(model, layout, frozen_subsample=True)
    return reliability_of_latents(density, latents, args, kwargs, seed=seed)


def _coordinate_names(layout: LatentLayout) -> list[str]:
    names = []
    for site, value in layout.unpack_unconstrained(torch.zeros(1, layout.latent_dim, dtype=layout.dtype)):
        size = value.numel()
        names.extend([site["name"]] if size == 1 else [f"{site['name']}[{i}]" for i in range(size)])
    return names


def _evenly_spaced(latents: Tensor, count: int) -> Tensor:
    if len(latents) <= count:
        return latents
    return latents[torch.linspace(0, len(latents) - 1, count, device=latents.device).round().long()]


def _whitening(latents: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and Cholesky factor of the draws' covariance, shrunk towards its diagonal as
    the number of draws approaches the dimension."""
    num, dim = latents.shape
    mean = latents.mean(0)
    centered = latents - mean
    cov = centered.T @ centered / max(num - 1, 1)
    shrinkage = min(1.0, dim / num)
    cov = (1 - shrinkage) * cov + shrinkage * torch.diag(torch.diagonal(cov))
    diagonal = torch.diagonal(cov)
    cov = cov + 1e-10 * diagonal.mean() * torch.eye(dim, dtype=cov.dtype, device=cov.device)
    scale_tril, info = torch.linalg.cholesky_ex(cov)
    if info != 0:
        scale_tril = torch.diag(diagonal.clamp_min(1e-30).sqrt())
    return mean, scale_tril


def reliability_of_latents(
    density: UnconstrainedLogDensity, latents: Tensor, args: tuple, kwargs: dict, *, seed: int = 0
) -> Reliability:
    """`check_reliability()` for unconstrained draws ``(n, D)`` of ``density``'s layout."""
    started = time.perf_counter()
    generator = torch.Generator(device=latents.device).manual_seed(seed)
    not_applicable = ""
    count = CHECK_DRAWS
    density.setup(args, kwargs)  # what it finds includes whether the model subsamples
    if density.subsampled:
        rows = density.full_data_rows
        count = min(CHECK_DRAWS, FULL_DATA_TERMS // max(rows, 1))
        if not density.full_data_pass_applies:
            not_applicable = (
                "does not apply: the model subsamples more than one plate, so the log density of one minibatch "
                "is not the posterior's and no full-data pass is available"
            )
        elif count < MIN_FULL_DATA_DRAWS:
            not_applicable = (
                f"does not apply: the model subsamples its data, and evaluating its {rows} rows at the "
                f"{MIN_FULL_DATA_DRAWS} draws the check needs would exceed {FULL_DATA_TERMS:.0e} terms per evaluation"
            )
        else:
            density = density.on_full_data()
    latents = _evenly_spaced(latents.detach(), count)
    names = _coordinate_names(density.layout)

    def evaluate(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        parts = [density.log_prob_and_score(chunk, args, kwargs) for chunk in z.split(2048)]
        log_p, score, valid = (torch.cat(items) for items in zip(*parts))
        return log_p.detach(), score.detach(), valid

    _, _, valid = evaluate(latents)
    checks = []
    inside = latents[valid]
    if len(inside) < 10:
        checks.append(_support_check(density, latents, valid, 0.0, args, kwargs))
        return Reliability(tuple(checks), time.perf_counter() - started)
    mean, scale_tril = _whitening(inside)
    whitened = torch.linalg.solve_triangular(scale_tril, (inside - mean).T, upper=False).T

    def whitened_density(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lp, score, ok = evaluate(mean + w @ scale_tril.T)
        return lp, score @ scale_tril, ok

    if not_applicable:
        checks.append(_support_check(density, latents, valid, 0.0, args, kwargs))
        checks.append(Check("stationarity", None, math.nan, "", not_applicable))
        checks.append(Check("modes", None, math.nan, "", not_applicable))
        return Reliability(tuple(checks), time.perf_counter() - started)
    drift = mala_drift(whitened_density, whitened, num_steps=MALA_STEPS, generator=generator)
    checks.append(_support_check(density, latents, valid, drift.invalid_proposals, args, kwargs))
    checks.append(_stationarity_check(inside, mean + drift.end @ scale_tril.T, drift, names))
    checks.append(_modes_check(density, whitened, whitened_density, mean, scale_tril, args, kwargs, generator))
    return Reliability(tuple(checks), time.perf_counter() - started)


def _support_check(
    density: UnconstrainedLogDensity,
    latents: Tensor,
    valid: Tensor,
    invalid_proposals: float,
    args: tuple,
    kwargs: dict,
) -> Check:
    outside = 1.0 - float(valid.double().mean())
    summary = f"{outside:.1%} of the draws and {invalid_proposals:.1%} of the Langevin proposals from them have a non-finite log density"
    threshold = f"no draw, and at most {MAX_INVALID_PROPOSALS:.0%} of the proposals"
    if outside == 0 and invalid_proposals <= MAX_INVALID_PROPOSALS:
        return Check("support", True, max(outside, invalid_proposals), threshold, summary)
    culprits: list[str] = []
    if outside > 0:
        culprits = density.non_finite_sites(latents[~valid][0], args, kwargs)
    summary += f" (terms: {culprits})" if culprits else ""
    advice = (
        "The posterior has a hard wall: a log density of -inf (or NaN) inside the unconstrained space, as "
        "pyro.factor(..., -inf) writes it. Particle methods are biased next to a wall; give the restricted "
        "site a constrained support instead (a positive or interval distribution, or "
        "pyro.distributions.ImproperUniform with that support), so that the wall is at infinity."
    )
    return Check("support", False, max(outside, invalid_proposals), threshold, summary, advice)


def _noise_multiplier(num_tests: int) -> float:
    return statistics.NormalDist().inv_cdf(1 - FALSE_ALARM_RATE / (2 * num_tests))


def _shift_bounds(lower: float, upper: float) -> str:
    if math.isclose(-lower, upper, rel_tol=1e-6):
        return f"at most {upper:.2f} sd"
    return f"{lower:+.2f} to {upper:+.2f} sd"


def _bands(dim: int, like: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """``{statistic: (lowest, highest)}`` allowed per column (``D`` coordinates, then the
    log density), before the Monte Carlo allowance.  From ``HIGH_DIMENSION`` coordinates on,
    the log density's bands widen to what a 10% scale error in every coordinate shows (20%
    for the 99% interval): the coordinates' own bands allow that error, and in ``D``
    dimensions it moves the log density by about ``0.2 sqrt(D / 2)`` of its sds, so a
    per-coordinate band on the log density flagged a 400-D fit with sd ratios 0.94 to 1.02."""
    bands = {label: (torch.full_like(like, low), torch.full_like(like, high))
             for label, (_, low, high) in COVERAGE_BANDS.items()}
    bands["mean shift"] = (torch.full_like(like, -MAX_MEAN_SHIFT), torch.full_like(like, MAX_MEAN_SHIFT))
    if dim >= HIGH_DIMENSION:
        for label, (low, high) in gaussian_log_density_bands(dim).items():
            lows, highs = bands[label]
            lows[-1], highs[-1] = min(float(lows[-1]), low), max(float(highs[-1]), high)
    return bands


def _stationarity_check(start_latents: Tensor, end_latents: Tensor, drift: Any, names: list[str]) -> Check:
    # The figures are taken in the model's unconstrained coordinates, not the whitened ones:
    # whitening by the draws' own covariance fits those draws, so moved draws would look
    # wider in the later whitened coordinates even when nothing changed.
    start = torch.cat([start_latents, drift.start_log_p.unsqueeze(-1)], -1)
    end = torch.cat([end_latents, drift.end_log_p.unsqueeze(-1)], -1)
    names = [*names, "the log density"]
    figures = coverage_drift(start, end)
    multiplier = _noise_multiplier(4 * start.shape[-1])
    bands = _bands(start.shape[-1] - 1, figures.outer)
    worst: tuple[float, str, float, str] | None = None  # (excess in noise units, statistic, value, allowed)
    for label, value, se in (
        ("outside the central 95% interval", figures.outer, figures.outer_se),
        ("outside the central 99% interval", figures.tail, figures.tail_se),
        ("inside the central 50% interval", figures.inner, figures.inner_se),
    ):
        null = COVERAGE_BANDS[label][0]
        low, high = bands[label]
        allowance = multiplier * se
        upper, lower = torch.maximum(high, null + allowance), torch.minimum(low, null - allowance)
        excess = torch.maximum(value - upper, lower - value)
        index = int(excess.argmax())
        if float(excess[index]) > 0 and (worst is None or float(excess[index] / se[index]) > worst[0]):
            bounds = f"{max(0.0, float(lower[index])):.1%} to {float(upper[index]):.1%}"
            worst = (float(excess[index] / se[index]), f"{float(value[index]):.1%} of them lie {label} of the draws in "
                     f"{names[index]}, {null:.0%} for posterior draws", float(value[index]), bounds)
    low, high = bands["mean shift"]
    noise = multiplier * figures.mean_shift_se
    upper, lower = torch.maximum(high, noise), torch.minimum(low, -noise)
    excess = torch.maximum(figures.mean_shift - upper, lower - figures.mean_shift)
    index = int(excess.argmax())
    if float(excess[index]) > 0 and (worst is None or float(excess[index] / figures.mean_shift_se[index]) > worst[0]):
        worst = (float(excess[index] / figures.mean_shift_se[index]),
                 f"the mean of {names[index]} moved by {float(figures.mean_shift[index]):+.2f} sd",
                 float(figures.mean_shift[index]), _shift_bounds(float(lower[index]), float(upper[index])))
    steps = f"after {MALA_STEPS} Metropolis-adjusted Langevin steps and Cauchy coordinate jumps from the draws (acceptance {drift.acceptance:.2f}), which leave the posterior invariant"
    if worst is None:
        outer = float(figures.outer.max())
        return Check("stationarity", True, outer, "within the Monte Carlo error of 5% outside, 50% inside, no mean change",
                     f"{steps}, at most {outer:.1%} of the draws lie outside their central 95% interval in any coordinate")
    advice = (
        "The draws are not stationary under the posterior: the sampler is too narrow, too wide, too light-tailed, or "
        "stuck (a funnel's neck). Try a longer fit (num_steps); for a site whose scale is another latent (a funnel, "
        "a centred hierarchy), the non-centred model poutine.reparam(model, config={'x': "
        "pyro.infer.reparam.LocScaleReparam(centered=0.0)}); or MCMC (pyro.infer.NUTS) for this posterior."
    )
    return Check("stationarity", False, worst[2], worst[3], f"{steps}, {worst[1]}", advice)


def _laplace_log_mass(log_density: Callable[[Tensor], Tensor], mode: Tensor, log_p: float, generator: torch.Generator) -> float:
    """``log p(mode) - 1/2 log det H``, or ``nan`` where the Laplace approximation does not
    hold: a Hessian that is not positive definite, or a log density that departs from its
    quadratic prediction at points one Laplace sd away (the neck of a funnel)."""
    with torch.enable_grad():
        precision = negative_hessian(log_density, mode.detach()).double()
    if not bool(torch.isfinite(precision).all()):
        return math.nan
    factor, info = torch.linalg.cholesky_ex(precision)
    if info != 0:
        return math.nan
    dim = len(mode)
    noise = torch.randn(8, dim, dtype=torch.float64, device=mode.device, generator=generator)
    points = mode.double() + torch.linalg.solve_triangular(factor.T, noise.T, upper=True).T
    with torch.no_grad():
        change = log_density(points.to(mode.dtype)).double() - log_p
    predicted = -0.5 * noise.pow(2).sum(-1)
    if not bool(torch.isfinite(change).all()) or float((change - predicted).abs().mean()) > max(1.0, 0.25 * dim):
        return math.nan
    return log_p - float(factor.diagonal().log().sum())


def _modes_check(
    density: UnconstrainedLogDensity,
    whitened: Tensor,
    whitened_density: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    mean: Tensor,
    scale_tril: Tensor,
    args: tuple,
    kwargs: dict,
    generator: torch.Generator,
) -> Check:
    num, dim = whitened.shape
    if dim > HESSIAN_MAX_DIM:
        return Check("modes", None, math.nan, "", f"does not apply above {HESSIAN_MAX_DIM} dimensions (no Laplace masses)")
    order = torch.randperm(num, generator=generator, device=whitened.device)
    picked = whitened[order[: STARTS_PER_FACTOR * len(DISPERSION_FACTORS)]]
    factors = torch.tensor(DISPERSION_FACTORS, dtype=whitened.dtype, device=whitened.device)
    dispersed = picked * factors.repeat_interleave(STARTS_PER_FACTOR)[: len(picked)].unsqueeze(-1)
    own = whitened[order[-min(OWN_STARTS, num) :]]
    ends = ascend(whitened_density, torch.cat([dispersed, own]), num_steps=ASCENT_STEPS)
    # Two end points are one mode when within one sd of the draws (whitened units) of each other.
    modes, label = group_modes(ends.points, ends.log_p, ends.converged, radius=1.0)
    threshold = f"a gap of at most {MAX_MODE_SHARE_GAP:.2f} between a mode's share of the mass and of the draws"

    def log_density(w: Tensor) -> Tensor:
        return density(mean + w @ scale_tril.T, args, kwargs)

    log_mass = torch.tensor(
        [_laplace_log_mass(log_density, ends.points[i], float(ends.log_p[i]), generator) for i in modes.tolist()]
        if len(modes) > 1 else [0.0] * len(modes),
        dtype=torch.float64,
    )
    kept = torch.isfinite(log_mass)
    searches = f"{len(dispersed)} mode searches from dispersed starts and {len(own)} from the draws"
    if int(kept.sum()) <= 1:
        found = "one mode" if len(modes) == 1 else f"{int(kept.sum())} modes whose Laplace approximation holds"
        return Check("modes", True, 0.0, threshold, f"{searches} found {found}")
    share = torch.softmax(log_mass[kept], 0)
    renumber = torch.full((len(modes) + 1,), -1, dtype=torch.long)
    renumber[:-1][kept] = torch.arange(int(kept.sum()))
    own_labels = renumber[label[len(dispersed) :].cpu()]  # -1 (not converged) maps to the last entry
    settled = own_labels >= 0
    if not bool(settled.any()):
        return Check("modes", True, 0.0, threshold, f"{searches}: none of the latter settled at a mode")
    counts = torch.bincount(own_labels[settled], minlength=len(share)).double()
    draw_share = counts / counts.sum()
    judged = (share >= MIN_MODE_SHARE) | (draw_share > 0)
    gap = (share - draw_share).abs() * judged.double()
    k = int(gap.argmax())
    where = ", ".join(f"{float(s):.0%}" for s in share)
    summary = (
        f"{searches} found {len(share)} modes holding about {where} of the mass (Laplace estimates); "
        f"{float(draw_share[k]):.0%} of the {int(settled.sum())} searches from the draws that settled reach the mode "
        f"holding {float(share[k]):.0%}"
    )
    if float(gap[k]) <= MAX_MODE_SHARE_GAP:
        return Check("modes", True, float(gap[k]), threshold, summary)
    advice = (
        "The posterior has several modes and the draws miss or misweight some. Try engine='ctf' with a wide start "
        "(guide=AutoNeuralSampler(model, init_scale=3.0)), a model whose modes are identified (an ordering "
        "constraint on exchangeable components), or MCMC with several dispersed chains."
    )
    return Check("modes", False, float(gap[k]), threshold, summary, advice)
