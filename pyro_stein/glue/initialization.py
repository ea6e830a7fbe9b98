"""Per-site starting values for guides (``init_loc_fn``).

They follow `pyro.infer.autoguide.initialization`, but never sample from a distribution
that cannot be sampled (``ImproperUniform``): they build values from the site's shape and
support instead.  The Laplace fit that refines a start is pure tensor math:
[`pyro_stein.ops.laplace`][pyro_stein.ops.laplace].
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from pyro.infer.autoguide import initialization as pyro_init
from torch import Tensor
from torch.distributions import transform_to

__all__ = [
    "init_to_feasible",
    "init_to_median",
    "init_to_uniform",
    "init_to_value",
]

BatchedLogDensity = Callable[[Tensor], Tensor]


def _from_unconstrained(site: dict, fill: Callable[[torch.Size], Tensor]) -> Tensor:
    fn = site["fn"]
    transform = transform_to(fn.support)
    shape = fn.batch_shape + fn.event_shape
    unconstrained = fill(transform.inverse_shape(shape))
    value = transform(unconstrained).detach()
    value._pyro_custom_init = False
    return value


def _prototype_options(site: dict) -> dict:
    # Follow the dtype and device of the distribution's parameters.
    # Wrappers (Independent, expanded, masked) hold their parameters in ``base_dist``.
    fn = site["fn"]
    while fn is not None:
        for attr in ("loc", "probs", "rate", "concentration", "low", "scale", "covariance_matrix"):
            value = getattr(fn, attr, None)
            if isinstance(value, Tensor):
                return {"dtype": value.dtype, "device": value.device}
        fn = getattr(fn, "base_dist", None)
    return {"dtype": torch.get_default_dtype()}


def init_to_feasible(site: dict | None = None):
    """Initialise to the image of zero under ``transform_to(support)``; shape-based, so it
    works for ``ImproperUniform`` too."""
    if site is None:
        return init_to_feasible
    options = _prototype_options(site)
    return _from_unconstrained(site, lambda shape: torch.zeros(shape, **options))


def init_to_uniform(site: dict | None = None, radius: float = 2.0):
    """Initialise to a uniform draw on ``(-radius, radius)`` in unconstrained space, as Stan
    does; shape-based, so it works for ``ImproperUniform`` too."""
    if site is None:
        return lambda s: init_to_uniform(s, radius=radius)
    options = _prototype_options(site)
    return _from_unconstrained(site, lambda shape: (2 * torch.rand(shape, **options) - 1) * radius)


def init_to_median(site: dict | None = None, num_samples: int = 15):
    """Initialise to the median of ``num_samples`` prior draws (Pyro's default for
    autoguides); fall back to `init_to_feasible()` where the prior cannot be sampled
    or is multivariate."""
    if site is None:
        return functools.partial(init_to_median, num_samples=num_samples)
    try:
        return pyro_init.init_to_median(site, num_samples=num_samples, fallback=init_to_feasible)
    except NotImplementedError:
        return init_to_feasible(site)


def init_to_value(site: dict | None = None, values: dict | None = None, *, fallback: Callable = init_to_median):
    """Initialise sites named in ``values`` to those values, the others with ``fallback``.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro_stein import AutoNeuralSampler
        >>> def model():
        ...     pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     pyro.sample("sigma", dist.HalfNormal(1.0))
        >>> start = init_to_value(values={"mu": torch.tensor(1.0)})
        >>> guide = AutoNeuralSampler(model, init_loc_fn=start, init_scale=0.1)
        >>> guide.setup()
        >>> guide.layout.init_loc()[0]  # mu's start; sigma's is its prior's median
        tensor(1.)
    """
    if site is None:
        return functools.partial(init_to_value, values=values or {}, fallback=fallback)
    values = values or {}
    if site["name"] in values:
        return values[site["name"]]
    return fallback(site)
