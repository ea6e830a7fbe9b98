"""Moved to [`pyro_stein.engines.ctf`][pyro_stein.engines.ctf]; this module keeps existing imports working."""

from .engines import ctf as _moved
from .engines.ctf import *  # noqa: F403
from .engines.ctf import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
