"""Moved to [`pyro_stein.contrib.ade`][pyro_stein.contrib.ade]; this package keeps existing imports and
``python -m pyro_stein.ade`` working. Its submodules ``flows``, ``model`` and ``experiment``
re-export from the new places."""

from ..contrib.ade import ADE, VARIANTS, bits_per_dim, dequantize, feature_space_likelihood, invertible_map

__all__ = ["ADE", "VARIANTS", "bits_per_dim", "dequantize", "feature_space_likelihood", "invertible_map"]
