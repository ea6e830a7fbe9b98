"""Adaptive Density Estimation (Lucas et al., 2019), the hybrid likelihood/adversarial case
study: a VAE whose Gaussian decoder lives in the feature space of an invertible map.

Command line: ``python -m pyro_stein.contrib.ade --dataset digits --variant
av-ade|v-ade|av-gde|vae|gan --epochs N --out DIR``. Modules: ``flows`` (the invertible map from
Pyro's coupling transforms, the image-space likelihood as a ``TransformedDistribution``,
dequantization, bits per dimension), ``model`` (the five variants from one code path, Pyro's
``Trace_ELBO`` for the coverage term) and ``experiment`` (one run with its files; the data,
metrics, training loop and report files are the imaging toolkit's,
`pyro_stein.contrib.imaging`).
"""

from .flows import bits_per_dim, dequantize, feature_space_likelihood, invertible_map
from .model import ADE, VARIANTS

__all__ = ["ADE", "VARIANTS", "bits_per_dim", "dequantize", "feature_space_likelihood", "invertible_map"]
