"""Moved to [`pyro_stein.glue.density`][pyro_stein.glue.density],
[`pyro_stein.glue.layout`][pyro_stein.glue.layout] and
[`pyro_stein.glue.batching`][pyro_stein.glue.batching]; this module keeps existing imports working."""

from .glue.batching import BATCHING
from .glue.density import GuideModelMismatch, UnconstrainedLogDensity, layout_of
from .glue.layout import PARTICLE_PLATE, LatentLayout, check_model_args, latent_dtype, max_plate_nesting

__all__ = [
    "BATCHING",
    "PARTICLE_PLATE",
    "GuideModelMismatch",
    "LatentLayout",
    "UnconstrainedLogDensity",
    "check_model_args",
    "latent_dtype",
    "layout_of",
    "max_plate_nesting",
]
