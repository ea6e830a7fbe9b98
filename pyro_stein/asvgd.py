"""Moved to [`pyro_stein.engines.asvgd`][pyro_stein.engines.asvgd]; this module keeps existing imports working."""

from .engines.asvgd import *  # noqa: F403
from .engines.asvgd import __all__  # noqa: F401
