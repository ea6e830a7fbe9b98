"""AutoAmortizedSampler: an encoder per data plate, Pyro-native draws for new data, and
the refusals."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from local_models import FactorAnalysis
from pyro.infer import SVI, Predictive, Trace_ELBO
from torch import nn

from pyro_stein import AmortizedSVGD, AutoAmortizedSampler, CTFDistillation
from pyro_stein.glue.autoguide import guide_param_prefix


def normal_codes(x):
    with pyro.plate("data", len(x), subsample_size=min(16, len(x))) as rows:
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x[rows])


def test_draws_for_new_data_follow_the_new_datas_size():
    guide = AutoAmortizedSampler(normal_codes, hidden_dims=(8,))
    guide(torch.randn(100))
    draws = Predictive(normal_codes, guide=guide, num_samples=7)(torch.randn(5))
    assert draws["z"].shape == (7, 5) and draws["x"].shape == (7, 5)
    assert guide.sample_posterior(3, torch.randn(4))["z"].shape == (3, 4)


def test_the_guide_parameters_live_in_the_param_store():
    guide = AutoAmortizedSampler(normal_codes, hidden_dims=(8,))
    svi = SVI(normal_codes, guide, pyro.optim.Adam({"lr": 0.01}), loss=AmortizedSVGD(num_particles=16))
    svi.step(torch.randn(100))
    names = set(pyro.get_param_store().keys())
    prefix = guide_param_prefix(guide)
    assert prefix.startswith("AutoAmortizedSampler")
    assert {f"{prefix}encoders.data.loc_head.weight", f"{prefix}encoders.data.loc_skip.weight"} <= names


def test_a_user_encoder_replaces_the_body():
    fa = FactorAnalysis()
    body = nn.Sequential(nn.Linear(5, 12), nn.Tanh())
    guide = AutoAmortizedSampler(fa.model, encoder={"data": body})
    guide(fa.data(200))
    assert guide.encoders["data"].body[0].weight.shape == (12, 5)
    assert guide.sample_posterior(2, fa.data(10))["z"].shape == (2, 10, 2)


def test_an_encoder_for_a_plate_without_observations_gets_the_row_indices():
    def model(y):
        with pyro.plate("groups", 50, subsample_size=10):
            effect = pyro.sample("effect", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(effect.sum(), 1.0), obs=y)  # observed outside the plate

    with pytest.raises(ValueError, match=r"'effect'.*no observed site"):
        AutoAmortizedSampler(model)(torch.tensor(0.0))
    guide = AutoAmortizedSampler(model, encoder={"groups": nn.Embedding(50, 4)})
    assert guide(torch.tensor(0.0))["effect"].shape == (10,)


def test_density_losses_and_vectorized_predictive_are_refused_with_what_to_use():
    x = torch.randn(40)
    guide = AutoAmortizedSampler(normal_codes, hidden_dims=(8,))
    with pytest.raises(NotImplementedError, match="AmortizedSVGD"):
        SVI(normal_codes, guide, pyro.optim.Adam({"lr": 0.01}), loss=Trace_ELBO()).step(x)
    with pytest.raises(NotImplementedError, match="parallel=False"):
        Predictive(normal_codes, guide=guide, num_samples=3, parallel=True)(x)


def test_global_latents_are_drawn_beside_the_local_ones():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=min(8, len(x))) as rows:
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[rows])

    guide = AutoAmortizedSampler(model, hidden_dims=(8,))
    x = torch.randn(20)
    assert guide.global_layout is None  # not set up yet
    draws = Predictive(model, guide=guide, num_samples=3)(x)
    assert draws["mu"].shape == (3, 1) and draws["z"].shape == (3, 8)  # Predictive pads global sites to the plates
    assert list(guide.global_layout.site_shapes) == ["mu"]
    posterior = guide.sample_posterior(5, x)
    assert posterior["mu"].shape == (5,) and posterior["z"].shape == (5, 20)
    with pytest.raises(NotImplementedError, match=r"does not train global latents beside local ones yet \(the model's \['mu'\]\)"):
        SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss=CTFDistillation(num_particles=32)).step(x)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="init_scale"):
        AutoAmortizedSampler(normal_codes, init_scale=0.0)
    with pytest.raises(ValueError, match="hidden_dims"):
        AutoAmortizedSampler(normal_codes, hidden_dims=())
    with pytest.raises(TypeError, match="encoder must be a dict"):
        AutoAmortizedSampler(normal_codes, encoder=nn.Linear(1, 1))
    with pytest.raises(ValueError, match=r"encoder names plates \['rows'\]"):
        AutoAmortizedSampler(normal_codes, encoder={"rows": nn.Linear(1, 1)})(torch.randn(30))
