"""Non-centring: which sites qualify, and the original sites restored from the non-centred
latents for the guide, ``Predictive`` and ``result.sample`` (exact identities, no fits)."""

import contextlib

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive

from pyro_stein import AutoNeuralSampler
from pyro_stein.glue.noncentring import NoncentredModel, centred_hierarchical_sites

SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def funnel():
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    pyro.sample("x", dist.Normal(torch.zeros(4), torch.exp(v / 2)).to_event(1))


def flat_priors():
    pyro.sample("flat", dist.ImproperUniform(dist.constraints.real, (), ()))  # cannot be sampled
    scale = pyro.sample("scale", dist.HalfNormal(1.0))  # positive: not a location-scale family on R
    pyro.sample("w", dist.Normal(0.0, 1.0))  # fixed location and scale: nothing to gain
    pyro.sample("u", dist.Gamma(2.0, scale))  # depends on scale but is not location-scale


def test_only_location_scale_sites_with_latent_parents_qualify():
    assert centred_hierarchical_sites(eight_schools, (SIGMA, Y)) == ("theta",)
    assert centred_hierarchical_sites(funnel) == ("x",)
    assert centred_hierarchical_sites(flat_priors) == ()


def test_noncentred_model_needs_a_site():
    with pytest.raises(ValueError, match="at least one site"):
        NoncentredModel(funnel, [])


@pytest.mark.parametrize("model, args, site, parents, batches", [
    (eight_schools, (SIGMA, Y), "theta", ("mu", "tau"), True),
    # Written for one draw (torch.zeros(4) does not broadcast over v's batch): restored
    # through vmap, and only unbatched runs of the model itself work.
    (funnel, (), "x", ("v",), False),
])
def test_the_guide_emits_the_original_sites(model, args, site, parents, batches):
    pyro.set_rng_seed(0)
    guide = AutoNeuralSampler(NoncentredModel(model, [site]))
    guide(*args)
    draws = guide.sample_posterior(50)
    assert set(draws) == {*parents, f"{site}_decentered", site}

    def restored(values):
        if site == "theta":
            return values["mu"].reshape(-1, 1) + values["tau"].reshape(-1, 1) * values["theta_decentered"]
        return torch.exp(values["v"].reshape(-1, 1) / 2) * values["x_decentered"]

    torch.testing.assert_close(draws[site], restored(draws))
    # One guide run, unbatched and inside a particle plate, emits the site at its restored value.
    for plate in (None, pyro.plate("draws", 20, dim=-2)) if batches else (None,):
        with plate or contextlib.nullcontext():
            trace = poutine.trace(guide).get_trace(*args)
        values = {name: node["value"] for name, node in trace.nodes.items() if node["type"] == "sample"}
        torch.testing.assert_close(values[site].reshape(-1), restored(values).reshape(-1))
    # So Predictive on the user's (centred) model sees the site it has.
    for parallel in (False, True) if batches else (False,):
        predicted = Predictive(model, guide=guide, num_samples=20, parallel=parallel)(*args)
        assert predicted[site].reshape(20, -1).shape == (20, draws[site][0].numel())
    # Quantiles of a restored site are those of its draws (its parents' quantiles do not combine).
    quantiles = guide.quantiles([0.5])
    assert quantiles[site].shape == (1,) + draws[site].shape[1:]
