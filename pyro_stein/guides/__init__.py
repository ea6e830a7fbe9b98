"""Layer 3, guides: [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler], the implicit
autoguide, [`AutoAmortizedSampler`][pyro_stein.AutoAmortizedSampler], its counterpart for
local latents (an encoder per data plate), and the protocols that say what a sampler guide offers to the engines above.
A new guide goes here: a [`LatentVectorGuide`][pyro_stein.glue.autoguide.LatentVectorGuide]
subclass that satisfies [`ParticleSampler`][pyro_stein.guides.protocols.ParticleSampler].
"""

from .amortized_sampler import AutoAmortizedSampler, PlateEncoder
from .neural_sampler import AutoNeuralSampler, ImplicitLatent
from .protocols import LatentSampler, LocalParticleSampler, ParticleSampler, PreconditionedSampler

__all__ = [
    "AutoAmortizedSampler",
    "AutoNeuralSampler",
    "ImplicitLatent",
    "LatentSampler",
    "LocalParticleSampler",
    "ParticleSampler",
    "PlateEncoder",
    "PreconditionedSampler",
]
