"""Moved to [`pyro_stein.engines.base`][pyro_stein.engines.base]; this module keeps existing imports working."""

from .engines import base as _moved
from .engines.base import *  # noqa: F403
from .engines.base import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
