"""Moved: SteinGAN's trainer to [`pyro_stein.contrib.steingan.training`][pyro_stein.contrib.steingan.training],
the generator to [`pyro_stein.contrib.imaging.generator`][pyro_stein.contrib.imaging.generator] and the
epoch loop to [`pyro_stein.contrib.imaging.training`][pyro_stein.contrib.imaging.training]; this module
keeps existing imports working."""

from ..contrib.imaging.generator import Generator
from ..contrib.imaging.training import learning_rate_factor, train
from ..contrib.steingan.training import BalanceRule, SteinGAN, feature_stein_direction

__all__ = ["BalanceRule", "Generator", "SteinGAN", "feature_stein_direction", "learning_rate_factor", "train"]
