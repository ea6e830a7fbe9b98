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
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..kernels import RadialKernel, RBFKernel
from ..stein import kernel_gram, stein_direction

__all__ = ["BalanceRule", "Generator", "SteinGAN", "feature_stein_direction", "learning_rate_factor", "train"]


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
        layers: list[nn.Module] = []
        width = noise_dim + num_classes
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        if bounded:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def noise(self, num: int, generator: torch.Generator | None = None) -> Tensor:
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
    kernel's repulsion at ``phi_i`` in feature space (`pyro_stein.stein.stein_direction` with
    zero scores) and the transpose Jacobian pulls it back to pixel space (one backward pass).
    With identity features this is the ordinary Stein direction.

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
    """
    kernel = RBFKernel() if kernel is None else kernel
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        phi = features(x)
    gram = kernel_gram(phi.detach(), kernel)
    if groups is not None:
        same = (groups.unsqueeze(0) == groups.unsqueeze(1)).to(phi.dtype)
        profile = gram.profile._replace(value=gram.profile.value * same, d1=gram.profile.d1 * same,
                                        d2=gram.profile.d2 * same)
        gram = gram._replace(profile=profile)
    k = gram.profile.value
    drive = k @ scores
    if leave_one_out:
        drive = drive - k.diagonal().unsqueeze(-1) * scores
    drive = drive / max(len(x) - int(leave_one_out), 1)
    if not repulsion:
        return drive
    feature_repulsion = stein_direction(torch.zeros_like(phi), gram, leave_one_out=leave_one_out)
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
            ``features`` method for the kernel (see `pyro_stein.steingan.energies`).
        generator: the sampler, [`Generator`][pyro_stein.steingan.training.Generator].
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
        >>> from pyro_stein.steingan import GaussianBernoulliRBM
        >>> from pyro_stein.steingan.training import Generator, SteinGAN
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
        conditional = getattr(self.energy, "conditional", False)
        if conditional and labels is None:
            raise ValueError("a class-conditional energy needs the batch's labels")
        energy = (lambda z: self.energy(z, labels)) if conditional else self.energy
        self.generator.train()
        draws = self.generator(self.generator.noise(num), labels if conditional else None)
        # The balance compares how well the energy's autoencoder reconstructs data and draws
        # (the paper's code does), where the energy says how (``balance_energy``).
        balance = getattr(self.energy, "balance_energy", None) or (lambda z: -energy(z))
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
        (-(draws * direction.detach()).sum() / num).backward()
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


def learning_rate_factor(epoch: int, epochs: int) -> float:
    """The paper's schedule: constant for the first half of the epochs, then linear decay
    (to ``1 / (epochs / 2)`` of the initial rate in the last epoch)."""
    half = epochs / 2
    return 1.0 - max(0.0, (epoch - half) / half) if epochs > 1 else 1.0


def train(
    gan: SteinGAN,
    data: Tensor,
    *,
    labels: Tensor | None = None,
    epochs: int,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[int, SteinGAN], dict[str, float]] | None = None,
) -> dict[str, list[float]]:
    """Train for ``epochs`` passes over ``data`` (flat images ``(N, D)``), with the paper's
    learning-rate schedule, a tqdm bar, and a checkpoint that a later call resumes from.

    Args:
        gan: the [`SteinGAN`][pyro_stein.steingan.training.SteinGAN] to train (or any object with
            its `step`, `lr_factor`, `state_dict` and `load_state_dict`, such as the GAN baseline).
        data: the training images, flat.
        labels: their classes, for a class-conditional energy.
        epochs: passes over the data in total (a resumed run counts the ones it resumes).
        batch_size: images per step (and generator draws per step).
        seed: seeds the batch order and torch's generator (the generator's noise).
        progress: show a progress bar.
        checkpoint: a file: resumed from if it exists, written after every epoch.
        on_epoch: called after each epoch with ``(epoch, gan)``; the figures it returns
            join the history (the metrics of the case study).

    Returns:
        ``{figure: [value per epoch]}``: the mean of each step figure over the epoch, and
        ``on_epoch``'s figures.
    """
    from tqdm.auto import tqdm

    if epochs < 1 or batch_size < 2:
        raise ValueError(f"epochs must be >= 1 and batch_size >= 2, got {epochs} and {batch_size}")
    history: dict[str, list[float]] = {}
    start = 0
    path = None if checkpoint is None else Path(checkpoint)
    torch.manual_seed(seed)
    if path is not None and path.exists():
        state = torch.load(path, weights_only=False)
        try:
            gan.load_state_dict(state["gan"])
        except (RuntimeError, KeyError) as error:
            raise ValueError(
                f"checkpoint {path} was written by a different model and cannot resume this run "
                f"({str(error).splitlines()[0]}); write to another folder or delete the checkpoint"
            ) from error
        history, start = state["history"], state["epoch"]
        torch.set_rng_state(state["torch_rng"])
    bar = tqdm(total=epochs, initial=start, disable=not progress, desc="SteinGAN")
    for epoch in range(start, epochs):
        gan.lr_factor = learning_rate_factor(epoch, epochs)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        sums: dict[str, float] = {}
        steps = 0
        for first in range(0, len(data) - batch_size + 1, batch_size):
            batch = order[first : first + batch_size]
            figures = gan.step(data[batch]) if labels is None else gan.step(data[batch], labels[batch])
            for name, value in figures.items():
                if math.isfinite(value):
                    sums[name] = sums.get(name, 0.0) + value
            steps += 1
        for name, total in sums.items():
            history.setdefault(name, []).append(total / steps)
        history.setdefault("epoch", []).append(epoch + 1)
        if on_epoch is not None:
            for name, value in on_epoch(epoch + 1, gan).items():
                history.setdefault(name, []).append(value)
        bar.update(1)
        bar.set_postfix({name: f"{values[-1]:.3g}" for name, values in history.items() if name != "epoch"}, refresh=False)
        if path is not None:
            state = {"gan": gan.state_dict(), "history": history, "epoch": epoch + 1, "torch_rng": torch.get_rng_state()}
            tmp = path.with_suffix(path.suffix + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
    bar.close()
    return history
