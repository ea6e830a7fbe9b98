import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from models import branching_model, broadcast_logistic_model, logistic_data
from pyro.distributions import constraints

import pyro_stein
from pyro_stein import AutoNeuralSampler
from pyro_stein.glue.density import GuideModelMismatch, UnconstrainedLogDensity


def _density(model, *args, **kwargs):
    guide = AutoNeuralSampler(model, init_scale=1.0)
    guide(*args, **kwargs)
    return guide, UnconstrainedLogDensity(model, guide)


def _grid_integral(density, dim, lo=-12.0, hi=12.0, points=801):
    axes = [torch.linspace(lo, hi, points, dtype=torch.float64)] * dim
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
    values = torch.cat([density(chunk).exp() for chunk in grid.split(100_000)])
    cell = ((hi - lo) / (points - 1)) ** dim
    return (values.sum() * cell).item()


@pytest.mark.parametrize(
    "name,prior,dim,mass",
    [
        ("positive", dist.Gamma(2.5, 1.5), 1, 1.0),
        ("interval", dist.Uniform(-1.0, 3.0), 1, 1.0),
        ("unit interval", dist.Beta(2.0, 5.0), 1, 1.0),
        ("simplex", dist.Dirichlet(torch.tensor([1.5, 2.0, 3.0])), 2, 1.0),
        ("corr_cholesky", dist.LKJCholesky(2, 1.5), 1, 1.0),
    ],
)
def test_change_of_variables_integrates_to_the_prior_mass(name, prior, dim, mass):
    # exp(log p(T(u)) + log|det J(u)|) integrates to one over unconstrained space only if
    # the log-Jacobian is right, whatever the constraint.
    torch.set_default_dtype(torch.float64)
    prior = prior.expand(prior.batch_shape)

    def model():
        pyro.sample("x", prior)

    guide, density = _density(model)
    assert guide.latent_dim == dim
    assert _grid_integral(lambda z: density(z), dim, points=801 if dim == 1 else 301) == pytest.approx(mass, rel=2e-3)


def test_ordered_vector_under_improper_uniform_integrates_correctly():
    # Two iid N(0, 1) restricted to x1 < x2 have mass 1/2.
    torch.set_default_dtype(torch.float64)

    def model():
        x = pyro.sample("x", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
        pyro.factor("normal", dist.Normal(0.0, 1.0).log_prob(x).sum(-1))

    _, density = _density(model)
    assert _grid_integral(lambda z: density(z), 2, lo=-8, hi=8, points=401) == pytest.approx(0.5, rel=2e-3)


def _rich_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 2.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
    matrix = pyro.sample("matrix", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
    with pyro.plate("groups", 4, dim=-2):
        group = pyro.sample("group", dist.Normal(loc, scale))
        with pyro.plate("members", 3, dim=-1):
            member = pyro.sample("member", dist.Normal(group, 1.0))
    pyro.deterministic("total", member.sum((-1, -2)) + (weights * matrix.sum(-2)).sum(-1))
    with pyro.plate("data", data.shape[-1], dim=-1):
        pyro.sample("obs", dist.Normal(loc + (weights * matrix.sum(-2)).sum(-1), 1.0), obs=data)


def test_vectorized_matches_one_particle_at_a_time():
    data = torch.randn(5)
    guide, density = _density(_rich_model, data)
    z = torch.randn(6, guide.latent_dim)
    vectorized = density(z, (data,), {})
    assert density.batching == "plate"
    looped = density._looped(z, (data,), {})
    assert torch.allclose(vectorized, looped, rtol=1e-5, atol=1e-4)
    assert torch.allclose(density._vmapped(z, (data,), {}), looped, rtol=1e-5, atol=1e-4)


def test_density_is_prior_plus_likelihood_plus_jacobian():
    # Hand-written check for a two-site model.
    y = torch.tensor([0.3, -1.2, 2.0])

    def model(y):
        mu = pyro.sample("mu", dist.Normal(1.0, 2.0))
        sigma = pyro.sample("sigma", dist.HalfCauchy(1.0))
        with pyro.plate("data", 3):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    guide, density = _density(model, y)
    z = torch.randn(4, 2)
    mu, log_sigma = z[:, 0], z[:, 1]
    sigma = log_sigma.exp()
    expected = (
        dist.Normal(1.0, 2.0).log_prob(mu)
        + dist.HalfCauchy(1.0).log_prob(sigma)
        + log_sigma
        + dist.Normal(mu.unsqueeze(-1), sigma.unsqueeze(-1)).log_prob(y).sum(-1)
    )
    assert torch.allclose(density(z, (y,), {}), expected, atol=1e-5)


def test_subsampled_plate_is_scaled_to_the_full_data():
    y = torch.randn(100)

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 100, subsample_size=10) as idx:
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y[idx])

    guide, _ = _density(model, y)
    density = UnconstrainedLogDensity(model, guide, frozen_subsample=True)
    z = torch.tensor([[0.4]])
    value = density(z, (y,), {})
    idx = density._subsample["data"]
    expected = dist.Normal(0.0, 1.0).log_prob(z[0, 0]) + 10.0 * dist.Normal(0.4, 1.0).log_prob(y[idx]).sum()
    assert torch.allclose(value, expected.reshape(1), atol=1e-4)
    # a frozen subsample is the same on every call
    assert torch.equal(density(z, (y,), {}), value)


def test_model_written_for_one_draw_runs_under_vmap():
    x = torch.randn(20, 3)
    y = torch.randn(20)

    def one_draw_model(x, y):
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", 20):
            pyro.sample("y", dist.Normal(x @ beta, 1.0), obs=y)

    def broadcasting_model(x, y):
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", 20):
            pyro.sample("y", dist.Normal((x * beta).sum(-1), 1.0), obs=y)

    _, density = _density(one_draw_model, x, y)
    z = torch.randn(5, 3)
    values = density(z, (x, y), {})
    assert density.batching == "vmap"
    _, reference = _density(broadcasting_model, x, y)
    assert torch.allclose(values, reference(z, (x, y), {}), atol=1e-4)
    assert reference.batching == "plate"


def test_model_with_control_flow_on_latents_falls_back_to_a_loop_with_a_warning():
    y = torch.tensor(0.3)
    _, density = _density(branching_model, y)
    z = torch.tensor([[0.5], [-0.5]])
    with pytest.warns(RuntimeWarning, match="per-particle loop"):
        values = density(z, (y,), {})
    assert density.batching == "loop"
    expected = torch.stack(
        [dist.Normal(0.0, 1.0).log_prob(m) + dist.Normal(m, 1.0 if m > 0 else 2.0).log_prob(y) for m in z[:, 0]]
    )
    assert torch.allclose(values, expected)


def test_model_that_silently_mixes_particles_is_caught():
    # Summing over all dims mixes particles without raising: the probe must notice.
    def sneaky(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu.sum(), 1.0), obs=y)

    guide, density = _density(sneaky, torch.tensor(0.5))
    density(torch.randn(4, 1), (torch.tensor(0.5),), {})
    # the plate evaluation mixes particles and is rejected; vmap keeps them apart
    assert density.batching == "vmap"


def test_guide_built_for_another_model_is_refused():
    def model_a():
        pyro.sample("a", dist.Normal(0.0, 1.0))

    def model_b():
        pyro.sample("b", dist.Normal(0.0, 1.0))

    def model_a_wide():
        pyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))

    guide = AutoNeuralSampler(model_a)
    guide()
    with pytest.raises(GuideModelMismatch, match="'b'.*'a'|another model"):
        UnconstrainedLogDensity(model_b, guide).setup((), {})
    with pytest.raises(GuideModelMismatch, match="Site 'a' differs"):
        UnconstrainedLogDensity(model_a_wide, guide).setup((), {})


def test_numpy_data_and_non_tensor_obs_are_refused():
    np = pytest.importorskip("numpy")

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    guide = AutoNeuralSampler(model)
    guide(torch.zeros(3))
    with pytest.raises(TypeError, match="positional argument 0 is a numpy.ndarray"):
        UnconstrainedLogDensity(model, guide).setup((np.zeros(3),), {})

    def list_obs_model():
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu, 1.0), obs=[1.0])  # not a tensor

    guide = AutoNeuralSampler(list_obs_model)
    with pytest.raises((TypeError, ValueError), match="'y'|Tensor"):
        guide()
        UnconstrainedLogDensity(list_obs_model, guide).setup((), {})


def test_deterministic_sites_do_not_change_the_density():
    def with_det():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.deterministic("x2", x**2)

    def without():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    z = torch.randn(5, 1)
    _, a = _density(with_det)
    _, b = _density(without)
    assert torch.allclose(a(z), b(z))
    assert torch.allclose(a(z), dist.Normal(0.0, 1.0).log_prob(z[:, 0]))


def test_non_finite_terms_are_named():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.factor("broken", torch.where(x > 0, torch.tensor(float("nan")), torch.tensor(0.0)))

    guide, density = _density(model)
    assert density.non_finite_sites(torch.tensor([1.0])) == ["broken"]
    assert density.non_finite_sites(torch.tensor([-1.0])) == []
    assert math.isnan(density(torch.tensor([[1.0]]))[0].item())


def test_mixture_priors_get_their_components_support():
    torch.set_default_dtype(torch.float64)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(torch.tensor([0.3, 0.7])), dist.Gamma(torch.tensor([2.0, 9.0]), torch.tensor([1.0, 2.0]))
    )

    def model():
        pyro.sample("x", mixture)

    guide, density = _density(model)
    assert _grid_integral(lambda z: density(z), 1) == pytest.approx(1.0, rel=2e-3)
    draws = guide.sample_posterior(100)["x"]
    assert (draws > 0).all()

    uneven = dist.MixtureSameFamily(
        dist.Categorical(torch.tensor([0.5, 0.5])), dist.Uniform(torch.tensor([0.0, 5.0]), torch.tensor([1.0, 6.0]))
    )
    with pytest.raises(NotImplementedError, match="different supports"):
        torch.distributions.biject_to(uneven.support)


def test_a_model_whose_sites_change_between_calls_is_told_so():
    calls = {"n": 0}

    def changing():  # a different latent site at every call
        calls["n"] += 1
        pyro.sample("a" if calls["n"] % 2 else "b", dist.Normal(0.0, 1.0))

    with pytest.raises(GuideModelMismatch, match=r"latent sites changed since the guide was set up from this same "
                                                 r"model \(model latent sites not in its first run: \['[ab]'\]"):
        pyro_stein.fit(changing, num_steps=2, progress=False)


def test_a_flat_prior_without_data_is_an_improper_posterior_named_by_site():
    def flat():
        pyro.sample("x", dist.ImproperUniform(constraints.real, (), ()))

    with pytest.raises(ValueError, match=r"does not depend on its latent sites \['x'\].*posterior is improper"):
        pyro_stein.fit(flat, num_steps=2, progress=False)


def test_observations_outside_the_support_are_refused_as_plain_svi_refuses_them():
    def coin(y):
        p = pyro.sample("p", dist.Beta(1.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Bernoulli(p), obs=y)

    with pytest.raises(ValueError, match=r"Observed site 'y': 1 observations lie outside the support .*\[2.0\]"):
        pyro_stein.fit(coin, torch.tensor([0.0, 1.0, 2.0]), num_steps=1, progress=False)

    def masked_coin(y):
        p = pyro.sample("p", dist.Beta(1.0, 1.0))
        with pyro.plate("data", len(y)), pyro.poutine.mask(mask=torch.tensor([True, True, False])):
            pyro.sample("y", dist.Bernoulli(p), obs=y)

    pyro_stein.fit(masked_coin, torch.tensor([0.0, 1.0, 2.0]), num_steps=1, progress=False)  # masked data is no data
    pyro_stein.fit(coin, torch.tensor([0.0, 1.0, 1.0]), num_steps=1, progress=False)
    with pyro.validation_enabled(False):  # the user's choice, as for SVI
        pyro_stein.fit(coin, torch.tensor([0.0, 1.0, 2.0]), num_steps=1, progress=False)


def test_data_that_broadcast_against_its_plate_are_refused_as_plain_svi_refuses_them():
    """Observations of shape (50, 1) inside plate(50) broadcast to a 50 x 50 likelihood
    (posterior sd 0.020 instead of 0.141); Pyro's shape check, which SVI runs, rejects it."""

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", 50):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = torch.randn(50, 1)
    with pytest.raises(ValueError, match="invalid log_prob shape"):  # what plain SVI says
        pyro.infer.SVI(model, pyro.infer.autoguide.AutoNormal(model), pyro.optim.Adam({}), pyro.infer.Trace_ELBO()).step(y)
    with pytest.raises(
        ValueError,
        match=r"Observed site 'y': its log density has shape \(50, 50\), but its plates declare \[50\] \(value shape \(50, 1\).*Pyro says: .*invalid log_prob shape",
    ):
        pyro_stein.fit(model, y, num_steps=1, progress=False)

    def unplated(y):  # batch dimensions no plate declares: Pyro's check rejects them too
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"Observed site 'y': its log density has shape \(50,\), but its plates declare \[\]"):
        pyro_stein.fit(unplated, y.squeeze(-1), num_steps=1, progress=False)
    pyro_stein.fit(model, y.squeeze(-1), num_steps=1, progress=False)
    with pyro.validation_enabled(False):  # the user's choice, as for SVI
        pyro_stein.fit(unplated, y.squeeze(-1), num_steps=1, progress=False)


def test_compiled_density_equals_the_eager_one_and_falls_back_on_other_arguments():
    args = logistic_data(rows=60)
    guide, density = _density(broadcast_logistic_model, *args)
    _, eager = _density(broadcast_logistic_model, *args)
    assert density.compile_for(16, args, policy=True)
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    log_p, score, valid = density.log_prob_and_score(z, args)
    expected = eager.log_prob_and_score(z, args)
    assert density.compiled.compiled[torch.Size([16, 3])] is not None  # the compiled graph ran
    torch.testing.assert_close(log_p, expected[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(score, expected[1], rtol=1e-5, atol=1e-4)
    assert valid.all()
    # New data (or the same tensor modified in place) evaluate eagerly, on those data.
    other = logistic_data(rows=60, seed=2)
    torch.testing.assert_close(density(z, other), eager(z, other))
    args[1][:5] = 1 - args[1][:5]
    torch.testing.assert_close(density(z, args), eager(z, args))
    # Other batch sizes evaluate eagerly without compiling.
    density(z[:5], args)
    assert set(density.compiled.compiled) == {torch.Size([16, 3])}


def test_the_automatic_policy_compiles_only_costly_densities_and_never_params_or_minibatches():
    args = logistic_data(rows=60)
    _, density = _density(broadcast_logistic_model, *args)
    assert not density.compile_for(512, args)  # 512 x 60 x 3 products: far below COMPILE_ELEMENTS
    assert density.compiled is None

    def with_param(x, y):
        shift = pyro.param("shift", torch.zeros(()))
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=(x * beta).sum(-1) + shift), obs=y)

    def subsampled(x, y):
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=10) as rows:
            pyro.sample("y", dist.Bernoulli(logits=(x[rows] * beta).sum(-1)), obs=y[rows])

    for model in (with_param, subsampled):
        pyro.clear_param_store()
        _, density = _density(model, *args)
        assert not density.compile_for(16, args, policy=True), model.__name__


def test_engine_refuses_a_compile_density_that_is_not_a_bool_or_none():
    with pytest.raises(TypeError, match="compile_density must be True, False or None"):
        pyro_stein.AmortizedSVGD(compile_density=1)
