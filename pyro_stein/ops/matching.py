"""Distribution-matching directions: how to move a batch ``x`` so that it matches ``y``.

Pure tensor math, no Pyro.  Each function returns, for every row of ``x``, the direction
``v_i`` in which to move it (minus the gradient of a discrepancy between the empirical
measures of ``x`` and ``y``, scaled by ``N``), and the discrepancy itself.

Why not ``v_i = y_i - x_i``: when ``y_i`` is ``x_i`` moved by a noisy flow, regressing each
``x_i`` onto its own ``y_i`` learns the flow's conditional mean.  The noise averages out,
the update is plain gradient ascent on ``log p``, and a sampler trained that way collapses
onto the mode (``benchmarks/ctf_distillation.py`` measures it).  The discrepancies below
compare the two batches as distributions, so the noise's spreading is kept.

References:
    J. Rabin, G. Peyre, J. Delon and M. Bernot. "Wasserstein Barycenter and its Application
    to Texture Mixing." SSVM 2011 (sliced Wasserstein).
    G. J. Szekely and M. L. Rizzo. "Energy statistics: A class of statistics based on
    distances." J. Stat. Plan. Inference 143(8), 2013.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["energy_distance_direction", "random_projections", "sliced_wasserstein_direction"]


def random_projections(dim: int, num_projections: int, *, dtype: torch.dtype, device: torch.device | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """``(D, P)`` unit directions made of ``ceil(P / D)`` random orthonormal bases (``P``
    rounded up to a multiple of ``D``): within a basis the projections are orthogonal, so
    the directions cover every axis evenly, with less variance than independent draws."""
    num_bases = max(1, math.ceil(num_projections / dim))
    gaussian = torch.randn(num_bases, dim, dim, dtype=dtype, device=device, generator=generator)
    q, r = torch.linalg.qr(gaussian)
    # Fix the signs so that each basis is Haar-distributed.
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return q.transpose(0, 1).reshape(dim, num_bases * dim)


def _empirical_quantiles(sorted_values: Tensor, levels: Tensor) -> Tensor:
    """Linear interpolation of each column's empirical quantile function at ``levels``.

    ``sorted_values`` is ``(..., M, P)`` sorted along its dim -2, ``levels`` ``(N,)`` in
    ``(0, 1)``; the ``k``-th order statistic sits at level ``(k + 1/2) / M``, so with
    ``N == M`` this returns ``sorted_values`` itself.
    """
    m = sorted_values.shape[-2]
    position = (levels * m - 0.5).clamp(0, m - 1)
    lower = position.floor().long()
    upper = (lower + 1).clamp(max=m - 1)
    weight = (position - lower.to(position.dtype)).unsqueeze(-1)
    return torch.lerp(sorted_values[..., lower, :], sorted_values[..., upper, :], weight)


def sliced_wasserstein_direction(
    x: Tensor, y: Tensor, projections: Tensor
) -> tuple[Tensor, Tensor]:
    """Move ``x`` along each projection's one-dimensional optimal transport to ``y``.

    On each direction ``theta`` the optimal transport between two empirical measures is
    the monotone (sorted) matching; particle ``i`` is pushed by the gap between its
    quantile in ``x`` and the same quantile of ``y``.  With projections that make up
    ``B`` orthonormal bases the direction is ``1/B sum_theta theta * gap_theta``: for
    batches that differ by a shift or a rescaling along the basis it is the full
    transport displacement.  The minimiser of the sliced Wasserstein distance is ``y``'s
    law, and in one dimension the matching is the exact optimal transport, so the
    direction has no pull towards the mode.

    Args:
        x: ``(..., N, D)``, the batch to move; leading dimensions are groups matched
            separately (one per datapoint, say).
        y: ``(..., M, D)``, the target batch (``M`` may differ from ``N``).
        projections: ``(D, P)`` unit directions, e.g. from `random_projections()`.

    Returns:
        ``(direction (..., N, D), sliced W2^2 (...))``: the squared distance averaged over
        the projections.

    Example:
        >>> import torch
        >>> x, y = torch.randn(1000, 2), 3.0 * torch.randn(1000, 2)
        >>> v, _ = sliced_wasserstein_direction(x, y, random_projections(2, 64, dtype=x.dtype))
        >>> bool((v * x).sum(-1).mean() > 0)   # x is too narrow: it is pushed outwards
        True
    """
    n, dim = x.shape[-2:]
    num_bases = projections.shape[1] / dim
    projected_x = x @ projections
    sorted_y = (y @ projections).sort(dim=-2).values
    sorted_x, order = projected_x.sort(dim=-2)
    levels = (torch.arange(n, dtype=x.dtype, device=x.device) + 0.5) / n
    gap_sorted = _empirical_quantiles(sorted_y, levels) - sorted_x
    gap = torch.empty_like(projected_x).scatter_(-2, order, gap_sorted)
    return gap @ projections.T / num_bases, gap.pow(2).mean((-1, -2))


def energy_distance_direction(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Minus the energy distance's gradient: each ``x_i`` is drawn towards ``y`` and
    pushed away from the rest of ``x``, by unit vectors.

    The energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` is zero only when the laws
    agree; the ``x``-``x`` term is the U-statistic (``j != i``), so the direction has mean
    zero when ``x`` and ``y`` are draws of the same law.

    Args:
        x: ``(N, D)``.
        y: ``(M, D)``.

    Returns:
        ``(direction (N, D), energy distance estimate)``, the direction
        ``1/(N-1) sum_{j != i} u(x_i - x_j) - 1/M sum_j u(x_i - y_j)`` with ``u(v) = v / |v|``.

    Example:
        >>> import torch
        >>> x, y = torch.randn(500, 2), torch.randn(500, 2) + torch.tensor([2.0, 0.0])
        >>> v, _ = energy_distance_direction(x, y)
        >>> bool(v[:, 0].mean() > 0)
        True
    """
    n, m = x.shape[0], y.shape[0]
    # Exact differences, not the matrix-product shortcut, which rounds close pairs to 0.
    mode = "donot_use_mm_for_euclid_dist"
    dist_xy = torch.cdist(x, y, compute_mode=mode)
    dist_xx = torch.cdist(x, x, compute_mode=mode)
    # A pair closer than this contributes a bounded push instead of 0/0.
    floor = torch.finfo(x.dtype).eps ** 0.5 * (1.0 + dist_xy.mean().detach())
    inv_xy = 1.0 / dist_xy.clamp_min(floor)
    inv_xx = (1.0 / dist_xx.clamp_min(floor)).fill_diagonal_(0.0)
    towards_y = (inv_xy.sum(-1, keepdim=True) * x - inv_xy @ y) / m
    away_from_x = (inv_xx.sum(-1, keepdim=True) * x - inv_xx @ x) / max(n - 1, 1)
    dist_yy = torch.cdist(y, y, compute_mode=mode)
    value = 2 * dist_xy.mean() - dist_xx.sum() / max(n * (n - 1), 1) - dist_yy.sum() / max(m * (m - 1), 1)
    return away_from_x - towards_y, value
