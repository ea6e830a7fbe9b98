"""Models with local latents whose per-datapoint posteriors are exact, and the training
recipe the tests and ``benchmarks/local_latents.py`` share."""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI

from pyro_stein import AmortizedSVGD
from pyro_stein.fitting.averaging import TailAverage


class FactorAnalysis:
    """``x_i = W z_i + e_i``, ``z_i ~ N(0, I_k)``, ``e_i ~ N(0, diag(psi))`` with known
    loadings ``W`` and noise ``psi``: ``z_i | x_i ~ N(S W^T Psi^-1 x_i, S)``,
    ``S = (I + W^T Psi^-1 W)^-1``."""

    def __init__(self, features=5, factors=2, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.loadings = torch.randn(features, factors, generator=generator)
        self.noise = 0.3 + torch.rand(features, generator=generator)
        self.generator = generator
        precision = torch.eye(factors) + self.loadings.T @ torch.diag(1 / self.noise) @ self.loadings
        self.posterior_cov = torch.linalg.inv(precision)

    def data(self, rows):
        k = self.loadings.shape[1]
        z = torch.randn(rows, k, generator=self.generator)
        return z @ self.loadings.T + torch.randn(rows, len(self.noise), generator=self.generator) * self.noise.sqrt()

    def posterior_mean(self, x):
        return x @ torch.diag(1 / self.noise) @ self.loadings @ self.posterior_cov

    def model(self, x, batch_size=128):
        with pyro.plate("data", len(x), subsample_size=min(batch_size, len(x))) as rows:
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([self.loadings.shape[1]]).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.loadings.T, self.noise.sqrt()).to_event(1), obs=x[rows])


def grouped_model(y, batch_size=16):
    """Groups of rows, ``z_g ~ N(0, 1)``, ``y_gr ~ N(z_g, 1)``, the groups subsampled and
    their rows a nested plate: ``z_g | y_g ~ N(sum_r y_gr / (R + 1), 1 / (R + 1))``."""
    with pyro.plate("groups", y.shape[0], subsample_size=min(batch_size, y.shape[0]), dim=-2) as groups:
        effect = pyro.sample("effect", dist.Normal(0.0, 1.0))
        with pyro.plate("rows", y.shape[1], dim=-1):
            pyro.sample("y", dist.Normal(effect, 1.0), obs=y[groups])


def train(model, guide, data, steps, *, lr=0.005, particles=16, engine=AmortizedSVGD, **kwargs):
    """``steps`` steps of ``engine`` (with ``particles`` particles a row), the learning rate
    decaying to 5% of ``lr``, the guide's parameters averaged over the last third (their
    minibatch jitter, about 0.1 posterior sd in the means of the worst rows of a factor
    analysis without it, is averaged out).  Returns the engine."""
    decay = 0.05 ** (1 / steps)
    loss = engine(num_particles=particles)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": lr, "lrd": decay}), loss=loss)
    average = None
    for step in range(steps):
        svi.step(data, **kwargs)
        if step >= 2 * steps // 3:
            average = average or TailAverage(guide)
            average.update()
    average.apply()
    return loss


def hierarchical_model(y, batch_size=32):
    """``mu ~ N(0, 10)``, group effects ``z_g ~ N(mu, 1)``, rows ``y_gr ~ N(z_g, 1)``: a
    global latent beside one local latent per group, the groups subsampled.  Gaussian, so
    `hierarchical_posterior` is exact."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("groups", y.shape[0], subsample_size=min(batch_size, y.shape[0]), dim=-2) as groups:
        effect = pyro.sample("effect", dist.Normal(mu, 1.0))
        with pyro.plate("rows", y.shape[1], dim=-1):
            pyro.sample("y", dist.Normal(effect, 1.0), obs=y[groups])


def hierarchical_posterior(y):
    """``(mean, sd)`` of ``mu`` and ``(means (G,), sds (G,))`` of the group effects, exact."""
    rows = y.shape[1]
    group_means = y.mean(-1)
    marginal_variance = 1.0 + 1.0 / rows
    precision = 1.0 / 100.0 + len(y) / marginal_variance
    mu_mean = float(group_means.sum() / marginal_variance / precision)
    mu_variance = 1.0 / precision
    effect_means = (rows * group_means + mu_mean) / (rows + 1)
    effect_sds = (1.0 / (rows + 1) + mu_variance / (rows + 1) ** 2) ** 0.5 * torch.ones(len(y))
    return (mu_mean, mu_variance**0.5), (effect_means, effect_sds)
