"""Layer 4, engines: Pyro losses that train a sampler guide on particle batches.

* `base`: [`ParticleEngine`][pyro_stein.engines.base.ParticleEngine], its per-run state
  [`ParticleRun`][pyro_stein.engines.base.ParticleRun], and the protocols `pyro_stein.fit`
  asks of an engine ([`Engine`][pyro_stein.engines.base.Engine], [`Run`][pyro_stein.engines.base.Run]);
* `asvgd`: [`AmortizedSVGD`][pyro_stein.AmortizedSVGD];
* `ctf`: [`CTFDistillation`][pyro_stein.CTFDistillation].

A new engine goes here: a `ParticleEngine` subclass that implements ``particle_loss``.
"""

from .asvgd import DEFAULT_BANDWIDTH_FACTOR, AmortizedSVGD
from .base import Engine, ParticleEngine, ParticleRun, Run
from .ctf import CTFDistillation, CTFRun

__all__ = [
    "DEFAULT_BANDWIDTH_FACTOR",
    "AmortizedSVGD",
    "CTFDistillation",
    "CTFRun",
    "Engine",
    "ParticleEngine",
    "ParticleRun",
    "Run",
]
