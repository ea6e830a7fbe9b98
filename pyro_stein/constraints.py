"""Moved to [`pyro_stein.glue.constraints`][pyro_stein.glue.constraints]; this module keeps existing imports working."""

from .glue.constraints import *  # noqa: F403
from .glue.constraints import __all__  # noqa: F401
