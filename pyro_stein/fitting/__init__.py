"""Layer 6, one call from a model to a trained sampler: [`fit()`][pyro_stein.fit], its
result [`FitResult`][pyro_stein.FitResult], its own budget (`convergence`), checkpoints
and the averaged tail."""

from .convergence import Convergence
from .fit import CONVERGENCE, DEFAULTS, ENGINES, KSD_DRAWS, LOCAL_PARTICLES, LOCAL_WITH_GLOBAL_STEPS, fit
from .result import FitResult

__all__ = [
    "CONVERGENCE",
    "DEFAULTS",
    "ENGINES",
    "KSD_DRAWS",
    "LOCAL_PARTICLES",
    "LOCAL_WITH_GLOBAL_STEPS",
    "Convergence",
    "FitResult",
    "fit",
]
