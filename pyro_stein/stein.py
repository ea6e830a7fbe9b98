"""Moved to [`pyro_stein.ops.stein`][pyro_stein.ops.stein]; this module keeps existing imports working."""

from .ops.stein import *  # noqa: F403
from .ops.stein import __all__  # noqa: F401
