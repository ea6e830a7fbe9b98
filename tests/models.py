"""Models that more than one test module needs."""

import pyro
import pyro.distributions as dist
import torch


def branching_model(y):
    """Python control flow on a latent value: cannot be batched over particles."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = 1.0 if mu.item() > 0 else 2.0
    pyro.sample("y", dist.Normal(mu, scale), obs=y)


def hard_wall_model():
    """A standard normal cut at a hard wall: the log density is -inf for x < 0."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.factor("wall", torch.where(x < 0.0, torch.tensor(float("-inf")), torch.tensor(0.0)))


def normal_model(y):
    """Unknown location and scale of six observations: the fitting tests' small model."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


NORMAL_DATA = torch.tensor([1.2, 0.4, 2.2, 1.9, 0.8, 1.5])
