"""Judging draws against reference draws (posteriordb-style): `compare_draws()`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "MAX_CORRELATION_ERROR",
    "MAX_MEAN_ERROR",
    "SD_RATIO_RANGE",
    "STRONG_CORRELATION",
    "DrawComparison",
    "compare_draws",
]

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
