"""Moved to [`pyro_stein.diagnostics.inference_data`][pyro_stein.diagnostics.inference_data]; this module keeps existing imports working."""

from .diagnostics import inference_data as _moved
from .diagnostics.inference_data import *  # noqa: F403
from .diagnostics.inference_data import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # every name of the moved module, not only __all__
