"""The image generator ``x = G(xi)`` that the generative case studies train: SteinGAN by
amortized SVGD, the GAN baseline adversarially."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...ops.nn import mlp

__all__ = ["Generator"]


class Generator(nn.Module):
    """``x = G(xi)``, ``xi ~ Uniform(-1, 1)^noise_dim``: an MLP, with a sigmoid output so that
    images lie in ``[0, 1]`` (``bounded=True``) or a linear one.

    A target with mass outside ``[0, 1]``, like the Gaussian-Bernoulli RBM, needs the linear
    output: a bounded generator cannot draw from it, and the likelihood gradient estimated
    from its draws is then biased (the RBM's test log-likelihood fell during training with a
    sigmoid output).

    Args:
        dim: pixels per image.
        noise_dim: width of the noise.
        hidden_dims: widths of the hidden layers.
        bounded: sigmoid output.
        num_classes: for a class-conditional generator, the number of classes.

    Example:
        >>> generator = Generator(64, noise_dim=8, hidden_dims=(32,), num_classes=10)
        >>> images = generator(generator.noise(5), torch.arange(5))
        >>> images.shape, bool(((images >= 0) & (images <= 1)).all())
        (torch.Size([5, 64]), True)
    """

    def __init__(
        self,
        dim: int,
        noise_dim: int = 32,
        hidden_dims: tuple[int, ...] = (256, 256),
        bounded: bool = True,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.num_classes = num_classes
        # Linear, BatchNorm1d, ReLU per hidden layer, then Linear (and Sigmoid): net.0, net.1, ...
        self.net = mlp(
            [noise_dim + num_classes, *hidden_dims, dim], nn.ReLU, batch_norm=True,
            output_activation=nn.Sigmoid if bounded else None,
        )

    def noise(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` rows of ``Uniform(-1, 1)`` noise on the generator's device."""
        device = next(self.parameters()).device
        return 2.0 * torch.rand(num, self.noise_dim, generator=generator).to(device) - 1.0

    def forward(self, noise: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images for the noise rows; a class-conditional generator (``num_classes > 0``)
        also takes the class of each, appended to the noise as a one-hot code."""
        if self.num_classes:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            noise = torch.cat([noise, nn.functional.one_hot(labels, self.num_classes).to(noise)], -1)
        return self.net(noise)
