"""Moved to [`pyro_stein.glue.constraints`][pyro_stein.glue.constraints]; this module keeps existing imports working."""

from .glue import constraints as _moved
from .glue.constraints import *  # noqa: F403
from .glue.constraints import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
