"""Moved to [`pyro_stein.ops.langevin`][pyro_stein.ops.langevin]; this module keeps existing imports working."""

from .ops import langevin as _moved
from .ops.langevin import *  # noqa: F403
from .ops.langevin import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
