"""Checks of a model's first trace that plain ``SVI`` makes too, and the per-particle sum
of a log-density term: shared by the batched densities of global and local latents."""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from pyro.util import check_site_shape
from torch import Tensor

__all__ = ["observations_in_support", "observed_sites_are_tensors", "site_shapes_agree_with_plates", "sum_per_particle"]


def observed_sites_are_tensors(trace: poutine.Trace) -> None:
    """Refuse an observed site whose ``obs`` is not a tensor, naming it."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and site["is_observed"] and not site_is_subsample(site):
            if not isinstance(site["value"], torch.Tensor):
                raise TypeError(
                    f"Observed site {name!r} got obs of type {type(site['value']).__name__}; "
                    "Pyro needs a torch.Tensor there (torch.as_tensor(...))."
                )


def observations_in_support(trace: poutine.Trace) -> None:
    """Pyro's support check of observed values, done once on the first trace (the batched
    evaluations run with validation off, so that particles may stray where the density is
    not finite): what plain ``SVI`` rejects, this rejects too, naming the site."""
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or site_is_subsample(site):
            continue
        value = site["value"]
        if not isinstance(value, torch.Tensor) or value.numel() == 0:  # pyro.factor's sites carry no data
            continue
        fn = site["fn"]
        inside = fn.support.check(value)
        if site["mask"] is not None and isinstance(site["mask"], torch.Tensor):
            inside = inside | ~site["mask"].bool()  # masked observations are no data
        if not bool(inside.all()):
            outside = value[~inside] if inside.shape == value.shape[: inside.dim()] else value.reshape(-1)
            raise ValueError(
                f"Observed site {name!r}: {int((~inside).sum())} observations lie outside the support "
                f"{fn.support} of its {type(fn).__name__} distribution (for example {outside.reshape(-1)[:3].tolist()}); "
                "Pyro's validation rejects them too. Fix the data or the distribution (or disable Pyro's "
                "validation with pyro.enable_validation(False) to accept them at your own risk)."
            )


def site_shapes_agree_with_plates(trace: poutine.Trace) -> None:
    """Pyro's shape check, as ``SVI`` does it on its first step: each site's log density
    must have exactly the batch dimensions its plates declare.  Data of shape ``(50, 1)``
    inside ``plate(50)``, say, broadcasts to a 50 x 50 likelihood, which counts every
    observation 50 times."""
    trace = poutine.util.prune_subsample_sites(trace)
    with pyro.validation_enabled(False):  # the support was checked already
        trace.compute_log_prob()
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        try:
            check_site_shape(site, max_plate_nesting=float("inf"))
        except ValueError as error:
            value = site["value"]
            fn = site["fn"]
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else "?"
            raise ValueError(
                f"{'Observed' if site['is_observed'] else 'Latent'} site {name!r}: its log density has shape "
                f"{tuple(site['log_prob'].shape)}, but its plates declare "
                f"{[f.size for f in sorted(site['cond_indep_stack'], key=lambda f: f.dim) if f.vectorized]} "
                f"(value shape {shape}, distribution batch shape {tuple(fn.batch_shape)}, event shape "
                f"{tuple(fn.event_shape)}); Pyro's validation, as in plain SVI, rejects it. Pyro says: {error}"
            ) from None


def sum_per_particle(value: Tensor | float, num_particles: int, batch_rank: int, like: Tensor) -> Tensor:
    """Sum a log-density term over every batch dim but the particle dim.

    ``value`` has the particle dim at ``-batch_rank`` when it reaches that far; a term
    without it is shared by all particles.
    """
    if not isinstance(value, torch.Tensor):
        return like.new_full((num_particles,), float(value))
    if value.dim() > batch_rank:
        raise ValueError(f"log-density term of shape {tuple(value.shape)} has more than {batch_rank} batch dims")
    if value.dim() < batch_rank:
        return value.sum().expand(num_particles)
    per_particle = value.reshape(value.shape[0], -1).sum(-1)
    return per_particle.expand(num_particles)
