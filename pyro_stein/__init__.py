"""pyro_stein: amortized Stein variational inference for Pyro models.

Quick start::

    import pyro_stein
    result = pyro_stein.fit(model, x, y)          # Amortized SVGD with defaults
    result = pyro_stein.fit(model, x, y, engine="ctf")  # Langevin-flow distillation
    draws = result.sample(4000)                   # {site: (4000, *site_shape)}
    idata = pyro_stein.to_inference_data(result)  # ArviZ: az.summary(idata), az.loo(idata)

The package is layered (``docs/architecture.md``): ``ops`` (pure tensor math) <- ``glue``
(the only code that touches Pyro internals) <- ``guides`` <- ``engines`` <-
``diagnostics`` <- ``fitting`` <- ``contrib`` (case studies); each imports only from the
layers before it.
"""

from ._version import __version__
from .diagnostics import (
    UnreliableFitWarning,
    check_reliability,
    compare_draws,
    from_mcmc,
    ksd,
    to_inference_data,
)
from .engines import AmortizedSVGD, CTFDistillation
from .fitting import FitResult, fit
from .glue import constraints as _constraints  # noqa: F401  (registers biject_to rules)
from .glue.initialization import init_to_feasible, init_to_median, init_to_uniform, init_to_value
from .guides import AutoAmortizedSampler, AutoNeuralSampler
from .ops.kernels import IMQKernel, RBFKernel

__all__ = [
    "AmortizedSVGD",
    "AutoAmortizedSampler",
    "AutoNeuralSampler",
    "CTFDistillation",
    "FitResult",
    "IMQKernel",
    "RBFKernel",
    "UnreliableFitWarning",
    "__version__",
    "check_reliability",
    "compare_draws",
    "fit",
    "from_mcmc",
    "init_to_feasible",
    "init_to_median",
    "init_to_uniform",
    "init_to_value",
    "ksd",
    "to_inference_data",
]
