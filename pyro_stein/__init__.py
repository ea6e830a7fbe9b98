"""pyro_stein: amortized Stein variational inference for Pyro models.

Quick start::

    import pyro_stein
    result = pyro_stein.fit(model, x, y)          # Amortized SVGD with defaults
    result = pyro_stein.fit(model, x, y, engine="ctf")  # Langevin-flow distillation
    draws = result.sample(4000)                   # {site: (4000, *site_shape)}
    idata = pyro_stein.to_inference_data(result)  # ArviZ: az.summary(idata), az.loo(idata)
"""

from . import constraints as _constraints  # noqa: F401  (registers biject_to rules)
from .asvgd import AmortizedSVGD
from .ctf import CTFDistillation
from .diagnostics import compare_draws, ksd
from .guides import AutoNeuralSampler
from .initialization import init_to_feasible, init_to_median, init_to_uniform, init_to_value
from .kernels import IMQKernel, RBFKernel
from .fitting import FitResult, fit
from .inference_data import from_mcmc, to_inference_data

__all__ = [
    "AmortizedSVGD",
    "AutoNeuralSampler",
    "CTFDistillation",
    "FitResult",
    "IMQKernel",
    "RBFKernel",
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

__version__ = "0.1.0"
