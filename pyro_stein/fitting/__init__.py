"""Layer 6, one call from a model to a trained sampler: [`fit()`][pyro_stein.fit], its
result [`FitResult`][pyro_stein.FitResult], checkpoints and the averaged tail."""

from .fit import DEFAULTS, ENGINES, KSD_DRAWS, fit
from .result import FitResult

__all__ = ["DEFAULTS", "ENGINES", "KSD_DRAWS", "FitResult", "fit"]
