"""The invertible feature map ``f_psi`` of Adaptive Density Estimation and the image-space
likelihood it induces, built from Pyro's transforms.

Lucas et al. (2019) put the decoder's factorial Gaussian in the feature space of an
invertible map ``f_psi``: with ``y = f_psi(x)``,

    log p(x | z) = log N(f_psi(x); mu_theta(z), sigma^2 I) + log |det d f_psi / d x|,

exact in image space by the change of variables. Here the map is a stack of Pyro's
``AffineCoupling`` layers with fixed permutations between them, and the likelihood is a
``TransformedDistribution`` of the feature-space Gaussian through ``f_psi^{-1}``, so its
``log_prob`` includes the log-determinant.

References:
    T. Lucas, K. Shmelkov, K. Alahari, C. Schmid and J. Verbeek. "Adaptive Density
    Estimation for Generative Models." NeurIPS 2019.
    L. Dinh, J. Sohl-Dickstein and S. Bengio. "Density estimation using Real NVP." ICLR 2017.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineCoupling, ComposeTransformModule, Permute
from pyro.nn import DenseNN
from torch import Tensor

__all__ = ["bits_per_dim", "dequantize", "feature_space_likelihood", "invertible_map"]


def invertible_map(
    dim: int, num_layers: int = 4, hidden_dims: tuple[int, ...] = (128,), seed: int = 0
) -> ComposeTransformModule:
    """``g = f_psi^{-1}``, from feature space to image space: ``num_layers`` affine coupling
    layers with a fixed random permutation before each, so that every coordinate is
    transformed.

    Pyro's ``AffineCoupling`` is analytic in both directions: ``g(y)`` samples images from
    features, and ``g.inv(x) = f_psi(x)`` with ``log_abs_det_jacobian`` scores them.

    Args:
        dim: pixels per image (flat).
        num_layers: coupling layers.
        hidden_dims: hidden widths of each layer's conditioner network.
        seed: seeds the permutations (not the weights).

    Returns:
        A ``ComposeTransformModule`` (its parameters train like any ``nn.Module``'s).

    Example:
        >>> to_images = invertible_map(6, num_layers=2, hidden_dims=(8,))
        >>> y = torch.randn(3, 6)
        >>> torch.allclose(to_images.inv(to_images(y)), y, atol=1e-5)
        True
    """
    if dim < 2 or num_layers < 1:
        raise ValueError(f"need dim >= 2 and num_layers >= 1, got {dim} and {num_layers}")
    generator = torch.Generator().manual_seed(seed)
    parts = []
    split = dim // 2
    for _ in range(num_layers):
        parts.append(Permute(torch.randperm(dim, generator=generator)))
        hypernet = DenseNN(split, list(hidden_dims), param_dims=[dim - split, dim - split])
        parts.append(AffineCoupling(split, hypernet))
    return ComposeTransformModule(parts)


def feature_space_likelihood(mean: Tensor, scale: Tensor | float, to_images: ComposeTransformModule | None) -> dist.TorchDistribution:
    """``p(x | z)``: ``Normal(mean, scale)`` over the features, pushed through ``to_images``
    (``f_psi^{-1}``); with ``to_images=None`` the plain pixel-space Gaussian (the VAE and
    AV-GDE variants). One event of ``mean.shape[-1]`` pixels.

    Example:
        >>> likelihood = feature_space_likelihood(torch.zeros(2, 6), 0.1, invertible_map(6, num_layers=2))
        >>> likelihood.batch_shape, likelihood.event_shape, likelihood.log_prob(torch.rand(2, 6)).shape
        (torch.Size([2]), torch.Size([6]), torch.Size([2]))
    """
    base = dist.Normal(mean, scale).to_event(1)
    if to_images is None:
        return base
    return dist.TransformedDistribution(base, [to_images])


def dequantize(images: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization: images with values ``k / (levels - 1)``, ``k = 0 .. levels - 1``
    (as scikit-learn's digits, 17 levels, or MNIST, 256), become ``(k + u) / levels`` with
    ``u ~ Uniform(0, 1)``: a continuous density on ``[0, 1]^D`` whose likelihood bounds the
    discrete one (Theis et al., 2016).

    Example:
        >>> x = dequantize(torch.tensor([0.0, 0.5, 1.0]), levels=17, generator=torch.Generator().manual_seed(0))
        >>> (x * 17).floor().tolist()
        [0.0, 8.0, 16.0]
    """
    counts = torch.round(images * (levels - 1))
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype)
    return (counts + noise) / levels


def bits_per_dim(log_prob: Tensor, dim: int, levels: int) -> Tensor:
    """Bits per dimension of dequantized images ``(k + u) / levels`` from their continuous
    ``log_prob`` (nats, per image): ``-(log p(x) - D log levels) / (D log 2)``; the change of
    variables from ``[0, levels)^D`` to ``[0, 1)^D`` gives the ``D log levels``.

    Example:
        >>> bits_per_dim(torch.zeros(1), dim=64, levels=256)  # the uniform density: 8 bits a pixel
        tensor([8.])
    """
    return -(log_prob - dim * math.log(levels)) / (dim * math.log(2.0))
