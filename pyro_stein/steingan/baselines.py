"""Moved to [`pyro_stein.contrib.imaging.baselines`][pyro_stein.contrib.imaging.baselines]; this module keeps existing imports working."""

from ..contrib.imaging.baselines import (
    GAN,
)

__all__ = [
    "GAN",
]
