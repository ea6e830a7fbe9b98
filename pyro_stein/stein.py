"""Moved to [`pyro_stein.ops.stein`][pyro_stein.ops.stein]; this module keeps existing imports working."""

from .ops import stein as _moved
from .ops.stein import *  # noqa: F403
from .ops.stein import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
