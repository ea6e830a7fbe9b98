"""Layer 3, guides: [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler], the implicit
autoguide, and the protocols that say what a sampler guide offers to the engines above.
A new guide goes here: a [`LatentVectorGuide`][pyro_stein.glue.autoguide.LatentVectorGuide]
subclass that satisfies [`ParticleSampler`][pyro_stein.guides.protocols.ParticleSampler].
"""

from .neural_sampler import AutoNeuralSampler, ImplicitLatent
from .protocols import LatentSampler, ParticleSampler, PreconditionedSampler

__all__ = ["AutoNeuralSampler", "ImplicitLatent", "LatentSampler", "ParticleSampler", "PreconditionedSampler"]
