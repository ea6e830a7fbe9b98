"""Layer 5, judging draws: against the model (`ksd()`, `check_reliability()`), against reference draws
(`compare_draws()`), each datapoint's marginal likelihood for local latents
(`importance_log_likelihood()`), and the ArviZ adapter (`to_inference_data()`, `from_mcmc()`).

It works on any draws, any guide and on a protocol of a fit
([`Fit`][pyro_stein.diagnostics.inference_data.Fit]), so it never imports `pyro_stein.fitting`.
"""

from .comparison import (  # noqa: F401  (the thresholds, for pyro_stein.diagnostics.MAX_MEAN_ERROR & co.)
    MAX_CORRELATION_ERROR,
    MAX_MEAN_ERROR,
    SD_RATIO_RANGE,
    STRONG_CORRELATION,
    DrawComparison,
    compare_draws,
)
from .inference_data import Fit, from_mcmc, to_inference_data
from .ksd import ksd, ksd_of_latents
from .marginal_likelihood import ImportanceEstimate, importance_log_likelihood
from .reliability import Check, Reliability, UnreliableFitWarning, check_reliability, reliability_of_latents

__all__ = [
    "Check",
    "DrawComparison",
    "Fit",
    "ImportanceEstimate",
    "Reliability",
    "UnreliableFitWarning",
    "check_reliability",
    "compare_draws",
    "from_mcmc",
    "importance_log_likelihood",
    "ksd",
    "ksd_of_latents",
    "reliability_of_latents",
    "to_inference_data",
]
