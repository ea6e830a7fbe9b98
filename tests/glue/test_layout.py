"""LatentLayout: the same latent vector as Pyro's AutoContinuous guides, packed and
unpacked without their private methods."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoMultivariateNormal

from pyro_stein.glue.layout import LatentLayout, check_model_args, latent_dtype


def rich_model():
    pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    pyro.sample("simplex", dist.Dirichlet(torch.ones(3)))
    pyro.sample("corr", dist.LKJCholesky(3, 2.0))
    with pyro.plate("groups", 4):
        pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("bounded", dist.Uniform(-1.0, 2.0))


def test_it_unpacks_exactly_as_autocontinuous_does():
    guide = AutoMultivariateNormal(rich_model)
    guide()
    layout = LatentLayout.from_trace(guide.prototype_trace)
    assert layout.latent_dim == guide.latent_dim == 1 + 2 + 3 + 4 + 4
    latent = torch.randn(5, 1, layout.latent_dim)  # a particle dim left of the plate
    ours = list(layout.unpack_unconstrained(latent))
    theirs = list(guide._unpack_latent(latent))
    assert [s["name"] for s, _ in ours] == [s["name"] for s, _ in theirs]
    for (_, a), (_, b) in zip(ours, theirs):
        assert a.shape == b.shape and torch.equal(a, b)
    assert torch.equal(layout.init_loc(), guide._init_loc())


def test_a_layout_of_the_model_matches_the_guides():
    guide = AutoMultivariateNormal(rich_model)
    guide()
    assert LatentLayout(rich_model).site_shapes == LatentLayout.from_trace(guide.prototype_trace).site_shapes


def test_pack_inverts_unpack_on_every_support():
    layout = LatentLayout(rich_model)
    latent = torch.randn(7, layout.latent_dim, dtype=layout.dtype)
    values = layout.unpack(latent)
    assert values["corr"].shape == (7, 3, 3) and values["loc"].shape == (7, 4)
    assert torch.allclose(layout.pack(values), latent, atol=1e-5)  # float32 round trip


def test_pack_refuses_bad_draws():
    layout = LatentLayout(rich_model)
    values = layout.unpack(torch.randn(3, layout.latent_dim))
    with pytest.raises(KeyError, match="no draws for latent site 'scale'"):
        layout.pack({k: v for k, v in values.items() if k != "scale"})
    with pytest.raises(ValueError, match="draws of site 'bounded' have shape"):
        layout.pack({**values, "bounded": torch.zeros(3, 5)})
    with pytest.raises(ValueError, match="1 draws of site 'scale' lie outside its support"):
        layout.pack({**values, "scale": torch.tensor([1.0, -1.0, 2.0])})
    with pytest.raises(ValueError, match="latent vectors must have length 14"):
        next(layout.unpack_unconstrained(torch.zeros(2, 3)))


def test_dtype_follows_the_widest_of_latents_and_data():
    def flat(y):
        pyro.sample("x", dist.ImproperUniform(constraints.real, (), ()))
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    y64 = torch.zeros((), dtype=torch.float64)
    assert LatentLayout(flat, y64).dtype == torch.float64
    assert latent_dtype(LatentLayout(flat, y64.float()).trace, (y64.float(),)) == torch.float32


def test_numpy_arguments_are_named():
    import numpy as np

    with pytest.raises(TypeError, match="keyword argument 'y' is a numpy.ndarray"):
        check_model_args((), {"y": np.zeros(2)})


def test_a_model_without_latents_or_with_a_sequential_plate_is_refused_by_name():
    def observed_only(y):
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="no latent sites"):
        LatentLayout(observed_only, torch.zeros(()))

    def sequential():
        for i in pyro.plate("items", 2):
            pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0))

    with pytest.raises(NotImplementedError, match="'x_0' lies in the sequential plate 'items'"):
        LatentLayout(sequential)
