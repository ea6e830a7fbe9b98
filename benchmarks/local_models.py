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
