"""Models that more than one test module needs."""

import pyro
import pyro.distributions as dist


def branching_model(y):
    """Python control flow on a latent value: cannot be batched over particles."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = 1.0 if mu.item() > 0 else 2.0
    pyro.sample("y", dist.Normal(mu, scale), obs=y)
