"""The Stein variational direction within groups of particles: one group per datapoint.

For a model with a latent ``z_i`` per datapoint, an amortized sampler draws ``K`` particles
of every ``z_i`` in a minibatch of ``G`` datapoints, and each datapoint's particles target
that datapoint's own conditional posterior ``p(z_i | x_i, ...)``.  The Stein direction of
datapoint ``i`` is then taken among its own ``K`` particles only, with a bandwidth chosen
from their own distances: the block-diagonal kernel of graphical SVGD, whose blocks are
the datapoints' latents (Wang, Zeng & Liu 2018).  Particles of different datapoints never
interact, so the cost is ``G K^2`` rather than ``(G K)^2``.

Pure tensor math on particles ``(G, K, d)`` and their scores of the same shape; no Pyro.
The formulas are those of [`pyro_stein.ops.stein`][pyro_stein.ops.stein] (which works on
one group ``(N, D)``) with a leading group dimension.

References:
    D. Wang, Z. Zeng and Q. Liu. "Stein Variational Message Passing for Continuous
    Graphical Models." ICML 2018.
    Y. Feng, D. Wang and Q. Liu. "Learning to Draw Samples with Amortized Stein
    Variational Gradient Descent." UAI 2017 (amortized SVGD for a VAE's encoder).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .kernels import MEDIAN_MAX_PARTICLES, KernelProfile, RadialKernel

__all__ = ["GroupedGram", "grouped_kernel_gram", "grouped_squared_ksd", "grouped_stein_direction"]


class GroupedGram(NamedTuple):
    """The kernel on all pairs of particles within each group.

    Attributes:
        centered: ``(G, K, d)``, each group's particles minus their mean.
        sq_dists: ``(G, K, K)`` squared distances within each group.
        profile: kernel values and radial derivatives on ``sq_dists``; its bandwidth is
            ``(G, 1, 1)``, one per group.
    """

    centered: Tensor
    sq_dists: Tensor
    profile: KernelProfile


def grouped_kernel_gram(particles: Tensor, kernel: RadialKernel) -> GroupedGram:
    """Evaluate ``kernel`` within each group of ``particles`` ``(G, K, d)``, the bandwidth
    from each group's own median heuristic (the pairs among its first
    ``MEDIAN_MAX_PARTICLES`` particles).

    Raises:
        ValueError: not three dimensions, fewer than two particles a group, or non-finite
            positions.

    Example:
        >>> import torch
        >>> from pyro_stein.ops.kernels import RBFKernel
        >>> gram = grouped_kernel_gram(torch.randn(10, 16, 2), RBFKernel())
        >>> gram.sq_dists.shape, gram.profile.bandwidth.shape
        (torch.Size([10, 16, 16]), torch.Size([10, 1, 1]))
    """
    if particles.dim() != 3 or particles.shape[1] < 2:
        raise ValueError(f"particles must have shape (G, K, d) with K >= 2, got {tuple(particles.shape)}")
    if not bool(torch.isfinite(particles).all()):
        raise ValueError("particles must be finite")
    num = particles.shape[1]
    centered = particles - particles.mean(1, keepdim=True)
    sq_norms = centered.pow(2).sum(-1)
    sq_dists = (sq_norms.unsqueeze(-1) + sq_norms.unsqueeze(-2) - 2.0 * centered @ centered.transpose(-1, -2))
    sq_dists = sq_dists.clamp_min(0.0) * (1.0 - torch.eye(num, dtype=particles.dtype, device=particles.device))
    counted = min(num, MEDIAN_MAX_PARTICLES)
    rows, cols = torch.triu_indices(counted, counted, offset=1, device=particles.device)
    median = sq_dists[:, rows, cols].median(-1).values
    bandwidth = kernel.bandwidth_from_median(median, counted).reshape(-1, 1, 1)
    return GroupedGram(centered, sq_dists, kernel.profile(sq_dists, bandwidth))


def grouped_stein_direction(scores: Tensor, gram: GroupedGram, *, leave_one_out: bool = True) -> Tensor:
    """The Stein variational direction of every particle among its group's particles.

    Args:
        scores: ``(G, K, d)``, the score of each group's target at each particle.
        gram: from `grouped_kernel_gram()` on the same particles.
        leave_one_out: skip each particle's interaction with itself (an unbiased estimate
            of the population direction when the particles are independent draws).

    Returns:
        ``(G, K, d)``.

    Example:
        >>> import torch
        >>> from pyro_stein.ops.kernels import RBFKernel
        >>> x = 0.3 * torch.randn(5, 100, 2)     # too narrow for N(0, I) in every group ...
        >>> phi = grouped_stein_direction(-x, grouped_kernel_gram(x, RBFKernel()))
        >>> bool(((phi * (x - x.mean(1, keepdim=True))).sum(-1).mean(-1) > 0).all())  # ... so each spreads out
        True
    """
    k, g1 = gram.profile.value, gram.profile.d1
    x = gram.centered
    drive = k @ scores
    if leave_one_out:
        drive = drive - k.diagonal(dim1=-2, dim2=-1).unsqueeze(-1) * scores
    repulsion = 2.0 * (g1 @ x - g1.sum(-1, keepdim=True) * x)
    return (drive + repulsion) / max(x.shape[1] - int(leave_one_out), 1)


def grouped_squared_ksd(scores: Tensor, gram: GroupedGram) -> Tensor:
    """Each group's U-statistic estimate of the squared kernelized Stein discrepancy
    between its particles and its target (as
    [`squared_ksd()`][pyro_stein.ops.stein.squared_ksd], group by group).

    Returns:
        ``(G,)``.
    """
    x, s = gram.centered, scores
    k, g1, g2 = gram.profile.value, gram.profile.d1, gram.profile.d2
    num, dim = x.shape[1], x.shape[2]
    own = (s * x).sum(-1)
    total = (
        ((k @ s) * s).sum((-1, -2))
        - 2.0 * (g1.sum(-1) * own).sum(-1)
        + 2.0 * ((g1 @ x) * s).sum((-1, -2))
        + 2.0 * ((g1 @ s) * x).sum((-1, -2))
        - 2.0 * (g1.sum(-2) * own).sum(-1)
        - 4.0 * (g2 * gram.sq_dists).sum((-1, -2))
        - 2.0 * dim * g1.sum((-1, -2))
    )
    diagonal = (k.diagonal(dim1=-2, dim2=-1) * s.pow(2).sum(-1)).sum(-1) - 2.0 * dim * g1.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (total - diagonal) / (num * (num - 1))
