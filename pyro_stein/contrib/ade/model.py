"""The ADE model and its variants, from one code path (Lucas et al., 2019).

The coverage term is a Pyro ELBO (``Trace_ELBO``) of a VAE whose likelihood is
[`feature_space_likelihood`][pyro_stein.contrib.ade.flows.feature_space_likelihood]: Gaussian in the
feature space of an invertible map (V-ADE, AV-ADE) or in pixel space (VAE, AV-GDE). The
quality term trains the decoder (and the map) against a discriminator ``D`` on samples
``f_psi^{-1}(mu_theta(z))``, ``z ~ p(z)``, with the log-ratio loss
``-E[log D / (1 - D)]``; ``D`` learns by binary cross-entropy.

=========  ==========  ===========  ============
variant    flow        likelihood   adversarial
=========  ==========  ===========  ============
vae        no          yes          no
v-ade      yes         yes          no
gan        no          no           yes
av-gde     no          yes          yes
av-ade     yes         yes          yes
=========  ==========  ===========  ============
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor, nn

from ...ops.nn import mlp
from .flows import feature_space_likelihood, invertible_map

__all__ = ["ADE", "VARIANTS", "ADETrainer", "Variant"]


class Variant(NamedTuple):
    flow: bool
    likelihood: bool
    adversarial: bool


VARIANTS: dict[str, Variant] = {
    "vae": Variant(flow=False, likelihood=True, adversarial=False),
    "v-ade": Variant(flow=True, likelihood=True, adversarial=False),
    "gan": Variant(flow=False, likelihood=False, adversarial=True),
    "av-gde": Variant(flow=False, likelihood=True, adversarial=True),
    "av-ade": Variant(flow=True, likelihood=True, adversarial=True),
}


class ADE(nn.Module):
    """One variant of Adaptive Density Estimation on flat images ``(N, D)`` in ``[0, 1]``.

    Args:
        dim: pixels per image.
        variant: one of ``VARIANTS``.
        latent_dim: width of ``z``.
        hidden: width of the encoder's, decoder's and discriminator's hidden layers.
        flow_layers: coupling layers of the invertible map.
        adversarial_weight: ``lambda`` in ``L_coverage + lambda * L_quality`` (both per image).
        learning_rate: Adam's rate (betas 0.5, 0.999) for the encoder, decoder and map; the
            discriminator's is 2e-4.
        batch_norm: batch normalization after the decoder's hidden layers, as in DCGAN's
            generator. ``None`` (the default) turns it on for the GAN variant only. In the
            hybrid variants the decoder runs on posterior and on prior codes each step, so its
            running statistics (used in evaluation) mix the two.

    Defaults, measured on digits over 100 epochs (``benchmarks/generative_digits.py`` and its
    ``--sweep``, docs/ade.md):

    * Weight 1, the plain sum of the two terms: AV-ADE reached 2.84 bits per dimension with
      classifier-Frechet distance 8.8, against V-ADE's 2.87 and 37.4 (seeds 0-2: 2.84 +- 0.01
      bits and distance 10.6 +- 2.0, against 2.86 +- 0.003 and 47.7 +- 9.9). At weight 0.3
      its distance was 18.5; at weight 3 the map collapsed (4.8 bits, distance 203), at 10
      it diverged (one seed each).
    * Batch normalization: without it the adversarial-only decoder collapsed (seed 0:
      distance 326, class entropy 0.47); with it the GAN reached 9.2 (seeds 0-2: 13.1 +-
      3.6). With it AV-ADE lost bits and samples (2.90 bits, distance 19.3, one seed), so it
      is off in the likelihood variants.

    Example:
        >>> ade = ADE(64, "av-ade")
        >>> figures = ade.train_step(torch.rand(32, 64))
        >>> sorted(figures)
        ['discriminator', 'elbo', 'quality']
    """

    def __init__(
        self,
        dim: int,
        variant: str = "av-ade",
        latent_dim: int = 16,
        hidden: int = 256,
        flow_layers: int = 4,
        adversarial_weight: float = 1.0,
        learning_rate: float = 2e-4,
        batch_norm: bool | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        if not (math.isfinite(adversarial_weight) and adversarial_weight >= 0):
            raise ValueError(f"adversarial_weight must be finite and >= 0, got {adversarial_weight}")
        if min(dim, latent_dim, hidden) < 1 or flow_layers < 1 or not learning_rate > 0:
            raise ValueError(
                "dim, latent_dim, hidden and flow_layers must be >= 1 and learning_rate > 0, got "
                f"{dim}, {latent_dim}, {hidden}, {flow_layers} and {learning_rate}"
            )
        self.variant_name, self.variant = variant, VARIANTS[variant]
        self.dim, self.latent_dim = dim, latent_dim
        self.encoder = mlp([dim, hidden, 2 * latent_dim])
        if batch_norm is None:
            batch_norm = not self.variant.likelihood
        #: What the model was built with (the default of ``batch_norm`` resolved): recorded in
        #: ``metrics.json`` and checked when a checkpoint resumes.
        self.config = {"variant": variant, "latent_dim": latent_dim, "hidden": hidden, "flow_layers": flow_layers,
                       "adversarial_weight": adversarial_weight, "learning_rate": learning_rate,
                       "batch_norm": batch_norm}
        self.decoder = mlp([latent_dim, hidden, hidden, dim], batch_norm=batch_norm)
        self.to_images = invertible_map(dim, flow_layers) if self.variant.flow else None
        self.log_sigma = nn.Parameter(torch.tensor(-2.0))
        self.discriminator = mlp([dim, hidden, hidden, 1], lambda: nn.LeakyReLU(0.2))
        self.adversarial_weight = adversarial_weight
        generator_parameters = [p for name, p in self.named_parameters() if not name.startswith("discriminator")]
        self.optimizer = torch.optim.Adam(generator_parameters, lr=learning_rate, betas=(0.5, 0.999))
        self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self._elbo = Trace_ELBO()

    # ------------------------------------------------------------- Pyro model
    def model(self, x: Tensor) -> None:
        """``z ~ N(0, I)``, ``x | z ~`` the (feature-space) Gaussian likelihood."""
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x: Tensor) -> None:
        """The amortized posterior ``q(z | x)``: a diagonal Gaussian from the encoder."""
        loc, raw_scale = self.encoder(x).chunk(2, -1)
        with pyro.plate("images", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw_scale) + 1e-4).to_event(1))

    def likelihood(self, z: Tensor) -> dist.TorchDistribution:
        # Flat rows: batch normalization reads a 3-D input (importance samples, images,
        # features) as channels in dimension 1.
        mean = self.decoder(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], self.dim)
        return feature_space_likelihood(mean, self.log_sigma.exp(), self.to_images)

    def generate(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Samples ``f_psi^{-1}(mu_theta(z))``, ``z ~ p(z)`` (differentiable)."""
        z = torch.randn(num, self.latent_dim, generator=generator)
        mean = self.decoder(z)
        return mean if self.to_images is None else self.to_images(mean)

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def log_likelihood_bounds(self, x: Tensor, num_samples: int = 100, batch_size: int = 100) -> tuple[Tensor, Tensor]:
        """Per image, the ELBO and the importance-weighted bound (Burda et al., 2016)
        ``log mean_k p(x, z_k) / q(z_k | x)``, ``z_k ~ q(z | x)``, ``k = 1..num_samples``: both
        lower bounds on ``log p(x)`` (nats), the second tighter. ``nan`` for the GAN, which has
        no likelihood."""
        if not self.variant.likelihood:
            nan = x.new_full((len(x),), float("nan"))
            return nan, nan
        elbos, bounds = [], []
        prior = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
        for batch in x.split(batch_size):
            loc, raw_scale = self.encoder(batch).chunk(2, -1)
            posterior = dist.Normal(loc, nn.functional.softplus(raw_scale) + 1e-4).to_event(1)
            z = posterior.sample((num_samples,))  # (K, N, latent)
            log_weights = prior.log_prob(z) + self.likelihood(z).log_prob(batch) - posterior.log_prob(z)
            elbos.append(log_weights.mean(0))
            bounds.append(torch.logsumexp(log_weights, 0) - torch.log(torch.tensor(float(num_samples))))
        return torch.cat(elbos), torch.cat(bounds)

    # --------------------------------------------------------------- training
    def train_step(self, x: Tensor) -> dict[str, float]:
        """One step of the variant's objective on a batch, then one discriminator step
        (adversarial variants). Returns the ELBO per image (nats), the quality loss and the
        discriminator's loss (``nan`` where the variant has no such term)."""
        figures = {"elbo": float("nan"), "quality": float("nan"), "discriminator": float("nan")}
        loss = x.new_zeros(())
        if self.variant.likelihood:
            # Pyro's Trace_ELBO is the coverage term: an ELBO in feature space, plus the
            # flow's log-determinant inside the likelihood's log_prob.
            coverage = self._elbo.differentiable_loss(self.model, self.guide, x) / len(x)
            loss = loss + coverage
            figures["elbo"] = -float(coverage.detach())
        fake = None
        if self.variant.adversarial:
            fake = self.generate(len(x))
            logits = self.discriminator(fake).squeeze(-1)
            quality = -logits.mean()  # log D / (1 - D) is the discriminator's logit
            loss = loss + self.adversarial_weight * quality
            figures["quality"] = float(quality.detach())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if fake is not None:
            bce = nn.functional.binary_cross_entropy_with_logits
            real_logits, fake_logits = self.discriminator(x).squeeze(-1), self.discriminator(fake.detach()).squeeze(-1)
            d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
            self.discriminator_optimizer.zero_grad()
            d_loss.backward()
            self.discriminator_optimizer.step()
            figures["discriminator"] = float(d_loss.detach())
        return figures


class ADETrainer:
    """The training interface of the imaging toolkit's epoch loop,
    [`train`][pyro_stein.contrib.imaging.training.train] (``step``, ``lr_factor``, ``sample``,
    ``state_dict``, ``load_state_dict``), around an [`ADE`][pyro_stein.contrib.ade.model.ADE],
    so the case studies share one training loop with its schedule, progress bar and
    checkpoints.

    Example:
        >>> trainer = ADETrainer(ADE(64, "vae", hidden=32))
        >>> trainer.lr_factor = 0.5
        >>> sorted(trainer.step(torch.rand(16, 64)))
        ['discriminator', 'elbo', 'quality']
        >>> trainer.sample(3).shape
        torch.Size([3, 64])
    """

    def __init__(self, ade: ADE) -> None:
        self.ade = ade
        self.lr_factor = 1.0
        self._base = [[g["lr"] for g in o.param_groups] for o in (ade.optimizer, ade.discriminator_optimizer)]

    def step(self, data: Tensor) -> dict[str, float]:
        for optimizer, rates in zip((self.ade.optimizer, self.ade.discriminator_optimizer), self._base):
            for group, rate in zip(optimizer.param_groups, rates):
                group["lr"] = rate * self.lr_factor
        self.ade.train()
        return self.ade.train_step(data)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        self.ade.eval()
        return self.ade.generate(num, generator)

    def state_dict(self) -> dict:
        return {
            "config": self.ade.config,
            "ade": self.ade.state_dict(),
            "optimizer": self.ade.optimizer.state_dict(),
            "discriminator_optimizer": self.ade.discriminator_optimizer.state_dict(),
            "lr_factor": self.lr_factor,
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("config", {})
        if saved != self.ade.config:
            changed = sorted(k for k in set(saved) | set(self.ade.config) if saved.get(k) != self.ade.config.get(k))
            raise ValueError(
                "the checkpoint was written with other model options ("
                + ", ".join(f"{k}: {saved.get(k)!r} there, {self.ade.config.get(k)!r} here" for k in changed)
                + "); write to another folder or delete the checkpoint"
            )
        self.ade.load_state_dict(state["ade"])
        self.ade.optimizer.load_state_dict(state["optimizer"])
        self.ade.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self.lr_factor = state["lr_factor"]
