"""Moved to [`pyro_stein.engines.ctf`][pyro_stein.engines.ctf]; this module keeps existing imports working."""

from .engines.ctf import *  # noqa: F403
from .engines.ctf import __all__  # noqa: F401
