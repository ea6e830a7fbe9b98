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


def broadcast_logistic_model(x, y):
    """A logistic regression written with broadcasting, ``(x * beta).sum(-1)``: the idiom
    whose batched density is worth compiling."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(x * beta).sum(-1)), obs=y)


def logistic_data(rows=40, seed=0):
    """``(x, y)``: ``rows`` standard normal rows of 3 features and coin-flip labels."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, generator=generator)
    return x, (torch.rand(rows, generator=generator) < 0.5).float()
