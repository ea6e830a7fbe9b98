"""Layer 2, the Pyro glue: the only code that touches Pyro's internals (trace fields,
autoguide hooks, handler details).  Everything above it sees latent layouts, batched log
densities and guides through the names here.

* `layout`: [`LatentLayout`][pyro_stein.glue.layout.LatentLayout], the unconstrained latent vector of a model;
* `density`: [`UnconstrainedLogDensity`][pyro_stein.glue.density.UnconstrainedLogDensity], its batched log joint;
* `batching`: the one probe of how a model runs for a batch of draws;
* `autoguide`: [`LatentVectorGuide`][pyro_stein.glue.autoguide.LatentVectorGuide], our guides' base on Pyro's autoguide machinery;
* `model_outputs`: a model run at many draws (deterministics, log-likelihoods, predictive);
* `fingerprint`: what a run on a model depends on (its structure, its data), for checkpoints;
* `params`: the model's ``pyro.param`` values in Pyro's parameter store;
* `optim`: a ``pyro.optim`` optimizer's learning rate, set from outside its schedule;
* `initialization`: per-site starting values; `constraints`: ``biject_to`` registrations.

The constraint registrations take effect when this layer is imported.
"""

from . import constraints as _constraints  # noqa: F401  (registers biject_to rules)
