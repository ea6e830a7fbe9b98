"""Model parameters learned by `fit` stay where a Pyro user looks after SVI, and each
result keeps its own copy (issue 17, item 3)."""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive

import pyro_stein
from pyro_stein import AmortizedSVGD, AutoNeuralSampler


def model(y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", 200):
        pyro.sample("y", dist.Normal(mu, scale), obs=y)


def data(scale, seed):
    return 1.0 + scale * torch.randn(200, generator=torch.Generator().manual_seed(seed))


WIDE = data(2.4, 0)
NARROW = data(0.5, 1)


def fit(y):
    return pyro_stein.fit(model, y, num_steps=400, seed=0, progress=False)


def test_fitted_params_are_where_a_pyro_user_looks():
    pyro.param("users_own_param", torch.tensor(3.0))
    result = fit(WIDE)
    store = pyro.get_param_store()
    # The maximum-likelihood scale is the data's sd (2.4 up to sampling error, about 0.12).
    assert abs(pyro.param("scale").item() - WIDE.std().item()) < 0.1
    assert torch.equal(result.params["scale"], pyro.param("scale").detach())
    assert pyro.param("users_own_param").item() == 3.0  # the user's own parameter is kept
    assert set(store.keys()) == {"users_own_param", "scale"}  # the guide holds its own parameters
    # Posterior predictive replicates spread by the fitted scale, not by its initial 1.0.
    replicates = Predictive(model, guide=result.guide, num_samples=500)()["y"]
    assert abs(replicates.std().item() - 2.4) < 0.2
    assert abs(result.predictive(500)["y"].std().item() - 2.4) < 0.2
    idata = result.to_arviz(500, ksd=False)
    assert abs(float(idata.posterior_predictive["y"].std()) - 2.4) < 0.2


def test_a_later_fit_neither_collides_with_nor_changes_a_result():
    wide = fit(WIDE)
    wide_scale = wide.params["scale"].clone()
    wide_draws = wide.sample(2000)["mu"]
    narrow = fit(NARROW)
    assert abs(pyro.param("scale").item() - NARROW.std().item()) < 0.05  # the store holds the latest fit
    assert torch.equal(wide.params["scale"], wide_scale)  # the first result keeps its own
    assert abs(wide.predictive(500)["y"].std().item() - 2.4) < 0.2
    assert abs(narrow.predictive(500)["y"].std().item() - 0.5) < 0.05
    with wide.param_scope():
        assert abs(Predictive(model, guide=wide.guide, num_samples=500)()["y"].std().item() - 2.4) < 0.2
    assert abs(wide.sample(2000)["mu"].mean() - wide_draws.mean()) < 0.05  # same sampler


def test_a_second_guide_on_another_model_does_not_collide():
    first = fit(WIDE)
    Predictive(model, guide=first.guide, num_samples=10)()  # the guide's parameters enter the global store

    def other(x):
        a = pyro.sample("a", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(a, 1.0).to_event(1), obs=x)

    guide = AutoNeuralSampler(other)
    svi = SVI(other, guide, pyro.optim.Adam({"lr": 0.01}), loss=AmortizedSVGD(num_particles=64))
    for _ in range(5):
        svi.step(torch.ones(3))
    assert guide(torch.ones(3))["a"].shape == (3,)
    assert guide.sample_posterior(4)["a"].shape == (4, 3)
    # Two guides, two sets of names: neither reads the other's tensors.
    names = {name.split(".")[0] for name in pyro.get_param_store().keys() if name.startswith("AutoNeuralSampler")}
    assert len(names) == 2, names
    assert first.sample(5)["mu"].shape == (5,)


def test_a_later_fit_of_a_pyro_autoguide_does_not_change_an_earlier_result():
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    def fit_normal(y):
        return pyro_stein.fit(model, y, guide=AutoNormal(model), engine=Trace_ELBO(), num_steps=300, seed=0,
                              progress=False, optim=pyro.optim.Adam({"lr": 0.05}))

    first = fit_normal(WIDE)
    before = first.predictive(2000)["y"].mean().item()
    fit_normal(WIDE + 20.0)  # the same parameter names ("AutoNormal.locs.mu")
    Predictive(model, guide=first.guide, num_samples=10)()
    assert abs(first.predictive(2000)["y"].mean().item() - before) < 0.3  # still about 1, not 21


def test_a_later_fit_of_a_pyro_module_model_does_not_change_an_earlier_result():
    from pyro.nn import PyroModule, PyroParam

    class Model(PyroModule):
        def __init__(self):
            super().__init__()
            self.scale = PyroParam(torch.tensor(1.0), constraint=dist.constraints.positive)

        def forward(self, y=None):
            mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
            with pyro.plate("data", 200):
                pyro.sample("y", dist.Normal(mu, self.scale), obs=y)

    module = Model()
    first = pyro_stein.fit(module, WIDE, num_steps=300, seed=0, progress=False)
    scale = first.params["scale"].clone()
    first.predictive(5)
    pyro_stein.fit(module, NARROW, num_steps=300, seed=0, progress=False)
    assert torch.equal(first.params["scale"], scale)
