"""Moved to [`pyro_stein.contrib.imaging.energies`][pyro_stein.contrib.imaging.energies]; this module keeps existing imports working."""

from ..contrib.imaging.energies import (
    MAX_EXACT_HIDDEN,
    AutoencoderEnergy,
    ClassConditionalEnergy,
    GaussianBernoulliRBM,
)

__all__ = [
    "MAX_EXACT_HIDDEN",
    "AutoencoderEnergy",
    "ClassConditionalEnergy",
    "GaussianBernoulliRBM",
]
