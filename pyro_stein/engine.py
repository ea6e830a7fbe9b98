"""Moved to [`pyro_stein.engines.base`][pyro_stein.engines.base]; this module keeps existing imports working."""

from .engines.base import *  # noqa: F403
from .engines.base import __all__  # noqa: F401
