"""`fit` on models with local latents: the amortized guide chosen by itself, draws for
every row, Pyro-native use on new data, and resuming bit for bit."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from interrupts import press_ctrl_c_at_step
from local_models import FactorAnalysis, hierarchical_model
from pyro.infer import Predictive
from test_fit import assert_same_run

import pyro_stein
import pyro_stein.fitting
from pyro_stein import AutoAmortizedSampler, AutoNeuralSampler


def test_fit_trains_an_amortized_sampler_for_subsampled_local_latents():
    # The defaults (2000 steps) gave mean errors of at most 0.037 sd and sd ratios 0.984-1.027
    # here (seed 0, 8000 draws of 50 new rows); 800 steps, for time: 0.079 and 0.980-1.033.
    fa = FactorAnalysis(seed=0)
    x = fa.data(2000)
    result = pyro_stein.fit(fa.model, x, num_steps=800, seed=0, progress=False)
    assert isinstance(result.guide, AutoAmortizedSampler)
    assert result.engine.num_particles == 16
    assert result.reliable is None and result.ksd is None  # the checks do not cover local latents yet
    assert result.sample(3)["z"].shape == (3, 2000, 2)  # every row of the training data
    new = fa.data(50)
    sd = fa.posterior_cov.diagonal().sqrt()
    with result.param_scope():
        draws = Predictive(fa.model, guide=result.guide, num_samples=2000, return_sites=["z"])(new, batch_size=50)["z"]
    # 2000 draws: the Monte Carlo error of a mean is 0.022 sd.
    assert float(((draws.mean(0) - fa.posterior_mean(new)) / sd).abs().max()) < 0.1 + 3 * 0.022
    ratio = draws.std(0) / sd
    assert 0.88 < float(ratio.min()) and float(ratio.max()) < 1.12
    with pytest.raises(NotImplementedError, match="to_inference_data does not cover local latents"):
        result.to_arviz(100)


@pytest.mark.parametrize("engine", ["asvgd", "ctf"])
def test_an_interrupted_local_run_resumes_exactly(tmp_path, monkeypatch, engine):
    fa = FactorAnalysis(seed=1)
    x = fa.data(300)

    def run(**options):
        return pyro_stein.fit(fa.model, x, 32, engine=engine, num_steps=30, seed=0, progress=False, **options)

    straight = run()
    path = tmp_path / "run.ckpt"
    with monkeypatch.context() as patch:
        press_ctrl_c_at_step(patch, 16)
        with pytest.warns(RuntimeWarning, match="interrupted after 16 of 30 steps"):
            run(checkpoint=path)
    torch.manual_seed(99)
    resumed = run(checkpoint=path)
    assert_same_run(straight, resumed)
    if engine == "ctf":
        assert straight.engine.run_of(straight.guide).step_size == resumed.engine.run_of(resumed.guide).step_size


def test_which_guide_fit_chooses():
    def few_groups(y):  # 8 local latents, not subsampled: one joint vector, as before
        with pyro.plate("schools", 8):
            theta = pyro.sample("theta", dist.Normal(0.0, 5.0))
            pyro.sample("y", dist.Normal(theta, 1.0), obs=y)

    def many_rows(y):  # 200 local latents: amortized
        with pyro.plate("data", len(y)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(z, 1.0), obs=y)

    options = {"num_steps": 2, "progress": False, "check": False}
    assert isinstance(pyro_stein.fit(few_groups, torch.randn(8), **options).guide, AutoNeuralSampler)
    assert isinstance(pyro_stein.fit(many_rows, torch.randn(200), **options).guide, AutoAmortizedSampler)


def test_a_local_latent_without_observations_fails_naming_it():
    def model(y):
        with pyro.plate("codes", 100, subsample_size=10):
            code = pyro.sample("code", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(code.sum(), 1.0), obs=y)

    with pytest.raises(ValueError, match=r"'code'.*no observed site.*encoder"):
        pyro_stein.fit(model, torch.tensor(0.0), num_steps=2, progress=False)


def test_global_latents_beside_local_ones_get_a_longer_default_budget(monkeypatch):
    monkeypatch.setattr(pyro.infer.SVI, "step", lambda *args, **kwargs: 0.0)  # the budget, not the training
    result = pyro_stein.fit(hierarchical_model, torch.randn(40, 4), progress=False)
    assert isinstance(result.guide, AutoAmortizedSampler)
    assert result.num_steps == pyro_stein.fitting.LOCAL_WITH_GLOBAL_STEPS == 4000
    assert pyro_stein.fit(hierarchical_model, torch.randn(40, 4), num_steps=7, progress=False).num_steps == 7
