"""Moved to [`pyro_stein.diagnostics.inference_data`][pyro_stein.diagnostics.inference_data]; this module keeps existing imports working."""

from .diagnostics.inference_data import *  # noqa: F403
from .diagnostics.inference_data import __all__  # noqa: F401
