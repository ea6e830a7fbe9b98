"""Radial kernels for Stein variational methods.

Every kernel here is *radial*: ``k(x, y) = g(r)`` with ``r = ||x - y||^2``.  That is all
the Stein direction and the kernelized Stein discrepancy need: the Stein direction needs
``g`` and ``g'`` and the discrepancy also ``g''``, each evaluated on the ``N x N`` matrix of
squared distances.  Nothing of size ``N x N x D`` is ever formed (Pyro's ``RBFSteinKernel``
keeps such a tensor), so memory is ``O(N^2 + N D)``.

The module is pure tensor math: no Pyro in it.

References:
    Q. Liu and D. Wang. "Stein Variational Gradient Descent: A General Purpose Bayesian
    Inference Algorithm." NeurIPS 2016 (the RBF kernel with the median heuristic).

    J. Gorham and L. Mackey. "Measuring Sample Quality with Kernels." ICML 2017
    (the inverse multiquadric kernel, which detects non-convergence).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "IMQKernel",
    "KernelProfile",
    "RBFKernel",
    "RadialKernel",
    "median_sq_dist",
]


#: The median heuristic looks at the pairs among at most this many particles.
MEDIAN_MAX_PARTICLES = 256


class KernelProfile(NamedTuple):
    """Kernel values and radial derivatives on a matrix of squared distances ``r``.

    Attributes:
        value: ``k = g(r)``.
        d1: ``dg/dr``.
        d2: ``d^2 g / dr^2``.
        bandwidth: the bandwidth ``h`` that was used (a 0-dim tensor).
    """

    value: Tensor
    d1: Tensor
    d2: Tensor
    bandwidth: Tensor


def median_sq_dist(sq_dists: Tensor, mask: Tensor | None = None, max_particles: int | None = None) -> Tensor:
    """Median of the off-diagonal entries of a symmetric matrix of squared distances.

    Args:
        sq_dists: ``(N, N)`` symmetric matrix of squared distances.
        mask: optional boolean ``(N,)``; only pairs of particles where both are ``True``
            count.  Pairs are taken once (upper triangle).
        max_particles: if more particles count, only the pairs among the first
            ``max_particles`` of them do (for i.i.d. particles, a random subset): the
            median of ``N^2 / 2`` values costs more than the rest of a Stein step at a
            few hundred particles, and a subset's median is as good a bandwidth.

    Returns:
        A 0-dim tensor.  Zero when fewer than two particles count.
    """
    if max_particles is not None and max_particles < 2:
        raise ValueError(f"max_particles must be at least 2 (a pair), got {max_particles!r}")
    if max_particles is not None and int(sq_dists.shape[-1] if mask is None else mask.sum()) > max_particles:
        index = torch.arange(sq_dists.shape[-1], device=sq_dists.device)
        if mask is not None:
            index = index[mask]
        index = index[:max_particles]
        return median_sq_dist(sq_dists[index][:, index])
    n = sq_dists.shape[-1]
    rows, cols = _upper_triangle(n, sq_dists.device)
    pair_values = sq_dists[rows, cols]
    if mask is not None:
        pair_values = pair_values[mask[rows] & mask[cols]]
    if pair_values.numel() == 0:
        return sq_dists.new_zeros(())
    return pair_values.median()


@lru_cache(maxsize=16)
def _upper_triangle(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    rows, cols = torch.triu_indices(n, n, offset=1, device=device)
    return rows, cols


class RadialKernel(ABC):
    """Base class of kernels ``k(x, y) = g(||x - y||^2 / h)`` with a bandwidth ``h``.

    Args:
        bandwidth: a fixed bandwidth ``h > 0``; ``None`` (default) chooses it from the
            particles on every call with the median heuristic of the subclass.
        bandwidth_factor: multiplies the heuristic bandwidth (ignored when ``bandwidth``
            is fixed).  Values above one make the repulsion act over longer distances.
    """

    def __init__(self, bandwidth: float | None = None, bandwidth_factor: float = 1.0) -> None:
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError(f"bandwidth must be positive or None, got {bandwidth!r}")
        if not bandwidth_factor > 0:
            raise ValueError(f"bandwidth_factor must be positive, got {bandwidth_factor!r}")
        self.fixed_bandwidth = bandwidth
        self.bandwidth_factor = float(bandwidth_factor)

    def bandwidth(self, sq_dists: Tensor, mask: Tensor | None = None) -> Tensor:
        """The bandwidth ``h`` for a set of particles, given their squared distances.

        Args:
            sq_dists: ``(N, N)`` squared pairwise distances.
            mask: optional boolean ``(N,)`` selecting the particles that count.

        Returns:
            A positive 0-dim tensor.
        """
        if self.fixed_bandwidth is not None:
            return sq_dists.new_tensor(self.fixed_bandwidth)
        num = int(mask.sum()) if mask is not None else sq_dists.shape[-1]
        median = median_sq_dist(sq_dists, mask, max_particles=MEDIAN_MAX_PARTICLES)
        return self.bandwidth_from_median(median, num)

    def bandwidth_from_median(self, median: Tensor, num_particles: int) -> Tensor:
        """The bandwidth for ``num_particles`` particles whose median squared pairwise
        distance is ``median`` (any shape: one per group of particles), the fixed one if set.

        Returns:
            Positive, of ``median``'s shape.
        """
        if self.fixed_bandwidth is not None:
            return torch.full_like(median, self.fixed_bandwidth)
        h = self.bandwidth_factor * self._heuristic(median, num_particles)
        # Coincident particles give a zero median; any positive bandwidth is then as
        # good as another, and a tiny one keeps the repulsion finite.
        return h.clamp_min(torch.finfo(median.dtype).tiny ** 0.5)

    @abstractmethod
    def _heuristic(self, median: Tensor, num_particles: int) -> Tensor:
        """Bandwidth from the median squared distance."""

    @abstractmethod
    def profile(self, sq_dists: Tensor, bandwidth: Tensor) -> KernelProfile:
        """Kernel values and derivatives with respect to the squared distance.

        Args:
            sq_dists: squared distances, any shape.
            bandwidth: positive, broadcastable against ``sq_dists``: a 0-dim tensor, or
                one per group of particles (``(G, 1, 1)`` for ``(G, K, K)`` distances).
        """

    def __repr__(self) -> str:
        bw = self.fixed_bandwidth if self.fixed_bandwidth is not None else "median"
        return f"{type(self).__name__}(bandwidth={bw}, bandwidth_factor={self.bandwidth_factor})"


class RBFKernel(RadialKernel):
    """Gaussian (RBF) kernel ``k(x, y) = exp(-||x - y||^2 / h)``.

    By default ``h = bandwidth_factor * med^2 / log N`` with ``med`` the median pairwise
    distance of the ``N`` particles (Liu & Wang, 2016): then ``sum_j k(x_i, x_j)`` is about
    one, which balances the driving and repulsive forces.

    Example:
        >>> import torch
        >>> from pyro_stein.ops.kernels import RBFKernel
        >>> kernel = RBFKernel()
        >>> x = torch.randn(50, 3)
        >>> r = torch.cdist(x, x).pow(2)
        >>> prof = kernel.profile(r, kernel.bandwidth(r))
        >>> prof.value.shape
        torch.Size([50, 50])
    """

    def _heuristic(self, median: Tensor, num_particles: int) -> Tensor:
        return median / math.log(max(num_particles, 2))

    def profile(self, sq_dists: Tensor, bandwidth: Tensor) -> KernelProfile:
        inverse = 1.0 / torch.as_tensor(bandwidth, dtype=sq_dists.dtype, device=sq_dists.device)
        value = (sq_dists * -inverse).exp_()
        return KernelProfile(value, value * -inverse, value * inverse.square(), bandwidth)


class IMQKernel(RadialKernel):
    """Inverse multiquadric kernel ``k(x, y) = (c^2 + ||x - y||^2 / h)^beta``, ``-1 < beta < 0``.

    Its heavy tails make the kernelized Stein discrepancy detect non-convergence
    (Gorham & Mackey, 2017), and its repulsion reaches far-away particles.  By default
    ``h = bandwidth_factor * med^2`` so that typical values of ``||x - y||^2 / h`` are
    about one.

    Args:
        c: offset, positive.
        beta: exponent in ``(-1, 0)``; ``-1/2`` is the usual choice.
        bandwidth: fixed bandwidth, or ``None`` for the median heuristic.
        bandwidth_factor: multiplies the heuristic bandwidth.

    Example:
        >>> from pyro_stein.ops.kernels import IMQKernel
        >>> IMQKernel(beta=-0.5)
        IMQKernel(c=1.0, beta=-0.5, bandwidth=median, bandwidth_factor=1.0)
    """

    def __init__(
        self,
        c: float = 1.0,
        beta: float = -0.5,
        bandwidth: float | None = None,
        bandwidth_factor: float = 1.0,
    ) -> None:
        super().__init__(bandwidth=bandwidth, bandwidth_factor=bandwidth_factor)
        if not c > 0:
            raise ValueError(f"c must be positive, got {c!r}")
        if not -1.0 < beta < 0.0:
            raise ValueError(f"beta must lie in (-1, 0), got {beta!r}")
        self.c = float(c)
        self.beta = float(beta)

    def _heuristic(self, median: Tensor, num_particles: int) -> Tensor:
        return median

    def profile(self, sq_dists: Tensor, bandwidth: Tensor) -> KernelProfile:
        base = self.c**2 + sq_dists / bandwidth
        value = base.pow(self.beta)
        d1 = (self.beta / bandwidth) * base.pow(self.beta - 1.0)
        d2 = (self.beta * (self.beta - 1.0) / bandwidth**2) * base.pow(self.beta - 2.0)
        return KernelProfile(value, d1, d2, bandwidth)

    def __repr__(self) -> str:
        bw = self.fixed_bandwidth if self.fixed_bandwidth is not None else "median"
        return (
            f"IMQKernel(c={self.c}, beta={self.beta}, bandwidth={bw}, "
            f"bandwidth_factor={self.bandwidth_factor})"
        )
