"""to_inference_data / from_mcmc: groups, shapes, dims, coords, and the values in them."""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import HMC, MCMC, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

import pyro_stein

NUM_GROUPS, NUM_OBS = 3, 12


def hierarchical(x, group, y=None):
    """Plates, a latent inside a plate, a deterministic inside and outside plates."""
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    slope = pyro.sample("slope", dist.Normal(0.0, 1.0))
    pyro.deterministic("sigma_squared", sigma**2)
    with pyro.plate("group", NUM_GROUPS):
        effect = pyro.sample("effect", dist.Normal(mu, 1.0))
    with pyro.plate("obs", x.shape[0]):
        mean = pyro.deterministic("mean", effect[..., group] + slope * x)
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)


def hierarchical_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_OBS, generator=generator)
    group = torch.arange(NUM_OBS) % NUM_GROUPS
    y = 1.0 + 0.5 * x + 0.3 * torch.randn(NUM_OBS, generator=generator)
    return x, group, y


@pytest.fixture(scope="module")
def fitted():
    x, group, y = hierarchical_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = pyro_stein.fit(hierarchical, x, group, y, num_steps=30, seed=0, progress=False)
    pyro.set_rng_seed(1)
    idata = pyro_stein.to_inference_data(result, num_samples=500, coords={"group": ["a", "b", "c"]})
    return result, idata, (x, group, y)


def test_groups_shapes_and_dims(fitted):
    _, idata, (x, group, y) = fitted
    assert set(idata.groups()) >= {
        "posterior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data", "sample_stats",
    }
    post = idata.posterior
    assert set(post.data_vars) == {"mu", "sigma", "slope", "effect", "sigma_squared", "mean"}
    assert post["mu"].dims == ("chain", "draw") and post["mu"].shape == (1, 500)
    assert post["effect"].dims == ("chain", "draw", "group") and post["effect"].shape == (1, 500, NUM_GROUPS)
    assert list(post["group"].values) == ["a", "b", "c"]
    assert post["mean"].dims == ("chain", "draw", "obs") and post["mean"].shape == (1, 500, NUM_OBS)
    assert post["sigma_squared"].shape == (1, 500)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "obs")
    assert idata.log_likelihood["y"].shape == (1, 500, NUM_OBS)
    np.testing.assert_array_equal(idata.observed_data["y"].values, y.numpy())
    assert idata.observed_data["y"].dims == ("obs",)
    # The model's other tensor arguments, named as its parameters; not the observations.
    assert set(idata.constant_data.data_vars) == {"x", "group"}
    np.testing.assert_array_equal(idata.constant_data["x"].values, x.numpy())
    assert np.isfinite(idata.sample_stats["lp"].values).all()
    assert idata.sample_stats.attrs["engine"] == "AmortizedSVGD"
    assert math.isfinite(idata.sample_stats.attrs["ksd"])


def test_values_follow_the_model(fitted):
    """Deterministic sites, log-likelihood and lp recomputed by hand from the posterior draws."""
    _, idata, (x, group, y) = fitted
    post = {name: torch.as_tensor(idata.posterior[name].values[0]) for name in idata.posterior.data_vars}
    mean = post["effect"][:, group] + post["slope"][:, None] * x
    torch.testing.assert_close(post["mean"], mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(post["sigma_squared"], post["sigma"] ** 2)
    log_lik = dist.Normal(mean, post["sigma"][:, None]).log_prob(y)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["y"].values[0]), log_lik, rtol=1e-5, atol=1e-5)
    # lp: the log joint in unconstrained space, i.e. with log sigma's Jacobian.
    lp = (
        dist.Normal(0.0, 2.0).log_prob(post["mu"])
        + dist.HalfNormal(1.0).log_prob(post["sigma"])
        + torch.log(post["sigma"])
        + dist.Normal(0.0, 1.0).log_prob(post["slope"])
        + dist.Normal(post["mu"][:, None], 1.0).log_prob(post["effect"]).sum(-1)
        + log_lik.sum(-1)
    )
    torch.testing.assert_close(torch.as_tensor(idata.sample_stats["lp"].values[0]), lp, rtol=1e-5, atol=1e-4)
    # Predictive replicates scatter around the mean with the draw's sigma.
    replicate = torch.as_tensor(idata.posterior_predictive["y"].values[0])
    standardized = (replicate - mean) / post["sigma"][:, None]
    assert abs(float(standardized.mean())) < 0.05 and abs(float(standardized.std()) - 1.0) < 0.05


def test_arviz_summary_and_loo_run(fitted):
    _, idata, _ = fitted
    summary = az.summary(idata, kind="stats")
    assert "effect[a]" in summary.index and "mean[0]" in summary.index
    loo = az.loo(idata)
    assert math.isfinite(loo.elpd_loo) and loo.n_data_points == NUM_OBS
    assert math.isfinite(az.waic(idata).elpd_waic)


def test_user_dims_and_bad_dims(fitted):
    result, _, _ = fitted
    idata = pyro_stein.to_inference_data(
        result, num_samples=20, dims={"mean": ["row"], "x": ["row"]}, coords={"row": list(range(100, 112))}, ksd=False
    )
    assert idata.posterior["mean"].dims == ("chain", "draw", "row")
    assert idata.constant_data["x"].dims == ("row",)
    assert "ksd" not in idata.sample_stats.attrs
    with pytest.raises(ValueError, match="dims for 'effect'"):
        pyro_stein.to_inference_data(result, num_samples=20, dims={"effect": ["a", "b"]}, ksd=False)


def regression(x, y=None):
    """Written for one draw (``x @ beta``): evaluated with torch.func.vmap."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ beta, sigma), obs=y)


def test_any_pyro_guide_and_no_auxiliary_sites():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    x = torch.randn(20, 3)
    y = x @ torch.tensor([1.0, -1.0, 0.5]) + 0.1 * torch.randn(20)
    for guide in (AutoMultivariateNormal(regression), AutoNormal(regression)):
        svi = SVI(regression, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        for _ in range(5):
            svi.step(x, y)
        idata = pyro_stein.to_inference_data(guide, regression, x, y, num_samples=300, ksd=False)
        assert set(idata.posterior.data_vars) == {"beta", "sigma"}
        assert idata.posterior["beta"].shape == (1, 300, 3)
        assert idata.posterior["beta"].dims == ("chain", "draw", "beta_dim_0")
        beta = torch.as_tensor(idata.posterior["beta"].values[0])
        sigma = torch.as_tensor(idata.posterior["sigma"].values[0])
        log_lik = dist.Normal(beta @ x.T, sigma[:, None]).log_prob(y)
        torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["y"].values[0]), log_lik, rtol=1e-5, atol=1e-5)
        assert idata.posterior_predictive["y"].shape == (1, 300, 20)


def test_model_with_control_flow_runs_one_draw_at_a_time():
    def branching(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        scale = 1.0 if float(mu.reshape(-1)[0]) > 0 else 2.0  # Python control flow on a latent
        with pyro.plate("data", 4):
            pyro.sample("y", dist.Normal(mu, scale), obs=y)

    y = torch.tensor([0.5, -0.2, 0.1, 0.3])
    guide = AutoNormal(branching)
    guide(y)
    with pytest.warns(RuntimeWarning, match="one draw at a time|per-particle loop"):
        idata = pyro_stein.to_inference_data(guide, branching, y, num_samples=50, ksd=False)
    mu = torch.as_tensor(idata.posterior["mu"].values[0])
    scale = torch.where(mu > 0, 1.0, 2.0)
    expected = dist.Normal(mu[:, None], scale[:, None]).log_prob(y)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["y"].values[0]), expected)


def test_subsampled_model_gets_every_observation():
    def subsampled(x, y):
        slope = pyro.sample("slope", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=5) as index:
            pyro.sample("y", dist.Normal(slope * x[index], 1.0), obs=y[index])

    x = torch.linspace(-1, 1, 43)  # minibatches of 5: the last one overlaps its predecessor
    y = 0.7 * x
    guide = AutoNormal(subsampled)
    guide(x, y)
    idata = pyro_stein.to_inference_data(guide, subsampled, x, y, num_samples=30, ksd=False)
    assert idata.log_likelihood["y"].shape == (1, 30, 43)
    slope = torch.as_tensor(idata.posterior["slope"].values[0])
    log_lik = dist.Normal(slope[:, None] * x, 1.0).log_prob(y)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["y"].values[0]), log_lik)
    lp = dist.Normal(0.0, 1.0).log_prob(slope) + log_lik.sum(-1)  # all 43 observations, unscaled
    torch.testing.assert_close(torch.as_tensor(idata.sample_stats["lp"].values[0]), lp, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(idata.observed_data["y"].values, y.numpy())
    assert set(idata.constant_data.data_vars) == {"x"}


def test_multivariate_observations_keep_their_event_dims():
    def mvn(y):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("rows", y.shape[0]):
            pyro.sample("y", dist.MultivariateNormal(loc, torch.eye(2)), obs=y)

    y = torch.randn(6, 2)
    guide = AutoNormal(mvn)
    guide(y)
    idata = pyro_stein.to_inference_data(guide, mvn, y, num_samples=40, ksd=False)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "rows", "y_dim_1")
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "rows")
    assert idata.observed_data["y"].shape == (6, 2)


def test_from_mcmc_keeps_chains_and_matches_the_layout():
    x, group, y = hierarchical_data()
    pyro.set_rng_seed(0)
    # A short fixed-step HMC run: cheap, and all this test needs is MCMC's output format.
    kernel = HMC(hierarchical, step_size=0.05, num_steps=4, adapt_step_size=False, adapt_mass_matrix=False)
    mcmc = MCMC(kernel, num_samples=15, warmup_steps=5, num_chains=2, disable_progbar=True, mp_context=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(x, group, y)
    idata = pyro_stein.from_mcmc(mcmc, coords={"group": ["a", "b", "c"]})
    assert idata.posterior["effect"].shape == (2, 15, NUM_GROUPS)
    assert idata.posterior["mean"].dims == ("chain", "draw", "obs")
    assert idata.log_likelihood["y"].shape == (2, 15, NUM_OBS)
    assert idata.sample_stats["diverging"].dtype == bool
    assert "acceptance_rate_chain_1" in idata.sample_stats.attrs
    samples = mcmc.get_samples(group_by_chain=True)
    np.testing.assert_allclose(idata.posterior["mu"].values, samples["mu"].numpy())
    same = pyro_stein.to_inference_data(mcmc, hierarchical, x, group, y, ksd=False)
    assert set(same.posterior.data_vars) == set(idata.posterior.data_vars)
    # Cached draws: grouped by chain, or flat (one chain).
    cached = pyro_stein.to_inference_data(samples, hierarchical, x, group, y, ksd=False)
    np.testing.assert_allclose(cached.log_likelihood["y"].values, idata.log_likelihood["y"].values, rtol=1e-6)
    flat = pyro_stein.to_inference_data(mcmc.get_samples(), hierarchical, x, group, y, ksd=False)
    assert flat.posterior["effect"].shape == (1, 30, NUM_GROUPS)
    with pytest.raises(ValueError, match="draws of site 'effect'"):
        pyro_stein.to_inference_data({**samples, "effect": samples["effect"][..., :2]}, hierarchical, x, group, y)


def test_bad_sources_fail_early():
    with pytest.raises(TypeError, match="pass the model"):
        pyro_stein.to_inference_data(AutoNormal(regression))
    with pytest.raises(TypeError, match="source must be"):
        pyro_stein.to_inference_data(42, regression, torch.zeros(3, 2))
    untrained = AutoMultivariateNormal(regression)
    with pytest.raises(ValueError, match="not been trained"):
        pyro_stein.to_inference_data(untrained, regression, torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="num_samples"):
        pyro_stein.to_inference_data(untrained, regression, torch.zeros(3, 2), num_samples=0)


def test_masked_observations_are_not_data():
    """poutine.mask (and obs_mask) leave observations out of the density: out of LOO too."""
    import pyro.poutine as poutine

    y = torch.tensor([0.3, float("nan"), -0.2, 0.8, float("nan"), 0.1])
    observed = ~torch.isnan(y)

    def masked(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", len(y)), poutine.mask(mask=observed):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=torch.nan_to_num(y))

    guide = AutoNormal(masked)
    guide(y)
    idata = pyro_stein.to_inference_data(guide, masked, y, num_samples=200, ksd=False)
    log_lik = idata.log_likelihood["y"]
    assert log_lik.dims == ("chain", "draw", "y_observed")
    assert list(log_lik["y_observed"].values) == [0, 2, 3, 5]
    mu = torch.as_tensor(idata.posterior["mu"].values[0])
    expected = dist.Normal(mu[:, None], 1.0).log_prob(y[observed])
    torch.testing.assert_close(torch.as_tensor(log_lik.values[0]), expected)
    assert az.loo(idata).n_data_points == 4
    assert idata.posterior_predictive["y"].shape == (1, 200, 6)


def test_float32_prior_with_float64_data():
    scale_tril = torch.tensor([[1.0, 0.0], [0.3, 1.0]], dtype=torch.float64)

    def mixed(y):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("n", y.shape[0]):
            pyro.sample("y", dist.MultivariateNormal(loc, scale_tril=scale_tril), obs=y)

    y = torch.randn(10, 2, dtype=torch.float64)
    idata = pyro_stein.to_inference_data({"loc": torch.randn(50, 2, dtype=torch.float64)}, mixed, y, ksd=False)
    assert idata.posterior["loc"].dtype == np.float64
    assert idata.log_likelihood["y"].shape == (1, 50, 10)


def test_batched_run_is_checked_on_draws_far_apart():
    """A model that branches on one latent value in Python agrees with per-draw runs on
    nearby draws only; the check spreads its probe over the draws and falls back."""

    def branching(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        scale = 1.0 if float(mu.reshape(-1)[0]) < 3 else 2.0
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.Normal(mu, scale), obs=y)

    y = torch.zeros(4)
    mu = torch.tensor([1.0, 2.0, 2.5, 4.0, 4.2])
    with pytest.warns(RuntimeWarning, match="one draw at a time"):
        idata = pyro_stein.to_inference_data({"mu": mu}, branching, y, ksd=False)
    scale = torch.where(mu < 3, 1.0, 2.0)
    expected = dist.Normal(mu[:, None], scale[:, None]).log_prob(y)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["y"].values[0]), expected)
    lp = dist.Normal(0.0, 5.0).log_prob(mu) + expected.sum(-1)
    torch.testing.assert_close(torch.as_tensor(idata.sample_stats["lp"].values[0]), lp)


def test_dims_for_an_unknown_variable_fail(fitted):
    result, _, _ = fitted
    with pytest.raises(ValueError, match="'muu'"):
        pyro_stein.to_inference_data(result, num_samples=20, dims={"muu": ["a"]}, ksd=False)


def test_boolean_deterministic_sites_are_kept():
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.deterministic("positive", mu > 0)
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = torch.full((5,), 2.0)
    draws = {"mu": torch.linspace(-1.0, 3.0, 50)}
    idata = pyro_stein.to_inference_data(draws, model, y, ksd=False)
    positive = idata.posterior["positive"].values.reshape(-1)
    assert positive.dtype == bool and (positive == (draws["mu"].numpy() > 0)).all()
