"""Moved to [`pyro_stein.engines.asvgd`][pyro_stein.engines.asvgd]; this module keeps existing imports working."""

from .engines import asvgd as _moved
from .engines.asvgd import *  # noqa: F403
from .engines.asvgd import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
