import math

import pytest
import torch

from pyro_stein.ops.convergence import (
    ConvergenceRule,
    ConvergenceState,
    DrawSummary,
    advance,
    summary_change,
    summary_vector,
)


def summary(mean=(0.0, 0.0), sd=(1.0, 1.0), corr=0.0):
    mean, sd = torch.tensor(mean, dtype=torch.float64), torch.tensor(sd, dtype=torch.float64)
    return DrawSummary(mean, sd, torch.tensor([[1.0, corr], [corr, 1.0]], dtype=torch.float64))


def test_a_summary_holds_the_draws_moments():
    draws = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0])
    s = DrawSummary.of(draws)
    assert torch.allclose(s.mean, draws.mean(0)) and torch.allclose(s.sd, draws.std(0))
    assert torch.allclose(s.corr, torch.corrcoef(draws.T))


def test_the_change_is_the_largest_figure_in_the_verdicts_units():
    old = summary(sd=(2.0, 1.0))
    assert summary_change(old, old) == 0.0
    assert summary_change(summary(mean=(0.1, 0.0), sd=(2.0, 1.0)), old) == pytest.approx(0.05)  # 0.1 / sd 2
    assert summary_change(summary(sd=(2.0, 1.1)), old) == pytest.approx(math.log(1.1))
    assert summary_change(summary(sd=(2.0, 1.0), corr=0.03), old) == pytest.approx(0.03)
    assert summary_change(summary(mean=(float("nan"), 0.0)), old) == math.inf


def test_the_summary_vector_is_relative_to_its_reference():
    reference = summary(mean=(100.0, 0.0), sd=(2.0, 1.0))
    vector = summary_vector(summary(mean=(101.0, 0.0), sd=(2.0, 2.0), corr=0.2), reference)
    assert vector.dtype == torch.float64
    assert torch.allclose(vector, torch.tensor([0.5, 0.0, 0.0, math.log(2.0), 0.2], dtype=torch.float64))


def run(rule, summaries, max_steps=2000):
    state, step = ConvergenceState(), 0
    for s in summaries:
        step += rule.window
        state = advance(rule, state, s, step, max_steps)
        if state.stopped:
            break
    return state, step


def test_the_first_stage_ends_when_two_windows_back_are_within_tolerance():
    rule = ConvergenceRule()
    # Jitter of 0.02 sd each way: both lags stay below 0.05, so the stage ends at its third window.
    jitter = [summary(mean=(0.02 * (-1) ** k, 0.0)) for k in range(10)]
    state, _ = run(rule, jitter[:3])
    assert state.stage_ends == ((3 * rule.window, "stationary"),)
    # A steady drift of 0.03 sd a window passes one lag but not two (0.06).
    drift = [summary(mean=(0.03 * k, 0.0)) for k in range(6)]
    state, _ = run(rule, drift)
    assert state.stage == 0 and state.change == pytest.approx(0.06)


def test_a_stage_not_ended_by_its_share_of_the_budget_falls_back_to_the_fixed_schedule():
    rule = ConvergenceRule()
    moving = [summary(mean=(0.5 * k, 0.0)) for k in range(2000 // rule.window)]
    state, step = run(rule, moving)
    # The first window to end at or after 1/4 of the budget.
    assert state.fallback and state.stage == 0 and state.stage_ends == ((-(-500 // rule.window) * rule.window, "fallback"),)
    assert state.stopped is None and step == 2000 and state.change == pytest.approx(0.5)
    # Stationary in time for the first stage, not for the second.
    settling = [summary()] * 3 + moving
    state, _ = run(rule, settling)
    # The second stage's share ends at 1/2 of the budget: the first window to end at or after it.
    second_end = -(-1000 // rule.window) * rule.window
    assert state.stage_ends == ((3 * rule.window, "stationary"), (second_end, "fallback")) and state.stage == 1


def test_the_last_stage_stops_on_the_standard_error_of_its_average():
    rule = ConvergenceRule()
    same = summary()
    state = ConvergenceState(stage=2, summaries=(same,), stage_started=0)
    means = [0.05, -0.05, 0.05, -0.05, 0.05, -0.05]
    for k, mean in enumerate(means, start=1):
        state = advance(rule, state, summary(mean=(mean, 0.0)), 50 * k, 2000)
        if k >= 2:
            window_means = torch.tensor(means[:k], dtype=torch.float64)
            # Batch means against the first window: the standard error of the mean of the windows.
            expected = float((window_means - window_means[0]).std() / math.sqrt(k))
            assert state.change == pytest.approx(expected)
    # 0.05 / sqrt(6) * sqrt(6/5) = 0.022: not yet converged at a tolerance of 0.01.
    assert state.stopped is None and state.final_windows == 6
    still = ConvergenceState(stage=2, summaries=(same,))
    for k in range(1, 5):
        still = advance(rule, still, same, 50 * k, 2000)
        assert (still.stopped == "converged") == (k == rule.min_final_windows)


def test_a_small_budget_shortens_the_windows_and_cannot_stop_early():
    assert ConvergenceRule().for_budget(200).window == 25
    assert ConvergenceRule().for_budget(200).can_stop
    small = ConvergenceRule().for_budget(40)
    assert small.window == 5 and not small.can_stop
    state, step = run(small, [summary()] * 8, max_steps=40)
    assert state.stopped is None and step == 40 and state.stage_ends == ((10, "fallback"),)


def test_a_rule_with_mismatched_stages_is_refused():
    with pytest.raises(ValueError, match="one entry per stage"):
        ConvergenceRule(rates=(1.0, 0.1), tolerances=(0.05, 0.03))


def test_the_state_round_trips_through_a_weights_only_file(tmp_path):
    rule = ConvergenceRule()
    state, _ = run(rule, [summary(mean=(0.01 * k, 0.0)) for k in range(7)])
    assert state.stage == 2 and state.final_windows > 0
    torch.save(state.state_dict(), tmp_path / "state.pt")
    loaded = ConvergenceState.from_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert loaded.stage == state.stage and loaded.stage_ends == state.stage_ends
    assert loaded.final_windows == state.final_windows and torch.equal(loaded.final_sum, state.final_sum)
    assert torch.equal(loaded.summaries[-1].mean, state.summaries[-1].mean)
