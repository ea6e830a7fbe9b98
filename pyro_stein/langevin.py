"""Moved to [`pyro_stein.ops.langevin`][pyro_stein.ops.langevin]; this module keeps existing imports working."""

from .ops.langevin import *  # noqa: F403
from .ops.langevin import __all__  # noqa: F401
