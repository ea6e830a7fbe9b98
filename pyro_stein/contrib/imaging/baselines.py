"""A standard GAN (Goodfellow et al., 2014; non-saturating generator loss) with the same
generator as SteinGAN ([`Generator`][pyro_stein.contrib.imaging.generator.Generator]) and an MLP
discriminator: the adversarial baseline of the generative case studies."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...ops.nn import mlp
from .generator import Generator

__all__ = ["GAN"]


class GAN:
    """Alternating discriminator and generator steps on binary cross-entropy.

    Args:
        generator: the sampler (shared architecture with SteinGAN).
        dim: pixels per image.
        hidden_dims: the discriminator's hidden widths.
        learning_rate: Adam's rate for both players (DCGAN's 2e-4, betas 0.5, 0.999).

    Example:
        >>> gan = GAN(Generator(64, hidden_dims=(32,)), 64, hidden_dims=(32,))
        >>> sorted(gan.step(torch.rand(16, 64)))
        ['discriminator_loss', 'generator_loss']
        >>> gan.sample(3).shape
        torch.Size([3, 64])
    """

    def __init__(self, generator: Generator, dim: int, hidden_dims: tuple[int, ...] = (256, 256), learning_rate: float = 2e-4) -> None:
        self.discriminator = mlp([dim, *hidden_dims, 1], lambda: nn.LeakyReLU(0.2))
        self.generator = generator
        self.learning_rate = learning_rate
        self.lr_factor = 1.0
        betas = (0.5, 0.999)
        self.generator_optim = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=betas)
        self.discriminator_optim = torch.optim.Adam(self.discriminator.parameters(), lr=learning_rate, betas=betas)

    def step(self, data: Tensor) -> dict[str, float]:
        for optimizer in (self.generator_optim, self.discriminator_optim):
            for group in optimizer.param_groups:
                group["lr"] = self.learning_rate * self.lr_factor
        self.generator.train()
        num = len(data)
        fake = self.generator(self.generator.noise(num))
        logits_real, logits_fake = self.discriminator(data), self.discriminator(fake.detach())
        bce = nn.functional.binary_cross_entropy_with_logits
        d_loss = bce(logits_real, torch.ones_like(logits_real)) + bce(logits_fake, torch.zeros_like(logits_fake))
        self.discriminator_optim.zero_grad()
        d_loss.backward()
        self.discriminator_optim.step()
        logits = self.discriminator(fake)
        g_loss = bce(logits, torch.ones_like(logits))  # non-saturating: maximise log D(G(xi))
        self.generator_optim.zero_grad()
        g_loss.backward()
        self.generator_optim.step()
        return {"discriminator_loss": float(d_loss.detach()), "generator_loss": float(g_loss.detach())}

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        self.generator.eval()
        return self.generator(self.generator.noise(num, generator))

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_optim": self.generator_optim.state_dict(),
            "discriminator_optim": self.discriminator_optim.state_dict(),
            "lr_factor": self.lr_factor,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_optim.load_state_dict(state["generator_optim"])
        self.discriminator_optim.load_state_dict(state["discriminator_optim"])
        self.lr_factor = state["lr_factor"]
