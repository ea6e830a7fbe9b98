"""Moved to [`pyro_stein.contrib.ade.experiment`][pyro_stein.contrib.ade.experiment]; this module keeps existing imports working."""

from ..contrib.ade.experiment import (
    BOUND_SAMPLES,
    run_experiment,
)

__all__ = [
    "BOUND_SAMPLES",
    "run_experiment",
]
