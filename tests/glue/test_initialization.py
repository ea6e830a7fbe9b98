"""Per-site starting values: shape-derived, so they work where a prior cannot be sampled."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from torch.distributions import biject_to

from pyro_stein.glue.initialization import init_to_feasible, init_to_median, init_to_uniform, init_to_value


def _site(fn, name="x"):
    return {"name": name, "fn": fn, "type": "sample", "value": None, "is_observed": False, "infer": {}}


def test_feasible_is_the_image_of_zero_for_every_support():
    flat_positive = dist.ImproperUniform(constraints.positive, (3,), ())
    assert torch.equal(init_to_feasible(_site(flat_positive)), torch.ones(3))
    simplex = dist.Dirichlet(torch.ones(4))
    assert torch.allclose(init_to_feasible(_site(simplex)), torch.full((4,), 0.25))
    interval = dist.Uniform(torch.tensor(-1.0, dtype=torch.float64), 3.0)
    value = init_to_feasible(_site(interval))
    assert value.item() == pytest.approx(1.0) and value.dtype == torch.float64  # follows the parameters


def test_uniform_draws_lie_within_the_radius_in_unconstrained_space():
    fn = dist.ImproperUniform(constraints.positive, (2000,), ())
    value = init_to_uniform(radius=0.5)(_site(fn))
    unconstrained = biject_to(fn.support).inv(value)
    assert unconstrained.abs().max() <= 0.5 and unconstrained.std() > 0.25  # uniform on (-0.5, 0.5): sd 0.29


def test_median_falls_back_where_the_prior_cannot_be_sampled():
    assert torch.equal(init_to_median(_site(dist.ImproperUniform(constraints.positive, (2,), ()))), torch.ones(2))
    pyro.set_rng_seed(0)
    median = init_to_median(num_samples=1001)(_site(dist.Normal(3.0, 1.0)))
    assert median.item() == pytest.approx(3.0, abs=0.1)  # the sample median's sd is about 0.04


def test_value_takes_named_sites_and_the_fallback_for_others():
    start = init_to_value(values={"a": torch.tensor(2.0)}, fallback=init_to_feasible)
    assert start(_site(dist.Normal(0.0, 1.0), "a")).item() == 2.0
    assert start(_site(dist.LogNormal(0.0, 1.0), "b")).item() == 1.0
