"""Moved to [`pyro_stein.ops.matching`][pyro_stein.ops.matching]; this module keeps existing imports working."""

from .ops.matching import *  # noqa: F403
from .ops.matching import __all__  # noqa: F401
