"""The Stein variational direction and the kernelized Stein discrepancy.

Pure tensor math on a batch of particles ``x`` of shape ``(N, D)`` and their scores
``s = grad log p(x)`` of the same shape; no Pyro in this module.  Only ``N x N`` matrices
are formed.

For a radial kernel ``k(x, y) = g(||x - y||^2)`` the Stein variational direction at
particle ``i`` is

    phi_i = 1/n_i * sum_j [ k(x_j, x_i) s_j + 2 g'(r_ij) (x_j - x_i) ],

the first term driving particles up the log density, the second repelling them from each
other (Liu & Wang, 2016).  With ``leave_one_out=True`` the sum skips ``j = i``: when the
particles are independent draws of a sampler, as in amortized SVGD, ``phi_i`` is then an
unbiased estimate of the population direction ``E_{y~q}[k(y, x_i) s(y) + grad_y k(y, x_i)]``
at ``x_i``.  The ``j = i`` term is a pure pull towards the mode (``grad k(x, x) = 0``)
that, weighted ``1/N``, shrinks the sampler's spread.

`moment_direction()` is the Stein direction of the matrix-valued kernel
``K(x, y) = diag_a(1 + x_a y_a)``, which acts coordinate by coordinate: its fixed point
matches ``E[s_a] = 0`` and ``E[x_a s_a] = -1``, the Stein identities of each coordinate's
mean and scale.  Added to a radial kernel's direction (a sum of kernels is a kernel, and
its discrepancy is zero only where the radial one is), it keeps their signal in high
dimensions, where the radial kernel's weakens like ``1 / D``.

References:
    Q. Liu and D. Wang. "Stein Variational Gradient Descent." NeurIPS 2016.
    Q. Liu and D. Wang. "Stein Variational Gradient Descent as Moment Matching." NeurIPS
    2018 (linear kernels make the fixed point match a Gaussian's mean and variance).
    D. Wang, Z. Tang, C. Bajaj and Q. Liu. "Stein Variational Gradient Descent with
    Matrix-Valued Kernels." NeurIPS 2019.
    Q. Liu, J. Lee and M. Jordan. "A Kernelized Stein Discrepancy for Goodness-of-fit
    Tests." ICML 2016 (the U-statistic).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .kernels import KernelProfile, RadialKernel

__all__ = [
    "KernelGram",
    "kernel_gram",
    "pairwise_sq_dists",
    "squared_ksd",
    "squared_ksd_blocked",
    "kernel_drive",
    "moment_direction",
    "kernel_repulsion",
    "stein_direction",
]


class KernelGram(NamedTuple):
    """The kernel evaluated on all pairs of a particle batch.

    Attributes:
        centered: the particles minus their (valid) mean, ``(N, D)``; distances and the
            discrepancy are translation invariant and centring keeps them accurate.
        sq_dists: ``(N, N)`` squared distances.
        profile: kernel values and radial derivatives on ``sq_dists``.
        valid: boolean ``(N,)``: particles that act on the others.
    """

    centered: Tensor
    sq_dists: Tensor
    profile: KernelProfile
    valid: Tensor


def pairwise_sq_dists(x: Tensor) -> Tensor:
    """Squared Euclidean distances between the rows of ``x`` (``(N, D) -> (N, N)``)."""
    sq_norms = x.pow(2).sum(-1)
    # In place on the one (N, N) buffer: at a few hundred particles, allocating
    # temporaries costs more than the arithmetic.
    sq = (x @ x.transpose(-1, -2)).mul_(-2.0).add_(sq_norms.unsqueeze(-1)).add_(sq_norms.unsqueeze(-2))
    return sq.clamp_min_(0.0).fill_diagonal_(0.0)


def kernel_gram(
    particles: Tensor, kernel: RadialKernel, valid: Tensor | None = None, *, groups: Tensor | None = None
) -> KernelGram:
    """Evaluate ``kernel`` on all pairs of ``particles``.

    Args:
        particles: ``(N, D)``.
        kernel: a radial kernel; its bandwidth is chosen from the valid particles.
        valid: optional boolean ``(N,)``; invalid particles (say, where the log density
            is not finite) get no say in the bandwidth and exert no force, but are
            still moved by the others.  Positions must be finite.
        groups: optional ``(N,)`` labels: particles interact only within their group (the
            kernel times ``1[g_i = g_j]``), as for a class-conditional target, where a
            neighbour's score points towards its own class.  The bandwidth is still chosen
            from all valid particles.

    Returns:
        A `KernelGram`.
    """
    if particles.dim() != 2:
        raise ValueError(f"particles must have shape (N, D), got {tuple(particles.shape)}")
    if valid is None:
        valid = torch.ones(particles.shape[0], dtype=torch.bool, device=particles.device)
    if not torch.isfinite(particles).all():
        raise ValueError("particles must be finite")
    center = particles[valid].mean(0) if valid.any() else particles.mean(0)
    centered = particles - center
    sq_dists = pairwise_sq_dists(centered)
    profile = kernel.profile(sq_dists, kernel.bandwidth(sq_dists, valid))
    if groups is not None:
        if groups.shape != valid.shape:
            raise ValueError(f"groups must have shape ({particles.shape[0]},), got {tuple(groups.shape)}")
        same = (groups.unsqueeze(0) == groups.unsqueeze(1)).to(sq_dists.dtype)
        profile = KernelProfile(profile.value * same, profile.d1 * same, profile.d2 * same, profile.bandwidth)
    return KernelGram(centered, sq_dists, profile, valid)


def _source_weights(gram: KernelGram, leave_one_out: bool) -> Tensor:
    n = gram.valid.shape[0]
    weights = gram.valid.to(gram.sq_dists.dtype).expand(n, n).clone()
    if leave_one_out:
        weights.fill_diagonal_(0.0)
    return weights


class _Sources(NamedTuple):
    """The particles that act on each particle: kernel values and radial derivatives
    weighted by validity (and by leave-one-out), and how many act."""

    k: Tensor
    g1: Tensor
    count: Tensor | int
    valid: Tensor
    leave_one_out: bool
    all_valid: bool

    @classmethod
    def of(cls, gram: KernelGram, leave_one_out: bool) -> _Sources:
        if bool(gram.valid.all()):
            # Every particle is a source: full-matrix products, the self-interaction taken
            # out of the drive afterwards (it adds nothing to the repulsion, x_i - x_i = 0).
            count = max(gram.valid.shape[0] - int(leave_one_out), 1)
            return cls(gram.profile.value, gram.profile.d1, count, gram.valid, leave_one_out, True)
        weights = _source_weights(gram, leave_one_out)
        count = weights.sum(-1, keepdim=True).clamp_min(1.0)
        return cls(gram.profile.value * weights, gram.profile.d1 * weights, count, gram.valid, leave_one_out, False)

    def drive(self, scores: Tensor) -> Tensor:
        """``sum_j k(x_j, x_i) s_j`` over the sources (unnormalised)."""
        if self.all_valid:
            drive = self.k @ scores
            if self.leave_one_out:
                drive = drive - self.k.diagonal().unsqueeze(-1) * scores
            return drive
        return self.k @ torch.where(self.valid.unsqueeze(-1), scores, torch.zeros_like(scores))

    def repulsion(self, x: Tensor) -> Tensor:
        """``sum_j grad_{x_j} k(x_j, x_i) = sum_j 2 g'(r_ij) (x_j - x_i)`` over the sources
        (unnormalised)."""
        return 2.0 * (self.g1 @ x - self.g1.sum(-1, keepdim=True) * x)


def kernel_drive(scores: Tensor, gram: KernelGram, *, leave_one_out: bool = True) -> Tensor:
    """The driving half of the Stein direction, ``1/n sum_j k(x_j, x_i) s_j`` over the valid
    particles ``j`` (without ``j = i`` under ``leave_one_out``).

    ``scores`` may live in another space than the kernel's particles (say pixel-space
    scores with a kernel on features), since only the kernel values enter.

    Returns:
        ``(N, scores.shape[1])``.
    """
    sources = _Sources.of(gram, leave_one_out)
    return sources.drive(scores) / sources.count


def kernel_repulsion(gram: KernelGram, *, leave_one_out: bool = True) -> Tensor:
    """The repulsive half of the Stein direction, ``1/n sum_j grad_{x_j} k(x_j, x_i)``, in
    the kernel's own coordinates (the Stein direction for zero scores).

    Returns:
        ``(N, D)``.
    """
    sources = _Sources.of(gram, leave_one_out)
    return sources.repulsion(gram.centered) / sources.count


def stein_direction(
    scores: Tensor, gram: KernelGram, *, leave_one_out: bool = True, invalid_pull: float = 1.0
) -> Tensor:
    """The Stein variational direction at every particle of ``gram``.

    Invalid particles (``gram.valid`` false: the log density is not finite there) exert
    no force.  They are evidence that the sampler puts mass where the posterior has none,
    so each is pulled towards the kernel-weighted mean of the valid particles (a
    mean-shift step) instead of being moved by their field, which beside a hard wall
    would push it further out.

    Args:
        scores: ``(N, D)``, ``grad log p`` at each particle; rows of invalid particles are
            ignored (they may be NaN).
        gram: the kernel on these particles, from `kernel_gram()`.
        leave_one_out: skip the self-interaction ``j = i`` (see the module docstring).
        invalid_pull: multiplies the mean-shift step of invalid particles.

    Returns:
        ``(N, D)``: the direction in which to move each particle.

    Example:
        >>> import torch
        >>> from pyro_stein.ops.kernels import RBFKernel
        >>> from pyro_stein.ops.stein import kernel_gram, stein_direction
        >>> x = 0.3 * torch.randn(200, 2)      # too narrow for N(0, I) ...
        >>> phi = stein_direction(-x, kernel_gram(x, RBFKernel()))
        >>> bool((phi * x).sum(-1).mean() > 0)  # ... so the particles spread out
        True
    """
    x = gram.centered
    sources = _Sources.of(gram, leave_one_out)
    direction = (sources.drive(scores) + sources.repulsion(x)) / sources.count
    if sources.all_valid:
        return direction
    # Mean shift for the invalid ones; a particle too far for any kernel weight goes
    # towards the plain mean of the valid particles.
    pull_weights = gram.profile.value * gram.valid.to(x.dtype)
    total = pull_weights.sum(-1, keepdim=True)
    far = total <= torch.finfo(x.dtype).tiny
    pull_weights = torch.where(far, gram.valid.to(x.dtype).expand_as(pull_weights), pull_weights)
    target = (pull_weights @ x) / pull_weights.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return torch.where(gram.valid.unsqueeze(-1), direction, invalid_pull * (target - x))


def _stein_kernel_sum(
    x_rows: Tensor, s_rows: Tensor, x: Tensor, s: Tensor, profile: KernelProfile, sq_dists: Tensor
) -> Tensor:
    """``sum_{i in rows, j} u_p(x_i, x_j)``, the Stein kernel of a radial kernel summed over
    a block of rows, through ``(rows x N)`` by ``(N x D)`` products instead of the block of
    the Stein kernel matrix.

    ``u_p = k s_i.s_j + s_i.grad_j k + s_j.grad_i k + tr grad_i grad_j k`` with
    ``grad_i k = 2 g' (x_i - x_j)`` and ``tr grad_i grad_j k = -4 g'' r - 2 D g'``;
    ``profile`` and ``sq_dists`` are the block's ``(rows, N)`` entries.
    """
    k, g1, g2 = profile.value, profile.d1, profile.d2
    own_rows, own = (s_rows * x_rows).sum(-1), (s * x).sum(-1)
    return (
        ((k @ s) * s_rows).sum()
        - 2.0 * (g1.sum(-1) * own_rows).sum()
        + 2.0 * ((g1 @ x) * s_rows).sum()
        + 2.0 * ((g1 @ s) * x_rows).sum()
        - 2.0 * (g1.sum(0) * own).sum()
        - 4.0 * torch.dot(g2.reshape(-1), sq_dists.reshape(-1))
        - 2.0 * x.shape[-1] * g1.sum()
    )


def _stein_kernel_diagonal_sum(s_rows: Tensor, k_diagonal: Tensor, g1_diagonal: Tensor) -> Tensor:
    """``sum_i u_p(x_i, x_i) = sum_i k(0) |s_i|^2 - 2 D g'(0)`` (the other terms vanish)."""
    return (k_diagonal * s_rows.pow(2).sum(-1)).sum() - 2.0 * s_rows.shape[-1] * g1_diagonal.sum()


def squared_ksd(scores: Tensor, gram: KernelGram) -> Tensor:
    """U-statistic estimate of the squared kernelized Stein discrepancy.

    ``KSD^2 = E_{x, x' ~ q}[u_p(x, x')]`` with the Stein kernel
    ``u_p(x, y) = k s_x.s_y + s_x.grad_y k + s_y.grad_x k + tr grad_x grad_y k``.  The
    estimate averages ``u_p`` over pairs of distinct valid particles; it is unbiased, so
    it can be slightly negative when ``q = p``.

    Args:
        scores: ``(N, D)`` scores ``grad log p``.
        gram: the kernel on these particles.

    Returns:
        A 0-dim tensor; ``nan`` when fewer than two particles are valid.
    """
    valid = gram.valid
    x, s, profile, r = gram.centered, scores, gram.profile, gram.sq_dists
    if not bool(valid.all()):
        index = valid.nonzero().squeeze(-1)
        x, s, r = x[index], s[index], r[index][:, index]
        profile = KernelProfile(*(m[index][:, index] for m in profile[:3]), profile.bandwidth)
    n = x.shape[0]
    if n < 2:
        return scores.new_full((), float("nan"))
    total = _stein_kernel_sum(x, s, x, s, profile, r)
    total = total - _stein_kernel_diagonal_sum(s, profile.value.diagonal(), profile.d1.diagonal())
    return total / (n * (n - 1))


def squared_ksd_blocked(
    points: Tensor, scores: Tensor, kernel: RadialKernel, bandwidth: float | Tensor, *, block_size: int = 1024
) -> Tensor:
    """`squared_ksd()` for many points with a fixed bandwidth, in row blocks, so memory
    is ``O(block_size N)``.

    Args:
        points: ``(N, D)``, all valid.
        scores: ``(N, D)``.
        kernel: a radial kernel.
        bandwidth: its bandwidth ``h``.
        block_size: rows per block.

    Returns:
        A 0-dim tensor, the U-statistic over pairs of distinct points.
    """
    n = points.shape[0]
    if n < 2:
        return scores.new_full((), float("nan"))
    x = points - points.mean(0)
    h = torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device)
    sq_norms = x.pow(2).sum(-1)
    total = x.new_zeros(())
    for start in range(0, n, block_size):
        rows = slice(start, min(start + block_size, n))
        r = (sq_norms[rows].unsqueeze(-1) + sq_norms.unsqueeze(0) - 2.0 * x[rows] @ x.T).clamp_min(0.0)
        points_in_block = torch.arange(rows.start, rows.stop, device=x.device)
        diagonal = (points_in_block - rows.start, points_in_block)
        r[diagonal] = 0.0
        profile = kernel.profile(r, h)
        total = (
            total
            + _stein_kernel_sum(x[rows], scores[rows], x, scores, profile, r)
            - _stein_kernel_diagonal_sum(scores[rows], profile.value[diagonal], profile.d1[diagonal])
        )
    return total / (n * (n - 1))


def moment_direction(coordinates: Tensor, scores: Tensor, valid: Tensor, *, leave_one_out: bool = True) -> Tensor:
    """The Stein direction of the coordinate-wise linear kernel ``diag_a(1 + x_a y_a)``.

    ``phi_a(x_i) = 1/n_i sum_j [(1 + x_ia x_ja) s_ja + x_ia]``, over the valid particles
    ``j`` (and ``j != i`` with ``leave_one_out``).  Each coordinate's figure is an average of
    ``N`` terms, so its noise does not grow with the number of coordinates, unlike a radial
    kernel's, whose distances sum over all of them (module docstring).  Rows of invalid
    particles are zero.

    Args:
        coordinates: ``(N, D)`` particles, in the coordinates the kernel is defined in.
        scores: ``(N, D)``, ``grad log p`` there (rows of invalid particles are ignored).
        valid: boolean ``(N,)``.
        leave_one_out: skip ``j = i``.

    Returns:
        ``(N, D)``.

    Example:
        >>> import torch
        >>> from pyro_stein.ops.stein import moment_direction
        >>> x = 0.5 * torch.randn(4000, 3)    # too narrow for N(0, I) ...
        >>> phi = moment_direction(x, -x, torch.ones(4000, dtype=torch.bool))
        >>> bool(((phi * x).sum(0) > 0).all())  # ... so every coordinate spreads out
        True
    """
    weight = valid.to(coordinates.dtype).unsqueeze(-1)
    s = torch.where(weight > 0, scores, torch.zeros_like(scores))
    x = coordinates
    score_sum, moment_sum, count = s.sum(0), (x * s).sum(0), weight.sum(0)
    if leave_one_out:
        score_sum = score_sum - s
        moment_sum = moment_sum - x * s
        count = count - weight
    # Divided once, so that a particle with no partner (count 0) gets no direction.
    return weight * (score_sum + x * (count + moment_sum)) / count.clamp_min(1.0)
