"""Moved to [`pyro_stein.glue.density`][pyro_stein.glue.density],
[`pyro_stein.glue.layout`][pyro_stein.glue.layout] and
[`pyro_stein.glue.batching`][pyro_stein.glue.batching]; this module keeps existing imports working."""

from torch import Tensor

from .glue.batching import BATCHING
from .glue.density import GuideModelMismatch, UnconstrainedLogDensity, layout_of
from .glue.layout import PARTICLE_PLATE, LatentLayout, check_model_args, latent_dtype, max_plate_nesting


def constrained_batch(guide, latent: Tensor) -> dict[str, Tensor]:
    """``layout_of(guide).unpack(latent)``: unconstrained ``(n, D)`` -> ``{site: (n, *shape)}``."""
    return layout_of(guide).unpack(latent)


__all__ = [
    "BATCHING",
    "PARTICLE_PLATE",
    "GuideModelMismatch",
    "LatentLayout",
    "UnconstrainedLogDensity",
    "check_model_args",
    "constrained_batch",
    "latent_dtype",
    "layout_of",
    "max_plate_nesting",
]
