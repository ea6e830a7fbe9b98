"""Moved to [`pyro_stein.contrib.steingan`][pyro_stein.contrib.steingan] (the study) and
[`pyro_stein.contrib.imaging`][pyro_stein.contrib.imaging] (its data, energies, generator, baseline,
metrics, epoch loop and report files); this package keeps existing imports and
``python -m pyro_stein.steingan`` working. Its submodules ``data``, ``energies``, ``training``,
``baselines``, ``metrics`` and ``experiment`` re-export from the new places."""

from ..contrib.steingan import *  # noqa: F403
from ..contrib.steingan import __all__  # noqa: F401
