"""fit's own budget: the learning-rate ladder stops a run once its sampler stops changing."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from interrupts import press_ctrl_c_at_step
from test_fit import assert_same_run

import pyro_stein
from pyro_stein.fitting import Convergence

# y_i ~ N(mu, 1), mu ~ N(0, 10): the posterior of mu is normal with known moments.
DATA = torch.linspace(-1.0, 3.0, 20)
PRIOR_SD = 10.0
POSTERIOR_SD = (1.0 / (1.0 / PRIOR_SD**2 + len(DATA))) ** 0.5
POSTERIOR_MEAN = POSTERIOR_SD**2 * DATA.sum().item()


def conjugate(y):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def converged():
    return pyro_stein.fit(conjugate, DATA, seed=0, progress=False)


def test_a_default_fit_stops_by_itself_and_says_why(converged):
    convergence = converged.convergence
    assert isinstance(convergence, Convergence) and convergence.converged
    assert converged.num_steps == convergence.num_steps < pyro_stein.fitting.DEFAULTS["num_steps"]
    assert convergence.change <= convergence.tolerance == pyro_stein.fitting.CONVERGENCE.final_tolerance
    assert convergence.learning_rate == pytest.approx(1e-3)
    assert [why for _, why in convergence.stage_ends] == ["stationary", "stationary"]
    assert "converged after" in convergence.message() and f"{convergence.num_steps} steps" in convergence.message()


def test_the_stopped_fit_is_accurate(converged):
    draws = converged.sample(20000)["mu"]
    # Monte Carlo error of 20000 draws: 0.007 sd in the mean, 0.5% in the sd; the tolerances
    # are those of the posteriordb verdict (0.1 sd, 10%) halved.
    assert abs(draws.mean().item() - POSTERIOR_MEAN) / POSTERIOR_SD < 0.05
    assert draws.std().item() / POSTERIOR_SD == pytest.approx(1.0, abs=0.05)
    assert converged.reliable


def test_a_fixed_budget_runs_every_step():
    fixed = pyro_stein.fit(conjugate, DATA, num_steps=60, seed=0, progress=False, stop_when_converged=False, check=False)
    assert fixed.num_steps == 60 and fixed.convergence is None and fixed.completed
    own = pyro_stein.fit(conjugate, DATA, num_steps=60, seed=0, progress=False, optim=pyro.optim.Adam({"lr": 1e-3}), check=False)
    assert own.num_steps == 60 and own.convergence is None


def test_a_budget_too_small_for_the_ladder_takes_all_its_steps():
    short = pyro_stein.fit(conjugate, DATA, num_steps=40, seed=0, progress=False, check=False)
    assert short.num_steps == 40 and short.convergence.stopped == "maximum"
    assert short.convergence.stage_ends == ((10, "fallback"),)
    assert "stopped by the maximum num_steps after 40 steps" in short.convergence.message()
    assert "still changing at step 10" in short.convergence.message()
    assert "decayed on the fixed schedule" in short.convergence.message()


def test_on_the_fixed_schedule_the_run_repeats_a_fixed_budget_run():
    """A run whose ladder falls back follows the exponential decay of stop_when_converged=False
    from there, to 1e-3 at the last step."""
    short = pyro_stein.fit(conjugate, DATA, num_steps=40, seed=0, progress=False, check=False)
    rates = [group["lr"] for optimizer in short.optim.optim_objs.values() for group in optimizer.param_groups]
    assert rates and all(rate == pytest.approx(1e-2 * 0.1 ** (40 / 40)) for rate in rates)


def test_an_interrupted_converging_run_resumes_exactly(converged, tmp_path, monkeypatch):
    """Interrupted in the ladder's last stage, the resumed run stops where the straight one did."""
    last_stage_from = converged.convergence.stage_ends[-1][0]
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        press_ctrl_c_at_step(patch, last_stage_from + 30)
        with pytest.warns(RuntimeWarning, match="interrupted after"):
            partial = pyro_stein.fit(conjugate, DATA, seed=0, progress=False, checkpoint=path, checkpoint_every=25)
    assert partial.convergence.stopped == "interrupted" and not partial.completed
    resumed = pyro_stein.fit(conjugate, DATA, seed=0, progress=False, checkpoint=path, checkpoint_every=25)
    assert_same_run(converged, resumed)
    assert resumed.convergence.converged


def test_stop_when_converged_must_be_a_bool():
    with pytest.raises(TypeError, match="stop_when_converged must be True or False"):
        pyro_stein.fit(conjugate, DATA, stop_when_converged="yes")


def test_the_change_is_measured_on_fixed_base_draws(converged):
    """The monitor's summaries of one sampler are identical call to call (common random
    numbers), and the run's own random stream is untouched by them."""
    from pyro_stein.fitting.convergence import ConvergenceMonitor

    guide = converged.guide
    monitor = ConvergenceMonitor(guide, pyro_stein.fitting.CONVERGENCE, 1e-2, 2000, 1000)
    values = [p.detach().clone() for p in guide.parameters()]
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    first = monitor.summary(values)
    after = torch.rand(3)
    second = monitor.summary(values)
    assert torch.equal(before, after)
    assert torch.equal(first.mean, second.mean) and torch.equal(first.sd, second.sd)
    assert not math.isnan(first.sd.item())
