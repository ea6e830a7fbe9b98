"""SteinGAN training: an energy model learnt by maximum likelihood, with a generator trained
by amortized SVGD to draw the model samples that the likelihood gradient needs.

One iteration (Wang & Liu, 2016, Algorithm 2):

1. generator step: draw ``x_i = G(xi_i)``, compute the Stein variational direction
   ``Delta x_i`` of the current energy at the draws, and move the generator's parameters
   along ``sum_i dG(xi_i)/d eta^T Delta x_i`` (amortized SVGD);
2. energy step: ascend ``mean f(data) - gamma * mean f(x)``, the likelihood gradient
   ``E_data[grad f] - E_model[grad f]`` with the model expectation taken over the draws.

``gamma = 1`` is maximum likelihood (the RBM energy). For the autoencoder energy the
paper's code balances the two players: ``gamma`` is 0.3 (and the energy's step 5 times
larger) while the energy rates the draws above the data, 0.1 otherwise, and the generator
gets an extra step (the energy waits) while its draws are far worse than the data. The
comparisons use the autoencoder's reconstruction error, as the paper's code does.

The generator ([`Generator`][pyro_stein.contrib.imaging.generator.Generator]) and the epoch
loop ([`train`][pyro_stein.contrib.imaging.training.train]) are the imaging toolkit's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops.kernels import RadialKernel, RBFKernel
from ...ops.stein import kernel_drive, kernel_gram, kernel_repulsion
from ...ops.surrogate import direction_surrogate
from ..imaging.energies import BalancedEnergy, ClassConditionalEnergy
from ..imaging.generator import Generator

__all__ = ["BalanceRule", "SteinGAN", "feature_stein_direction"]


def feature_stein_direction(
    x: Tensor,
    scores: Tensor,
    features: Callable[[Tensor], Tensor],
    kernel: RadialKernel | None = None,
    *,
    leave_one_out: bool = True,
    repulsion: bool = True,
    groups: Tensor | None = None,
) -> Tensor:
    """The Stein variational direction at draws ``x`` with the kernel taken on ``features(x)``.

    ``Delta x_i = 1/n sum_j [k(phi_j, phi_i) s_j] + J_phi(x_i)^T r_i``, where ``r_i`` is the
    kernel's repulsion at ``phi_i`` in feature space (`pyro_stein.ops.stein.kernel_repulsion`)
    and the transpose Jacobian pulls it back to pixel space (one backward pass). With identity
    features this is the ordinary Stein direction (`pyro_stein.ops.stein.stein_direction`).

    Args:
        x: draws ``(N, D)``.
        scores: ``grad_x f`` at the draws, ``(N, D)``.
        features: the feature map (the autoencoder's encoder; identity for pixel kernels).
        kernel: a radial kernel on the features (default RBF with the median heuristic).
        leave_one_out: skip the self-interaction, as for amortized SVGD.
        repulsion: keep the kernel's repulsive term (``False``: the ablation that leaves
            only the kernel-smoothed gradient, which drives every draw to the modes).
        groups: optional ``(N,)`` labels: draws interact only within their group (the kernel
            times ``1[y_i = y_j]``), as for a class-conditional target, where a neighbour's
            score points towards its own class.

    Returns:
        ``(N, D)``.

    Example:
        >>> from pyro_stein.ops.kernels import RBFKernel
        >>> from pyro_stein.ops.stein import kernel_gram, stein_direction
        >>> x = torch.randn(50, 3, dtype=torch.float64)
        >>> direction = feature_stein_direction(x, -x, lambda z: z, RBFKernel())
        >>> torch.allclose(direction, stein_direction(-x, kernel_gram(x, RBFKernel())))
        True
    """
    kernel = RBFKernel() if kernel is None else kernel
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        phi = features(x)
    gram = kernel_gram(phi.detach(), kernel, groups=groups)
    # The drive takes the pixel-space scores with the feature-space kernel values.
    drive = kernel_drive(scores, gram, leave_one_out=leave_one_out)
    if not repulsion:
        return drive
    feature_repulsion = kernel_repulsion(gram, leave_one_out=leave_one_out)
    (pulled_back,) = torch.autograd.grad(phi, x, grad_outputs=feature_repulsion.detach())
    return drive + pulled_back


@dataclass
class BalanceRule:
    """The paper's balancing of generator and energy (``gamma`` and step sizes).

    Attributes:
        gamma_when_draws_win: ``gamma`` while the energy rates the draws above the data.
        gamma_otherwise: ``gamma`` otherwise.
        energy_boost: the energy's learning rate factor while the draws win.
        skip_margin: the energy skips its step (so the generator takes two in a row) while
            the draws' mean energy exceeds the data's by more than this.
    """

    gamma_when_draws_win: float = 0.3
    gamma_otherwise: float = 0.1
    energy_boost: float = 5.0
    skip_margin: float = 0.5


class SteinGAN:
    """Alternating amortized-SVGD generator steps and maximum-likelihood energy steps.

    Args:
        energy: a module mapping flat images ``(N, D)`` to ``f(x)`` ``(N,)``, with a
            ``features`` method for the kernel (see `pyro_stein.contrib.imaging.energies`).
        generator: the sampler, [`Generator`][pyro_stein.contrib.imaging.generator.Generator].
        gamma: a fixed weight of the draws' term in the energy step (``1``: maximum
            likelihood), or ``None`` to follow ``balance``.
        balance: the paper's balancing rule, used when ``gamma`` is ``None``.
        generator_lr: Adam learning rate of the generator.
        energy_lr: Adam learning rate of the energy.
        betas: Adam's betas for both (the paper: 0.5, 0.999).
        weight_decay: L2 penalty on both (the paper: 1e-5).
        kernel: the kernel on the energy's features (default RBF, median heuristic).
        repulsion: keep the kernel's repulsive term in the generator's direction (``False``
            is the no-repulsion ablation).

    Example:
        >>> from pyro_stein.contrib.imaging.energies import GaussianBernoulliRBM
        >>> from pyro_stein.contrib.imaging.generator import Generator
        >>> gan = SteinGAN(GaussianBernoulliRBM(64), Generator(64), gamma=1.0)
        >>> figures = gan.step(torch.rand(100, 64))
        >>> sorted(figures)
        ['data_energy', 'draws_energy', 'energy_skipped', 'gamma', 'stein_force']
    """

    def __init__(
        self,
        energy: nn.Module,
        generator: Generator,
        *,
        gamma: float | None = None,
        balance: BalanceRule | None = None,
        generator_lr: float = 1e-3,
        energy_lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-5,
        kernel: RadialKernel | None = None,
        repulsion: bool = True,
    ) -> None:
        if gamma is not None and not gamma > 0:
            raise ValueError(f"gamma must be positive or None, got {gamma!r}")
        self.energy, self.generator = energy, generator
        self.gamma, self.balance = gamma, balance or BalanceRule()
        self.kernel, self.repulsion = kernel, repulsion
        self.generator_lr, self.energy_lr = generator_lr, energy_lr
        self.generator_optim = torch.optim.Adam(generator.parameters(), lr=generator_lr, betas=betas, weight_decay=weight_decay)
        self.energy_optim = torch.optim.Adam(energy.parameters(), lr=energy_lr, betas=betas, weight_decay=weight_decay)
        self.lr_factor = 1.0
        self._draws_win = False

    def step(self, data: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """One generator step and one energy step on a batch of flat data images ``(N, D)``;
        the generator draws as many images as the batch holds. With a class-conditional
        energy, ``labels`` are the batch's classes, and the generator is asked for the same."""
        num = len(data)
        conditional = isinstance(self.energy, ClassConditionalEnergy)
        if conditional and labels is None:
            raise ValueError("a class-conditional energy needs the batch's labels")
        energy = (lambda z: self.energy(z, labels)) if conditional else self.energy
        self.generator.train()
        draws = self.generator(self.generator.noise(num), labels if conditional else None)
        # The balance compares how well the energy's autoencoder reconstructs data and draws
        # (the paper's code does), where the energy says how (``balance_energy``).
        balance = self.energy.balance_energy if isinstance(self.energy, BalancedEnergy) else (lambda z: -energy(z))
        with torch.no_grad():
            data_energy = float(balance(data).mean())
            draws_energy = float(balance(draws).mean())
        stein_force = float("nan")
        x = draws.detach().requires_grad_(True)
        with torch.enable_grad():
            (scores,) = torch.autograd.grad(energy(x).sum(), x)
        direction = feature_stein_direction(
            x, scores, self.energy.features, self.kernel, repulsion=self.repulsion, groups=labels if conditional else None
        )
        stein_force = float(direction.pow(2).sum(-1).mean().sqrt())
        # Ascending sum_i <G(xi_i), Delta x_i> moves every draw along its direction.
        self._set_lr(self.generator_optim, self.generator_lr)
        self.generator_optim.zero_grad()
        direction_surrogate(draws, direction).backward()
        self.generator_optim.step()
        gamma = self.gamma
        boost = 1.0
        # While the draws are far worse than the data the energy waits, and the generator
        # gets the next step too.
        skip = self.gamma is None and draws_energy > data_energy + self.balance.skip_margin
        if gamma is None:
            draws_win = draws_energy < data_energy  # the energy rates the draws above the data
            gamma = self.balance.gamma_when_draws_win if draws_win else self.balance.gamma_otherwise
            boost = self.balance.energy_boost if draws_win else 1.0
        if not skip:
            self._set_lr(self.energy_optim, self.energy_lr * boost)
            self.energy_optim.zero_grad()
            loss = -(energy(data).mean() - gamma * energy(draws.detach()).mean())
            loss.backward()
            self.energy_optim.step()
        return {
            "data_energy": data_energy,
            "draws_energy": draws_energy,
            "gamma": float(gamma),
            "energy_skipped": float(skip),
            "stein_force": stein_force,
        }

    def _set_lr(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr * self.lr_factor

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        """``num`` flat images from the generator (in eval mode: batch-norm running statistics).
        A class-conditional generator draws ``labels`` (default: the classes in turn)."""
        self.generator.eval()
        if self.generator.num_classes and labels is None:
            labels = torch.arange(num) % self.generator.num_classes
        return self.generator(self.generator.noise(num, generator), labels if self.generator.num_classes else None)

    def state_dict(self) -> dict:
        return {
            "energy": self.energy.state_dict(),
            "generator": self.generator.state_dict(),
            "energy_optim": self.energy_optim.state_dict(),
            "generator_optim": self.generator_optim.state_dict(),
            "lr_factor": self.lr_factor,
        }

    def load_state_dict(self, state: dict) -> None:
        self.energy.load_state_dict(state["energy"])
        self.generator.load_state_dict(state["generator"])
        self.energy_optim.load_state_dict(state["energy_optim"])
        self.generator_optim.load_state_dict(state["generator_optim"])
        self.lr_factor = state["lr_factor"]
