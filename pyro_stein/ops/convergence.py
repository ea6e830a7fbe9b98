"""When to stop training a sampler: a learning-rate ladder with a convergence test on
common random numbers.

A stochastic optimiser at a fixed learning rate does not converge to a point: its iterates
settle into a cloud around the fixed point whose spread (and, for adaptive optimisers and
particle directions, whose bias) shrinks with the rate.  The rule here follows the
structure of Welandawe, Andersen, Vehtari & Huggins (2022, "Robust, automated, and accurate
black-box variational inference"): run at a rate until the iterates are stationary, lower
the rate, and stop once the lowest rate is stationary too; the parameters returned are the
average over that last stage (Polyak-Ruppert).

What is compared is the sampler, not its parameters (a reparameterisation that leaves the
draws unchanged, such as re-centring a preconditioner, must not count as a change): the
parameters averaged over each window of steps push one fixed set of base draws (common
random numbers), and the summary of those draws (`DrawSummary`: means, sds, correlations)
is compared window to window (`summary_change`, in posterior sds).  With the base draws
fixed, the comparison has no Monte Carlo noise of its own: it moves only when the sampler
does.  Earlier attempts that compared fresh draws were drowned by that noise
(``docs/defaults.md``).

Everything here is pure tensor math on immutable values (`ConvergenceState`), so that a
run's state can be checkpointed and resumed exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["ConvergenceRule", "ConvergenceState", "DrawSummary", "advance", "summary_change", "summary_vector"]

#: Above this dimension the correlations are left out of the summary (their matrix grows
#: as the square of the dimension); means and sds still are compared.
MAX_CORRELATION_DIM = 1000


@dataclass(frozen=True)
class DrawSummary:
    """Means, sds and (up to `MAX_CORRELATION_DIM` dimensions) correlations of a batch of
    draws ``(n, D)``."""

    mean: Tensor
    sd: Tensor
    corr: Tensor | None

    @classmethod
    def of(cls, draws: Tensor) -> DrawSummary:
        draws = draws.detach()
        mean = draws.mean(0)
        sd = draws.std(0)
        corr = None
        if 1 < draws.shape[-1] <= MAX_CORRELATION_DIM:
            centered = (draws - mean) / sd.clamp_min(torch.finfo(draws.dtype).tiny)
            corr = centered.T @ centered / (len(draws) - 1)
        return cls(mean, sd, corr)

    def state_dict(self) -> dict[str, Tensor | None]:
        return {"mean": self.mean, "sd": self.sd, "corr": self.corr}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor | None]) -> DrawSummary:
        return cls(state["mean"], state["sd"], state["corr"])


def summary_change(new: DrawSummary, old: DrawSummary) -> float:
    """How far ``new`` is from ``old``, in the units of the verdicts on posterior draws: the
    largest of the mean shifts in ``old``'s sds, the absolute log ratios of the sds, and the
    correlation changes.  ``inf`` where a figure is not finite.

    Example:
        >>> import torch
        >>> old = DrawSummary.of(torch.randn(1000, 3, generator=torch.Generator().manual_seed(0)))
        >>> new = DrawSummary(old.mean + 0.05 * old.sd, old.sd, old.corr)
        >>> round(summary_change(new, old), 6)
        0.05
    """
    tiny = torch.finfo(old.sd.dtype).tiny
    figures = [
        ((new.mean - old.mean).abs() / old.sd.clamp_min(tiny)).max(),
        (new.sd.clamp_min(tiny) / old.sd.clamp_min(tiny)).log().abs().max(),
    ]
    if new.corr is not None and old.corr is not None:
        figures.append((new.corr - old.corr).abs().max())
    largest = float(torch.stack(figures).max())
    return largest if math.isfinite(largest) else math.inf


def summary_vector(summary: DrawSummary, reference: DrawSummary) -> Tensor:
    """``summary`` relative to ``reference``, as one float64 vector in the units of
    `summary_change`: mean shifts in ``reference``'s sds, log sd ratios, and correlation
    changes above the diagonal.  (Relative, so that sums of squares of these vectors do not
    lose their digits to cancellation.)"""
    tiny = torch.finfo(reference.sd.dtype).tiny
    scale = reference.sd.clamp_min(tiny)
    parts = [(summary.mean - reference.mean) / scale, (summary.sd.clamp_min(tiny) / scale).log()]
    if summary.corr is not None and reference.corr is not None:
        rows, cols = torch.triu_indices(*summary.corr.shape, offset=1, device=summary.corr.device)
        parts.append(summary.corr[rows, cols] - reference.corr[rows, cols])
    return torch.cat(parts).double()


@dataclass(frozen=True)
class ConvergenceRule:
    """The learning-rate ladder and its tests.

    Training runs in stages, one per entry of ``rates`` (multiples of the initial learning
    rate).  The sampler's parameters are averaged over windows of ``window`` steps and each
    window's sampler is summarised on the fixed base draws.  A stage but the last ends when
    the change (`summary_change`) from each of the last ``lags`` windows is at most its
    ``tolerances`` entry (two lags: a slow, steady drift adds up over two windows, where
    jitter does not).  A stage that has not ended by its ``force_fractions`` share of the
    maximum number of steps puts the run on the fixed schedule (``fallback``): the rate
    decays exponentially to the last stage's by the maximum, as without the ladder, and the
    run takes every step.  (Where gradient noise dominates, say a subsampled likelihood, the
    windows never settle; a fixed lowest rate then mixes too slowly for its average to
    beat the decaying schedule's: 0.097 sd against 0.022 on the subsampled regression of
    ``benchmarks/accuracy.py``.)  The last stage's parameters are averaged (what the run
    returns), and it ends -- convergence -- once that average is precise: the Monte Carlo
    standard error of its summary, estimated by batch means over the stage's windows, is
    at most ``final_tolerance`` in every figure, after at least ``min_final_windows``.

    The defaults were chosen on the posteriordb posteriors and the diabetes regression
    (``docs/defaults.md``, "How long to train").

    Attributes:
        window: steps per window.
        rates: learning rates of the stages, relative to the initial one.
        tolerances: the largest change that ends each stage but the last.
        lags: windows back that the change is measured to, for each stage but the last.
        force_fractions: the share of the maximum number of steps by which each stage but
            the last must end, else the run falls back to the fixed schedule.
        final_tolerance: the largest standard error of the last stage's average.
        min_final_windows: the fewest windows of the last stage.
        min_window: the shortest window with which the tests decide anything: with a
            budget too small for it (`for_budget`), stages end only by force and the run
            takes all its steps.
        can_stop: whether the tests may end a stage (``False``: only the budget does).
    """

    window: int = 40
    rates: tuple[float, ...] = (1.0, 10**-0.5, 0.1)
    tolerances: tuple[float, ...] = (0.05, 0.03)
    lags: tuple[int, ...] = (2, 1)
    force_fractions: tuple[float, ...] = (0.25, 0.5)
    final_tolerance: float = 0.01
    min_final_windows: int = 4
    min_window: int = 10
    can_stop: bool = True

    def __post_init__(self) -> None:
        stages = len(self.rates) - 1
        if stages < 0 or len(self.tolerances) != stages or len(self.lags) != stages or len(self.force_fractions) != stages:
            raise ValueError("tolerances, lags and force_fractions need one entry per stage but the last")
        if self.window < 1 or min(self.lags, default=1) < 1 or self.min_final_windows < 2:
            raise ValueError("window and lags must be positive, and min_final_windows at least 2")

    def for_budget(self, max_steps: int) -> ConvergenceRule:
        """This rule with windows short enough that every stage has at least two of them
        within ``max_steps``; one that cannot stop if they would be shorter than
        ``min_window``."""
        fractions = (0.0, *self.force_fractions, 1.0)
        shortest = min(b - a for a, b in zip(fractions, fractions[1:])) * max_steps
        window = max(1, min(self.window, int(shortest // 2)))
        return replace(self, window=window, can_stop=self.can_stop and window >= self.min_window)


@dataclass(frozen=True)
class ConvergenceState:
    """Where a run is on the ladder.

    Attributes:
        stage: index into ``rule.rates``.
        summaries: this stage's last window summaries (for a stage's first window, the last
            one of the stage before).
        stage_started: the step at which this stage began.
        change: the figure last compared with a tolerance: a change between windows, or in
            the last stage the standard error of the average (``nan`` before any).
        stopped: why the run stopped (``"converged"``), or ``None``.
        stage_ends: the step at which each earlier stage ended, and why
            (``"stationary"``), or the step at which the run fell back to the fixed schedule
            (``"fallback"``).
        final_windows: windows of the last stage so far.
        final_sum, final_sum_squares: their `summary_vector`s' sum and sum of squares,
            against the stage's first summary (``final_reference``).
        fallback: whether a stage did not end in time, so that the run follows the fixed
            schedule to the maximum number of steps.
    """

    stage: int = 0
    summaries: tuple[DrawSummary, ...] = ()
    stage_started: int = 0
    change: float = math.nan
    stopped: str | None = None
    stage_ends: tuple[tuple[int, str], ...] = field(default=())
    final_windows: int = 0
    final_reference: DrawSummary | None = None
    final_sum: Tensor | None = None
    final_sum_squares: Tensor | None = None
    fallback: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "summaries": [s.state_dict() for s in self.summaries],
            "stage_started": self.stage_started,
            "change": self.change,
            "stopped": self.stopped,
            "stage_ends": [list(end) for end in self.stage_ends],
            "final_windows": self.final_windows,
            "final_reference": None if self.final_reference is None else self.final_reference.state_dict(),
            "final_sum": self.final_sum,
            "final_sum_squares": self.final_sum_squares,
            "fallback": self.fallback,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ConvergenceState:
        reference = state["final_reference"]
        return cls(
            stage=int(state["stage"]),
            summaries=tuple(DrawSummary.from_state_dict(s) for s in state["summaries"]),
            stage_started=int(state["stage_started"]),
            change=float(state["change"]),
            stopped=state["stopped"],
            stage_ends=tuple((int(step), str(why)) for step, why in state["stage_ends"]),
            final_windows=int(state["final_windows"]),
            final_reference=None if reference is None else DrawSummary.from_state_dict(reference),
            final_sum=state["final_sum"],
            final_sum_squares=state["final_sum_squares"],
            fallback=bool(state["fallback"]),
        )


def advance(rule: ConvergenceRule, state: ConvergenceState, summary: DrawSummary, step: int, max_steps: int) -> ConvergenceState:
    """The state after a window that ended at ``step`` with ``summary``.

    Example:
        >>> import torch
        >>> rule = ConvergenceRule()
        >>> same = DrawSummary.of(torch.randn(500, 2, generator=torch.Generator().manual_seed(0)))
        >>> state, step = ConvergenceState(), 0
        >>> while state.stopped is None:
        ...     step += rule.window
        ...     state = advance(rule, state, same, step, max_steps=2000)
        >>> step, state.stage_ends
        (360, ((120, 'stationary'), (200, 'stationary')))
    """
    if state.fallback:
        change = summary_change(summary, state.summaries[-1]) if state.summaries else math.nan
        return replace(state, summaries=(summary,), change=change)
    if state.stage == len(rule.rates) - 1:
        return _advance_last(rule, state, summary)
    lag = rule.lags[state.stage]
    history = (*state.summaries, summary)
    changes = [summary_change(summary, earlier) for earlier in history[-1 - lag : -1]]
    change = max(changes) if changes else math.nan
    # A later stage's first window follows a change of rate: it is compared with the window
    # before only once the stage has windows of its own back to the lag.
    own_windows = (step - state.stage_started) // rule.window
    enough = len(changes) == lag and (state.stage == 0 or own_windows > lag)
    stationary = rule.can_stop and enough and change <= rule.tolerances[state.stage]
    if stationary:
        return ConvergenceState(
            stage=state.stage + 1,
            summaries=(summary,),
            stage_started=step,
            change=change,
            stage_ends=(*state.stage_ends, (step, "stationary")),
        )
    if step >= rule.force_fractions[state.stage] * max_steps:
        return replace(
            state, summaries=(summary,), change=change, fallback=True, stage_ends=(*state.stage_ends, (step, "fallback"))
        )
    return replace(state, summaries=history[-1 - max(rule.lags) :], change=change)


def _advance_last(rule: ConvergenceRule, state: ConvergenceState, summary: DrawSummary) -> ConvergenceState:
    """The last stage: batch means of the windows' summaries, the standard error of their
    mean against ``final_tolerance``."""
    reference = state.final_reference or summary
    vector = summary_vector(summary, reference)
    count = state.final_windows + 1
    total = vector if state.final_sum is None else state.final_sum + vector
    squares = vector**2 if state.final_sum_squares is None else state.final_sum_squares + vector**2
    change = math.nan
    if count >= 2:
        variance = ((squares - total**2 / count) / (count - 1)).clamp_min(0)
        change = float((variance / count).sqrt().max())
        change = change if math.isfinite(change) else math.inf
    converged = rule.can_stop and count >= rule.min_final_windows and change <= rule.final_tolerance
    return replace(
        state,
        summaries=(summary,),
        change=change,
        stopped="converged" if converged else None,
        final_windows=count,
        final_reference=reference,
        final_sum=total,
        final_sum_squares=squares,
    )
