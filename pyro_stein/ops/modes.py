"""Mode search from many starts at once, and grouping the end points into distinct modes.

Pure tensor math; the log density is a callable, so no Pyro here.  Used to see whether a
posterior has modes a sampler does not reach: searches from dispersed starts find the
modes, searches from the sampler's own draws find the modes it covers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Ascent", "ascend", "group_modes"]

#: ``(N, D) -> (log_p (N,), score (N, D), valid (N,))``.
LogProbAndScore = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]

#: Steps between the tests of whether every search has settled.
_SETTLED_EVERY = 10


class Ascent(NamedTuple):
    """The end of `ascend()`.

    Attributes:
        points: ``(N, D)`` end points.
        log_p: ``(N,)`` their log densities.
        converged: ``(N,)`` whether the search settled: the score is small and the last
            steps gained almost nothing (a density that grows without bound, as in a
            funnel's neck, never settles).
    """

    points: Tensor
    log_p: Tensor
    converged: Tensor


def ascend(
    log_prob_and_score: LogProbAndScore, start: Tensor, *, num_steps: int = 300, tolerance: float = 1e-3
) -> Ascent:
    """Gradient ascent on the log density from every row of ``start`` at once, each row
    with its own step size (grown by 1.2 after a gain, halved after a loss or a non-finite
    value), in coordinates assumed whitened.  It ends after ``num_steps`` steps, or sooner
    once every search has settled (see `Ascent`) or is stuck where the density is not finite.

    Example:
        >>> import torch
        >>> def two_modes(z):  # 0.5 N(-3, 1) + 0.5 N(3, 1)
        ...     z = z.detach().requires_grad_(True)
        ...     log_p = torch.logaddexp(-(z + 3).pow(2).sum(-1) / 2, -(z - 3).pow(2).sum(-1) / 2)
        ...     (score,) = torch.autograd.grad(log_p.sum(), z)
        ...     return log_p.detach(), score, torch.ones(len(z), dtype=torch.bool)
        >>> ends = ascend(two_modes, torch.tensor([[-1.0], [2.0]]))
        >>> [round(x) for x in ends.points.flatten().tolist()], bool(ends.converged.all())
        ([-3, 3], True)
    """
    z = start.detach().clone()
    log_p, score, valid = log_prob_and_score(z)
    log_p = torch.where(valid, log_p, torch.full_like(log_p, -torch.inf))
    step = torch.full_like(log_p, 0.1)
    gain = torch.full_like(log_p, torch.inf)
    dim = z.shape[-1]

    def settled() -> Tensor:
        return valid & (gain < tolerance) & (score.norm(dim=-1) < 0.1 * dim**0.5)

    for index in range(num_steps):
        # Every search settled (or stuck where the density is not finite): further steps
        # would not move any of them.  Asked every few steps, each asking being a host sync.
        if index % _SETTLED_EVERY == 0 and index > 0 and bool((settled() | ~valid).all()):
            break
        proposal = z + step.unsqueeze(-1) * torch.where(valid.unsqueeze(-1), score, torch.zeros_like(score))
        new_log_p, new_score, new_valid = log_prob_and_score(proposal)
        better = new_valid & torch.isfinite(new_log_p) & (new_log_p >= log_p)
        gain = torch.where(better, new_log_p - log_p, 0.5 * gain)
        z = torch.where(better.unsqueeze(-1), proposal, z)
        log_p = torch.where(better, new_log_p, log_p)
        score = torch.where(better.unsqueeze(-1), new_score, score)
        valid = torch.where(better, new_valid, valid)
        step = torch.where(better, 1.2 * step, 0.5 * step).clamp(1e-8, 10.0)
    return Ascent(z, log_p, settled())


def group_modes(points: Tensor, log_p: Tensor, converged: Tensor, *, radius: float) -> tuple[Tensor, Tensor]:
    """Group converged end points lying within ``radius`` of each other (highest log
    density first) into distinct modes.

    Returns:
        ``(modes, label)``: the modes' indices into ``points`` ``(K,)``, highest log density
        first, and each point's mode number ``(N,)`` (``-1``: not converged).

    Example:
        >>> import torch
        >>> points = torch.tensor([[0.0], [0.01], [5.0]])
        >>> modes, label = group_modes(points, torch.tensor([1.0, 0.9, 0.5]), torch.ones(3, dtype=torch.bool), radius=1.0)
        >>> modes.tolist(), label.tolist()
        ([0, 2], [0, 0, 1])
    """
    label = torch.full(log_p.shape, -1, dtype=torch.long, device=points.device)
    order = torch.argsort(log_p, descending=True)
    modes: list[int] = []
    for index in order.tolist():
        if not bool(converged[index]):
            continue
        if modes:
            distances = (points[modes] - points[index]).norm(dim=-1)
            nearest = int(distances.argmin())
            if float(distances[nearest]) < radius:
                label[index] = nearest
                continue
        label[index] = len(modes)
        modes.append(index)
    return torch.tensor(modes, dtype=torch.long, device=points.device), label
