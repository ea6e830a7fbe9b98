"""Importance-sampling log marginal likelihoods against a case whose are exact."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from local_models import FactorAnalysis, train

from pyro_stein import AutoAmortizedSampler
from pyro_stein.diagnostics.marginal_likelihood import importance_log_likelihood


def test_factor_analysis_log_likelihoods_are_exact():
    # x_i ~ N(0, W W^T + Psi) exactly.  Measured: effective sample fractions 0.72-0.97 (mean
    # 0.87), so at 4000 samples a row's estimate has an sd of at most sqrt((1/0.72 - 1) / 4000)
    # = 0.01 nats; the tolerance is three of them (at 1000 samples the largest error was 0.025).
    pyro.set_rng_seed(0)
    fa = FactorAnalysis(seed=0)
    guide = AutoAmortizedSampler(fa.model, hidden_dims=(32, 32))
    train(fa.model, guide, fa.data(1000), 300, lr=0.01)
    new = fa.data(30)
    exact = dist.MultivariateNormal(torch.zeros(5), fa.loadings @ fa.loadings.T + torch.diag(fa.noise)).log_prob(new)
    estimate = importance_log_likelihood(fa.model, guide, new, num_samples=4000, batch_size=30)
    assert estimate.log_likelihood.shape == (30,)
    assert float((estimate.log_likelihood - exact).abs().max()) < 0.03
    assert float(estimate.effective_sample_fraction.min()) > 0.5


def test_a_subsampled_plate_or_global_latents_are_refused():
    fa = FactorAnalysis(seed=0)
    guide = AutoAmortizedSampler(fa.model, hidden_dims=(8,))
    with pytest.raises(ValueError, match="subsamples plate 'data'"):
        importance_log_likelihood(fa.model, guide, fa.data(300))

    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"latents outside them \['mu'\]"):
        importance_log_likelihood(model, guide, torch.zeros(3))
    with pytest.raises(ValueError, match="df must exceed 2"):
        importance_log_likelihood(model, guide, torch.zeros(3), df=2.0)
