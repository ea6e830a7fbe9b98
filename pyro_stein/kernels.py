"""Moved to [`pyro_stein.ops.kernels`][pyro_stein.ops.kernels]; this module keeps existing imports working."""

from .ops.kernels import *  # noqa: F403
from .ops.kernels import __all__  # noqa: F401
