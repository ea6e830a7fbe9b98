import os
import signal

import pyro
import pyro.distributions as dist
import pytest
import torch
from interrupts import press_ctrl_c_at_step, raise_inside_step
from models import NORMAL_DATA, broadcast_logistic_model, logistic_data, normal_model

import pyro_stein
from pyro_stein import AmortizedSVGD, AutoNeuralSampler

model, Y = normal_model, NORMAL_DATA


def test_fit_returns_guide_history_and_draws():
    result = pyro_stein.fit(model, Y, num_steps=60, seed=0, progress=False)
    assert isinstance(result.guide, AutoNeuralSampler)
    assert isinstance(result.engine, AmortizedSVGD)
    assert result.num_steps == 60
    assert set(result.history) == {"squared_ksd", "stein_force", "bandwidth", "invalid_fraction"}
    assert all(len(values) == 60 for values in result.history.values())
    draws = result.sample(11)
    assert draws["mu"].shape == (11,) and draws["sigma"].shape == (11,)
    assert (draws["sigma"] > 0).all()
    predictive = result.predictive(5)
    assert predictive["y"].shape == (5, len(Y))
    assert result.seconds > 0


def test_the_posterior_predictive_draws_the_observations_anew():
    result = pyro_stein.fit(model, Y, num_steps=200, seed=0, progress=False)
    replicates = result.predictive(2000)["y"]
    assert not torch.equal(replicates[0], Y)
    # Each observation's replicates spread at least by the noise sd sigma, whose posterior
    # lies around the data's sd (0.67) and not below 0.3; a copy of Y would have sd 0.
    assert (replicates.std(0) > 0.4).all()
    # Their mean is the posterior mean of mu: within its posterior sd (about 0.3) of the data mean.
    assert replicates.mean().item() == pytest.approx(Y.mean().item(), abs=0.3)
    at_new_inputs = result.predictive(7, torch.zeros(3))["y"]  # new inputs: three new observations
    assert at_new_inputs.shape == (7, 3)


def _state(result):
    return {k: v.clone() for k, v in result.guide.state_dict().items()}


def assert_same_run(first, second):
    assert first.num_steps == second.num_steps
    assert first.history == second.history
    assert (first.convergence is None) == (second.convergence is None)
    if first.convergence is not None:
        assert first.convergence.message() == second.convergence.message()
        assert first.convergence.stage_ends == second.convergence.stage_ends
    first_state, second_state = _state(first), _state(second)
    assert first_state.keys() == second_state.keys()
    for name, value in first_state.items():
        assert torch.equal(value, second_state[name]), name


def test_an_interrupted_run_resumes_from_its_checkpoint_exactly(tmp_path, monkeypatch):
    straight = pyro_stein.fit(model, Y, num_steps=120, seed=0, progress=False)

    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        press_ctrl_c_at_step(patch, 71)
        # Ctrl-C waits for the end of the step it lands in: the checkpoint holds step 71.
        with pytest.warns(RuntimeWarning, match="interrupted after 71 of 120 steps.*holds step 71.*resume"):
            partial = pyro_stein.fit(model, Y, num_steps=120, seed=0, progress=False, checkpoint=path)
    assert partial.num_steps == 71 and path.exists()

    # as in a new process: a new guide, other generator states; the checkpoint decides everything
    torch.manual_seed(99)
    resumed = pyro_stein.fit(model, Y, num_steps=120, seed=0, progress=False, checkpoint=path)
    assert_same_run(straight, resumed)


def test_an_interrupt_inside_a_recentring_step_still_resumes_exactly(tmp_path, monkeypatch):
    """Ctrl-C while the preconditioner is being re-centred (at the start of step 51): the step completes
    before the run stops, so the checkpoint never holds a half-moved preconditioner.  (240 steps:
    the ladder's first stage, which re-centres, lasts at least to step 60.)"""
    straight = pyro_stein.fit(model, Y, num_steps=240, seed=0, progress=False)
    original = AutoNeuralSampler.recenter
    moved = {"count": 0}

    def recenter(self, *args, **kwargs):
        moved["count"] += 1
        os.kill(os.getpid(), signal.SIGINT)  # lands as the preconditioner is about to move
        return original(self, *args, **kwargs)

    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        patch.setattr(AutoNeuralSampler, "recenter", recenter)
        with pytest.warns(RuntimeWarning, match="interrupted after 51 of 240 steps"):
            partial = pyro_stein.fit(model, Y, num_steps=240, seed=0, progress=False, checkpoint=path)
    assert moved["count"] == 1 and partial.num_steps == 51
    resumed = pyro_stein.fit(model, Y, num_steps=240, seed=0, progress=False, checkpoint=path)
    assert_same_run(straight, resumed)


def test_an_interrupt_raised_inside_a_step_saves_nothing_half_done(tmp_path, monkeypatch):
    """A KeyboardInterrupt raised inside a step (a second Ctrl-C) may leave the guide and
    optimizer half-way through it: the checkpoint keeps the last complete save."""
    straight = pyro_stein.fit(model, Y, num_steps=60, seed=0, progress=False)
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        raise_inside_step(patch, 45)
        with pytest.warns(RuntimeWarning, match="after 44 of 60 steps \\(inside a step\\).*holds step 40"):
            pyro_stein.fit(model, Y, num_steps=60, seed=0, progress=False, checkpoint=path, checkpoint_every=20)
    resumed = pyro_stein.fit(model, Y, num_steps=60, seed=0, progress=False, checkpoint=path, checkpoint_every=20)
    assert_same_run(straight, resumed)


def test_interrupt_without_checkpoint_returns_the_partial_result(monkeypatch):
    press_ctrl_c_at_step(monkeypatch, 40)
    with pytest.warns(RuntimeWarning, match="interrupted after 40 of 100 steps"):
        result = pyro_stein.fit(model, Y, num_steps=100, seed=0, progress=False)
    assert result.num_steps == 40
    assert result.sample(3)["mu"].shape == (3,)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put Python's handler back


def test_a_checkpoint_from_another_model_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"

    def other(y):
        pyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))

    pyro_stein.fit(other, Y, num_steps=3, seed=0, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="other.ckpt"):
        pyro_stein.fit(model, Y, num_steps=3, seed=0, progress=False, checkpoint=path)


def test_bad_fit_arguments():
    np = pytest.importorskip("numpy")
    with pytest.raises(ValueError, match="engine must be one of"):
        pyro_stein.fit(model, Y, engine="magic", progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        pyro_stein.fit(model, Y, num_steps=-1, progress=False)
    with pytest.raises(TypeError, match="pyro.optim"):
        pyro_stein.fit(model, Y, optim=torch.optim.Adam, progress=False)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        pyro_stein.fit(model, np.asarray(Y), num_steps=2, progress=False)


def test_progress_bar_is_shown_on_request(capsys):
    pyro_stein.fit(model, Y, num_steps=30, seed=0, progress=True)
    assert "pyro_stein.fit" in capsys.readouterr().err
    pyro_stein.fit(model, Y, num_steps=30, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_draws_go_to_arviz():
    import arviz as az

    result = pyro_stein.fit(model, Y, num_steps=30, seed=0, progress=False)
    idata = result.to_arviz(500)
    assert idata.posterior["mu"].shape == (1, 500)
    summary = az.summary(idata)
    assert list(summary.index) == ["mu", "sigma"]
    # The summary describes the sampler's own draws.
    draws = result.sample(20000)
    assert abs(summary.loc["mu", "mean"] - draws["mu"].mean().item()) < 4 * draws["mu"].std().item() / 500**0.5


def test_a_run_on_a_compiled_density_resumes_exactly(tmp_path, monkeypatch):
    # The compile decision is the run's own (the model's shapes), so a resumed run compiles
    # the same graph and continues bit for bit.
    x, y = logistic_data()

    def run(**options):
        engine = AmortizedSVGD(num_particles=64, compile_density=True)
        return pyro_stein.fit(broadcast_logistic_model, x, y, engine=engine, num_steps=40, seed=0, progress=False, **options)

    straight = run()
    assert straight.engine.run_of(straight.guide).density.compiled.compiled[torch.Size([64, 3])] is not None
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        press_ctrl_c_at_step(patch, 21)
        with pytest.warns(RuntimeWarning, match="interrupted after 21 of 40 steps"):
            run(checkpoint=path)
    torch.manual_seed(99)
    assert_same_run(straight, run(checkpoint=path))
