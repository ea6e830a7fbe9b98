"""Adaptive Density Estimation (Lucas et al., 2019), the hybrid likelihood/adversarial case
study: a VAE whose Gaussian decoder lives in the feature space of an invertible map.

Being built (issue 7); so far the invertible map from Pyro's coupling transforms, the
image-space likelihood as a ``TransformedDistribution``, dequantization and bits per
dimension (``flows``), and the model with its five variants from one code path (``model``).
"""

from .flows import bits_per_dim, dequantize, feature_space_likelihood, invertible_map
from .model import ADE, VARIANTS

__all__ = ["ADE", "VARIANTS", "bits_per_dim", "dequantize", "feature_space_likelihood", "invertible_map"]
