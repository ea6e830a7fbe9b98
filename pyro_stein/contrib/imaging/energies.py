"""Deep energy models ``p(x) proportional to exp(f(x))`` on flat images: those of the SteinGAN
case study, shared by any study that trains an energy on images.

Each energy maps flat images ``(N, D)`` to ``f(x)``, ``(N,)`` (an unnormalized log density,
higher is more probable: the sign convention of Wang & Liu, 2016), and gives the features on
which the Stein kernel is taken (``features``).

References:
    D. Wang and Q. Liu. "Learning to Draw Samples: With Application to Amortized MLE for
    Generative Adversarial Learning." arXiv:1611.01722, 2016.
    K. Cho, A. Ilin and T. Raiko. "Improved Learning of Gaussian-Bernoulli Restricted
    Boltzmann Machines." ICANN 2011.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ...ops.nn import mlp

__all__ = ["AutoencoderEnergy", "BalancedEnergy", "ClassConditionalEnergy", "GaussianBernoulliRBM"]


@runtime_checkable
class BalancedEnergy(Protocol):
    """An energy that says how a trainer should compare data and draws when it balances
    the two players (the autoencoder energies: their reconstruction error)."""

    def balance_energy(self, x: Tensor) -> Tensor: ...

#: Hidden units above which the exact partition function (a sum over 2^H states) is refused.
MAX_EXACT_HIDDEN = 20


class GaussianBernoulliRBM(nn.Module):
    """A Gaussian-Bernoulli restricted Boltzmann machine with few hidden units, whose
    normalizing constant is exact: a sum over the ``2^H`` hidden states of Gaussian integrals.

    Energy of visible ``v`` (real, ``D``) and hidden ``h`` (binary, ``H``)::

        E(v, h) = sum_i (v_i - b_i)^2 / (2 s_i^2) - c.h - sum_ij (v_i / s_i) W_ij h_j

    so ``f(v) = -F(v)`` with the free energy
    ``F(v) = sum_i (v_i - b_i)^2 / (2 s_i^2) - sum_j softplus(c_j + ((v / s) W)_j)``, and

    ``log Z = logsumexp_h [c.h + sum_i (b_i a_i / s_i + a_i^2 / 2)] + sum_i log(sqrt(2 pi) s_i)``,
    ``a = W h`` (integrating each ``v_i`` out of ``exp(-E)`` completes a square).

    Args:
        dim: visible units (pixels).
        num_hidden: hidden units; the exact ``log Z`` enumerates ``2^num_hidden`` states.
        init_scale: standard deviation of the initial weights.

    Example:
        >>> rbm = GaussianBernoulliRBM(dim=4, num_hidden=3)
        >>> rbm.log_prob(torch.zeros(5, 4)).shape
        torch.Size([5])
    """

    def __init__(self, dim: int, num_hidden: int = 10, init_scale: float = 0.01) -> None:
        super().__init__()
        if not 1 <= num_hidden <= MAX_EXACT_HIDDEN:
            raise ValueError(f"num_hidden must lie in [1, {MAX_EXACT_HIDDEN}] for an exact log Z, got {num_hidden}")
        self.weight = nn.Parameter(init_scale * torch.randn(dim, num_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(dim))
        self.hidden_bias = nn.Parameter(torch.zeros(num_hidden))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=num_hidden)))
        self.register_buffer("hidden_states", states, persistent=False)

    @torch.no_grad()
    def fit_visible_to(self, data: Tensor) -> None:
        """Start the visible biases and scales at the data's per-pixel mean and sd (floored),
        the density the RBM has when its weights are zero."""
        flat = data.reshape(len(data), -1)
        self.visible_bias.copy_(flat.mean(0))
        self.log_scale.copy_(flat.std(0).clamp_min(0.05).log())

    def free_energy(self, v: Tensor) -> Tensor:
        """``F(v)``, ``(N, D) -> (N,)``."""
        scale = self.log_scale.exp()
        quadratic = ((v - self.visible_bias) ** 2 / (2 * scale**2)).sum(-1)
        return quadratic - nn.functional.softplus(self.hidden_bias + (v / scale) @ self.weight).sum(-1)

    def forward(self, v: Tensor) -> Tensor:
        """``f(v) = -F(v)``, the unnormalized log density."""
        return -self.free_energy(v)

    def log_partition(self) -> Tensor:
        """The exact ``log Z``."""
        scale = self.log_scale.exp()
        a = self.hidden_states.to(self.weight) @ self.weight.T  # (2^H, D)
        per_state = self.hidden_states.to(self.weight) @ self.hidden_bias + (
            self.visible_bias * a / scale + a**2 / 2
        ).sum(-1)
        return torch.logsumexp(per_state, 0) + (self.log_scale + 0.5 * math.log(2 * math.pi)).sum()

    def log_prob(self, v: Tensor) -> Tensor:
        """The exact normalized log density ``f(v) - log Z``, per row."""
        return self(v) - self.log_partition()

    def features(self, v: Tensor) -> Tensor:
        """The kernel works on the pixels themselves."""
        return v


class AutoencoderEnergy(nn.Module):
    """The autoencoder energy of SteinGAN: ``f(x) = -||x - D(E(x))||``, low reconstruction
    error meaning high density, with the Stein kernel taken on the encoder's features
    ``E(x)`` (the repulsive term is pulled back to ``x`` by autograd).

    Args:
        dim: pixels per image.
        code_dim: width of the code ``E(x)``.
        hidden_dims: widths of the encoder's hidden layers (the decoder mirrors them).

    Example:
        >>> energy = AutoencoderEnergy(dim=64, code_dim=16)
        >>> energy(torch.rand(5, 64)).shape, energy.features(torch.rand(5, 64)).shape
        (torch.Size([5]), torch.Size([5, 16]))
    """

    def __init__(self, dim: int, code_dim: int = 16, hidden_dims: Sequence[int] = (128,)) -> None:
        super().__init__()
        widths = [dim, *hidden_dims, code_dim]
        self.encoder = mlp(widths, nn.ELU)
        self.decoder = mlp(widths[::-1], nn.ELU)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))

    def forward(self, x: Tensor) -> Tensor:
        """``f(x) = -||x - D(E(x))||_2`` per row."""
        # The norm's gradient is undefined at a perfect reconstruction; the floor keeps it finite.
        return -((x - self.reconstruct(x)) ** 2).sum(-1).clamp_min(1e-12).sqrt()

    def features(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def balance_energy(self, x: Tensor) -> Tensor:
        """The reconstruction error ``-f(x)``, which the trainer's balancing compares."""
        return -self(x)


class ClassConditionalEnergy(nn.Module):
    """The joint energy of SteinGAN's class-conditional model:
    ``f(x, y) = -||x - D(E(x))|| - max(m, CE(softmax(W E(x) + b), y))``.

    The autoencoder term rates how image-like ``x`` is; a linear classifier on the encoder's
    features rates how much it looks like digit ``y``, through a hinge: once the
    cross-entropy is below the margin ``m``, being more confident earns nothing, so the energy
    does not reward caricatures of a class. A generator trained on ``f(., y)`` draws the
    digit it is asked for.

    Args:
        dim: pixels per image.
        num_classes: classes.
        margin: the hinge margin ``m`` (the paper's code: 0.2).
        code_dim: width of the encoder's features.
        hidden_dims: hidden widths of the autoencoder.
    """

    conditional = True

    def __init__(
        self, dim: int, num_classes: int, margin: float = 0.2, code_dim: int = 16, hidden_dims: Sequence[int] = (128,)
    ) -> None:
        super().__init__()
        if not margin >= 0:
            raise ValueError(f"margin must be non-negative, got {margin!r}")
        self.autoencoder = AutoencoderEnergy(dim, code_dim, hidden_dims)
        self.classifier = nn.Linear(code_dim, num_classes)
        self.margin = margin
        self.num_classes = num_classes

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """``f(x, y)`` per row, ``labels`` ``(N,)`` class indices."""
        cross_entropy = nn.functional.cross_entropy(self.classifier(self.features(x)), labels, reduction="none")
        return self.autoencoder(x) - cross_entropy.clamp_min(self.margin)

    def features(self, x: Tensor) -> Tensor:
        return self.autoencoder.features(x)

    def balance_energy(self, x: Tensor) -> Tensor:
        """The autoencoder's reconstruction error alone (the classifier term depends on the
        label): what the trainer's balancing compares, as in the paper's code."""
        return self.autoencoder.balance_energy(x)
