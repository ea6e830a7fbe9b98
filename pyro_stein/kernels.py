"""Moved to [`pyro_stein.ops.kernels`][pyro_stein.ops.kernels]; this module keeps existing imports working."""

from .ops import kernels as _moved
from .ops.kernels import *  # noqa: F403
from .ops.kernels import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
