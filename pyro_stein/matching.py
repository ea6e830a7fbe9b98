"""Moved to [`pyro_stein.ops.matching`][pyro_stein.ops.matching]; this module keeps existing imports working."""

from .ops import matching as _moved
from .ops.matching import *  # noqa: F403
from .ops.matching import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
