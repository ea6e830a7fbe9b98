"""Judging draws: against reference draws (`compare_draws()`) and against the model
itself (`ksd()`, the kernelized Stein discrepancy, which needs no reference)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .kernels import IMQKernel
from .model_density import LatentLayout, UnconstrainedLogDensity
from .stein import squared_ksd_blocked

__all__ = ["DrawComparison", "compare_draws", "ksd", "ksd_of_latents"]

#: posteriordb-style acceptance thresholds (see `DrawComparison.passes()`).
MAX_MEAN_ERROR = 0.1
SD_RATIO_RANGE = (0.9, 1.1)
MAX_CORRELATION_ERROR = 0.05
STRONG_CORRELATION = 0.5


@dataclass
class DrawComparison:
    """Per-parameter agreement of draws with reference draws.

    Attributes:
        names: parameter names.
        mean_error: ``|mean - ref mean| / ref sd`` per parameter.
        sd_ratio: ``sd / ref sd`` per parameter.
        correlation_error: ``{(name_i, name_j): |corr - ref corr|}`` for the pairs whose
            reference correlation exceeds ``STRONG_CORRELATION`` in absolute value.
    """

    names: list[str]
    mean_error: np.ndarray
    sd_ratio: np.ndarray
    correlation_error: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def worst_mean_error(self) -> float:
        return float(self.mean_error.max())

    @property
    def sd_ratio_range(self) -> tuple[float, float]:
        return float(self.sd_ratio.min()), float(self.sd_ratio.max())

    @property
    def worst_correlation_error(self) -> float:
        return max(self.correlation_error.values(), default=0.0)

    def passes(
        self,
        max_mean_error: float = MAX_MEAN_ERROR,
        sd_ratio_range: tuple[float, float] = SD_RATIO_RANGE,
        max_correlation_error: float = MAX_CORRELATION_ERROR,
    ) -> bool:
        """Every standardized mean error ``<= 0.1``, every sd ratio in ``[0.9, 1.1]`` and
        every strong correlation (``|ref corr| > 0.5``) within ``0.05``."""
        low, high = self.sd_ratio_range
        return bool(
            self.worst_mean_error <= max_mean_error
            and sd_ratio_range[0] <= low
            and high <= sd_ratio_range[1]
            and self.worst_correlation_error <= max_correlation_error
        )


def compare_draws(
    draws: np.ndarray, reference: np.ndarray, names: Sequence[str] | None = None
) -> DrawComparison:
    """Compare draws with reference draws, parameter by parameter.

    Args:
        draws: ``(n, P)``.
        reference: ``(m, P)``, the same parameters in the same order.
        names: the ``P`` parameter names (default ``"0", "1", ...``).

    Returns:
        A `DrawComparison`; ``.passes()`` applies posteriordb-style thresholds.

    Example:
        >>> import numpy as np
        >>> from pyro_stein.diagnostics import compare_draws
        >>> rng = np.random.default_rng(0)
        >>> compare_draws(rng.normal(size=(4000, 2)), rng.normal(size=(10000, 2))).passes()
        True
    """
    draws, reference = np.asarray(draws, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if draws.ndim != 2 or reference.ndim != 2 or draws.shape[1] != reference.shape[1]:
        raise ValueError(
            f"draws and reference must be (n, P) and (m, P) arrays, got {draws.shape} and {reference.shape}"
        )
    if len(draws) < 2 or not np.isfinite(draws).all():
        raise ValueError("draws must hold at least two rows, all finite")
    num = draws.shape[1]
    names = [str(i) for i in range(num)] if names is None else list(names)
    if len(names) != num:
        raise ValueError(f"got {len(names)} names for {num} parameters")
    ref_sd = reference.std(0, ddof=1)
    mean_error = np.abs(draws.mean(0) - reference.mean(0)) / ref_sd
    sd_ratio = draws.std(0, ddof=1) / ref_sd
    correlation_error = {}
    if num > 1:
        ref_corr, corr = np.corrcoef(reference.T), np.corrcoef(draws.T)
        for i in range(num):
            for j in range(i + 1, num):
                if abs(ref_corr[i, j]) > STRONG_CORRELATION:
                    correlation_error[(names[i], names[j])] = float(abs(corr[i, j] - ref_corr[i, j]))
    return DrawComparison(names, mean_error, sd_ratio, correlation_error)


def ksd(
    model: Callable[..., Any],
    samples: dict[str, Tensor],
    *args: Any,
    max_draws: int = 4000,
    block_size: int = 1024,
    **kwargs: Any,
) -> float:
    """Kernelized Stein discrepancy between draws and the posterior of ``model``.

    Needs no reference: only the score of the model's log joint at the draws.  Draws from
    the posterior give a value near zero (the estimate is unbiased for the squared
    discrepancy, so it fluctuates around zero by ``O(1/n)``); draws that are shifted, too
    narrow, too wide or miss a mode give clearly larger values.  Use it to compare samplers
    on the same model, or to see whether a run has converged.

    It is computed in the model's unconstrained space (where the engines work), in
    coordinates whitened by the draws' own mean and covariance (so the figure does not
    depend on the units of the parameters), with the inverse multiquadric kernel
    ``k(x, y) = (1 + ||x - y||^2)^(-1/2)``, whose discrepancy detects non-convergence
    (Gorham & Mackey, 2017); the U-statistic over pairs of distinct draws.

    Args:
        model: the Pyro model.
        samples: constrained draws of every latent site, ``{site: (n, *site_shape)}``, as
            ``FitResult.sample``, ``MCMC.get_samples()`` or ``Predictive`` return them
            (other sites are ignored).
        *args: the model's positional arguments.
        **kwargs: the model's keyword arguments.
        max_draws: at most this many draws are used, evenly spaced (the cost is
            ``O(n^2 D)``).
        block_size: rows of the Stein kernel matrix held in memory at a time.

    Returns:
        The discrepancy, ``sqrt(max(KSD^2 estimate, 0))``; ``inf`` (with a warning) when
        the log density or its gradient is not finite at some draw, i.e. draws lie where
        the posterior has no mass.

    Raises:
        KeyError: a latent site has no draws.
        ValueError: draws of a site lie outside its support or have the wrong shape.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> import pyro_stein
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> good = pyro_stein.ksd(model, {"x": torch.randn(2000)})
        >>> shifted = pyro_stein.ksd(model, {"x": torch.randn(2000) + 1.0})
        >>> good < 0.05 < shifted
        True

    References:
        J. Gorham and L. Mackey. "Measuring Sample Quality with Kernels." ICML 2017.
        Q. Liu, J. Lee and M. Jordan. "A Kernelized Stein Discrepancy for Goodness-of-fit
        Tests." ICML 2016.

    Subsampled models are judged on one fixed minibatch, whose score is a noisy estimate
    of the full-data score; the figure is then biased upwards.
    """
    layout = LatentLayout(model, *args, **kwargs)
    latents = layout.pack(samples)
    density = UnconstrainedLogDensity(model, layout, frozen_subsample=True)
    return ksd_of_latents(density, latents, args, kwargs, max_draws=max_draws, block_size=block_size)


def ksd_of_latents(
    density: UnconstrainedLogDensity,
    latents: Tensor,
    args: tuple,
    kwargs: dict,
    *,
    max_draws: int = 4000,
    block_size: int = 1024,
) -> float:
    """`ksd()` for unconstrained latent draws ``(n, D)`` of ``density``'s layout."""
    if not isinstance(max_draws, int) or max_draws < 2:
        raise ValueError(f"max_draws must be an integer >= 2, got {max_draws!r}")
    num = latents.shape[0]
    if num < 2:
        raise ValueError(f"ksd needs at least two draws, got {num}")
    if num > max_draws:
        latents = latents[torch.linspace(0, num - 1, max_draws).round().long()]
    scores, valid = [], []
    for chunk in latents.split(block_size):
        _, score, ok = density.log_prob_and_score(chunk, args, kwargs)
        scores.append(score)
        valid.append(ok)
    score, ok = torch.cat(scores), torch.cat(valid)
    if not bool(ok.all()):
        warnings.warn(
            f"the log density or its gradient is not finite at {int((~ok).sum())} of {len(ok)} "
            "draws (they lie where the posterior has no mass); ksd is infinite",
            RuntimeWarning,
            stacklevel=3,
        )
        return math.inf
    centered = latents - latents.mean(0)
    cov = centered.T @ centered / (len(latents) - 1)
    cov = cov + 1e-10 * torch.diagonal(cov).mean() * torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    scale_tril, info = torch.linalg.cholesky_ex(cov)
    if info != 0:
        raise ValueError("the draws' covariance is singular (are some coordinates constant?)")
    whitened = torch.linalg.solve_triangular(scale_tril, centered.T, upper=False).T
    squared = squared_ksd_blocked(
        whitened, score @ scale_tril, IMQKernel(c=1.0, beta=-0.5, bandwidth=1.0), 1.0, block_size=block_size
    )
    return math.sqrt(max(float(squared), 0.0))
