"""`fit()`'s own budget: the learning-rate ladder of
[`pyro_stein.ops.convergence`][pyro_stein.ops.convergence] run on a guide, and the report
of why a run stopped."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..ops.convergence import ConvergenceRule, ConvergenceState, DrawSummary, advance

__all__ = ["BASE_DRAWS_SEED", "Convergence", "ConvergenceMonitor"]

#: The seed of the fixed base draws on which successive samplers are compared; a generator
#: of its own, so the run's random stream is the same with and without the monitor.
BASE_DRAWS_SEED = 20221

#: How a run ended, for `Convergence.stopped`.
STOPPED = ("converged", "maximum", "interrupted")


@dataclass(frozen=True)
class Convergence:
    """Why a `fit()` run stopped (``result.convergence``).

    Attributes:
        stopped: ``"converged"`` (the sampler stopped changing at the lowest learning
            rate), ``"maximum"`` (``num_steps`` reached first) or ``"interrupted"``.
        num_steps: steps taken.
        change: the figure last held to a tolerance: in the ladder's last stage, the
            largest Monte Carlo standard error of the averaged sampler's means (in sds), log
            sds and correlations; before it, the largest change between windows
            (`summary_change`).
        tolerance: the tolerance of that figure at the stage the run ended in.
        learning_rate: the learning rate of that stage.
        stage_ends: ``(step, why)`` for each stage of the ladder that ended
            (``"stationary"``), and the step at which the run fell back to the fixed
            schedule (``"fallback"``: a stage did not end by its share of ``num_steps``).
    """

    stopped: str
    num_steps: int
    change: float
    tolerance: float
    learning_rate: float
    stage_ends: tuple[tuple[int, str], ...]

    @property
    def converged(self) -> bool:
        return self.stopped == "converged"

    def message(self) -> str:
        figure = "not measured yet" if math.isnan(self.change) else f"{self.change:.3g}"
        if self.converged:
            return (
                f"converged after {self.num_steps} steps: at learning rate {self.learning_rate:.2g} the averaged "
                f"sampler's standard error is {figure} (tolerance {self.tolerance:g}, in sds of the means, log sds "
                "and correlations)"
            )
        why = "the maximum num_steps" if self.stopped == "maximum" else "an interrupt"
        fallback = [step for step, end in self.stage_ends if end == "fallback"]
        if fallback:
            return (
                f"stopped by {why} after {self.num_steps} steps without converging: the sampler was still "
                f"changing at step {fallback[0]} (by {figure} between the last windows), so from there the learning "
                f"rate decayed on the fixed schedule to {self.learning_rate:.2g}; a larger num_steps gives the ladder "
                "more room"
            )
        return (
            f"stopped by {why} after {self.num_steps} steps before converging: the last figure was {figure} "
            f"(tolerance {self.tolerance:g}) at learning rate {self.learning_rate:.2g}"
        )


class ConvergenceMonitor:
    """The ladder on one run: windows of the guide's averaged parameters, their summaries
    on fixed base draws, the stage and its learning rate.

    Args:
        guide: a latent sampler (``sample_latent_batch``) whose draws are a function of
            torch's random numbers and its parameters.
        rule: the ladder.
        initial_learning_rate: the rate of the first stage.
        max_steps: the run's maximum number of steps (a stage not ended by its share of it
            puts the run on the fixed schedule, and windows are shortened so that each stage
            has two).
        average_from: on the fixed schedule, the step after which the parameters are
            averaged (and the preconditioner stays fixed).
    """

    def __init__(
        self, guide: Any, rule: ConvergenceRule, initial_learning_rate: float, max_steps: int, average_from: int
    ) -> None:
        self.guide = guide
        self.rule = rule.for_budget(max_steps)
        self.initial_learning_rate = initial_learning_rate
        self.max_steps = max_steps
        self.average_from = average_from
        self.state = ConvergenceState()
        self._window: list[Tensor] | None = None
        self._count = 0
        dim = int(getattr(guide, "latent_dim", 1))
        self.num_draws = min(20000, max(2048, 8 * dim))

    def learning_rate(self, step: int) -> float:
        """The rate of the step after ``step`` steps: the stage's, or on the fixed schedule
        the exponential decay to the last stage's rate at ``max_steps``."""
        if self.state.fallback:
            return self.initial_learning_rate * self.rule.rates[-1] ** (step / max(self.max_steps, 1))
        return self.initial_learning_rate * self.rule.rates[self.state.stage]

    def averaging(self, step: int) -> bool:
        """Whether the step that made ``step`` steps counts in the returned average."""
        if self.state.fallback:
            return step > self.average_from
        return self.last_stage

    @property
    def tolerance(self) -> float:
        """The tolerance the current stage's figure is held to."""
        return self.rule.final_tolerance if self.last_stage else self.rule.tolerances[self.state.stage]

    @property
    def last_stage(self) -> bool:
        """Whether the run is in the ladder's last stage, whose parameters are averaged."""
        return self.state.stage == len(self.rule.rates) - 1

    def recentering(self, step: int) -> bool:
        """Whether the step after ``step`` steps may re-centre: in the first stage (the later
        ones refine fixed coordinates), and on the fixed schedule until the average starts."""
        if self.state.fallback:
            return step < self.average_from
        return self.state.stage == 0

    @property
    def stopped(self) -> bool:
        return self.state.stopped is not None

    def restart_window(self) -> None:
        """Drop the window so far (the guide's parameters are about to be re-expressed, and
        an average across coordinates would mean nothing)."""
        self._window, self._count = None, 0

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Count the step that just ended (``step`` steps in all)."""
        current = [p.detach() for p in self.guide.parameters()]
        if self._window is None:
            self._window = [c.clone() for c in current]
        else:
            for total, c in zip(self._window, current):
                total += c
        self._count += 1
        if self._count < self.rule.window:
            return
        averaged = [total / self._count for total in self._window]
        self.restart_window()
        self.state = advance(self.rule, self.state, self.summary(averaged), step, self.max_steps)

    @torch.no_grad()
    def summary(self, values: list[Tensor]) -> DrawSummary:
        """The summary of the sampler with parameters ``values`` on the fixed base draws."""
        params = list(self.guide.parameters())
        kept = [p.detach().clone() for p in params]
        device = params[0].device if params else torch.device("cpu")
        devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        try:
            for p, v in zip(params, values):
                p.copy_(v)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(BASE_DRAWS_SEED)
                draws = self.guide.sample_latent_batch(self.num_draws)
        finally:
            for p, k in zip(params, kept):
                p.copy_(k)
        return DrawSummary.of(draws)

    def report(self, num_steps: int, interrupted: bool) -> Convergence:
        stopped = "converged" if self.stopped else "interrupted" if interrupted else "maximum"
        return Convergence(
            stopped=stopped,
            num_steps=num_steps,
            change=self.state.change,
            tolerance=self.tolerance,
            learning_rate=self.learning_rate(max(num_steps - 1, 0)),
            stage_ends=self.state.stage_ends,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.state.state_dict(), "window": self._window, "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = ConvergenceState.from_state_dict(state["state"])
        self._window, self._count = state["window"], int(state["count"])
