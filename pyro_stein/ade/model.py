"""Moved to [`pyro_stein.contrib.ade.model`][pyro_stein.contrib.ade.model]; this module keeps existing imports working."""

from ..contrib.ade.model import (
    ADE,
    VARIANTS,
    ADETrainer,
    Variant,
)

__all__ = [
    "ADE",
    "VARIANTS",
    "ADETrainer",
    "Variant",
]
