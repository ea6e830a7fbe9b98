"""Moved to [`pyro_stein.contrib.ade.flows`][pyro_stein.contrib.ade.flows]; this module keeps existing imports working."""

from ..contrib.ade.flows import (
    bits_per_dim,
    dequantize,
    feature_space_likelihood,
    invertible_map,
)

__all__ = [
    "bits_per_dim",
    "dequantize",
    "feature_space_likelihood",
    "invertible_map",
]
