"""Non-centred versions of a model's hierarchical sites, with the original sites kept.

A location-scale latent ``x ~ Normal(loc(v), scale(v))`` whose location or scale depends
on another latent ``v`` makes a funnel: its conditional scale changes by orders of
magnitude along ``v``, which no fixed-bandwidth sampler or kernel can follow.  Pyro's
``poutine.reparam`` with ``LocScaleReparam(centered=0.0)`` samples ``x_decentered ~
Normal(0, 1)`` instead and computes ``x = loc(v) + scale(v) x_decentered``, a posterior with
the same information and none of the funnel (Papaspiliopoulos, Roberts & Skold 2007).

`NoncentredModel` is that reparameterised model, and it can also give back the original
sites' values from draws of its own latents (`NoncentredModel.restore_draws`), so that a guide
trained on it emits the sites the user's model has: ``Predictive(model, guide)`` and
``result.sample`` then see ``x``, not only ``x_decentered``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.inspect import get_dependencies
from pyro.infer.reparam import LocScaleReparam
from torch import Tensor
from torch.distributions import constraints

from .batching import choose_batching
from .initialization import init_to_feasible
from .layout import PARTICLE_PLATE, feasible_trace

__all__ = ["NoncentredModel", "centred_hierarchical_sites"]


def _is_location_scale(fn: Any) -> bool:
    """Whether ``LocScaleReparam`` applies: a location-scale family on the real line."""
    while isinstance(getattr(fn, "base_dist", None), dist.Distribution) and not isinstance(
        fn, dist.TransformedDistribution
    ):
        fn = fn.base_dist
    if not {"loc", "scale"}.issubset(getattr(fn, "arg_constraints", {})):
        return False
    support = fn.support
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return support == constraints.real


def centred_hierarchical_sites(model: Callable[..., Any], args: tuple = (), kwargs: dict | None = None) -> tuple[str, ...]:
    """The latent sites of ``model`` that are location-scale families whose prior depends on
    another latent site (``theta ~ Normal(mu, tau)``): the sites that non-centring turns
    from a funnel into independent noise.  Sites with fixed location and scale are left
    alone, since non-centring them changes nothing but units.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     v = pyro.sample("v", dist.Normal(0.0, 3.0))
        ...     pyro.sample("x", dist.Normal(torch.zeros(4), torch.exp(v / 2)).to_event(1))
        >>> centred_hierarchical_sites(model)
        ('x',)
    """
    kwargs = kwargs or {}
    trace = feasible_trace(model, args, kwargs)
    latents = {name for name, site in trace.iter_stochastic_nodes()}
    # At feasible values, as the trace above: get_dependencies would otherwise draw from the
    # prior, which an ImproperUniform site cannot.
    with poutine.block(), pyro.validation_enabled(False):
        dependencies = get_dependencies(InitMessenger(init_to_feasible)(model), args, kwargs)["prior_dependencies"]
    return tuple(
        name
        for name, site in trace.iter_stochastic_nodes()
        if _is_location_scale(site["fn"]) and any(up in latents and up != name for up in dependencies.get(name, ()))
    )


class NoncentredModel:
    """``model`` with ``sites`` non-centred (``LocScaleReparam(centered=0.0)``).

    Calling it runs the reparameterised model: its latent sites are ``f"{site}_decentered"``
    in place of each of ``sites``, and each original site becomes a deterministic function of
    them.  `restore` computes those functions at given draws.

    Args:
        model: the user's model.
        sites: the sites to non-centre (see `centred_hierarchical_sites()`).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     v = pyro.sample("v", dist.Normal(0.0, 3.0))
        ...     pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2)))
        >>> noncentred = NoncentredModel(model, ["x"])
        >>> noncentred.restore({"v": torch.tensor(2.0), "x_decentered": torch.tensor(0.5)})["x"]  # exp(2 / 2) 0.5
        tensor(1.3591)
    """

    def __init__(self, model: Callable[..., Any], sites: Sequence[str]) -> None:
        self.model = model
        self.sites = tuple(sites)
        if not self.sites:
            raise ValueError("NoncentredModel needs at least one site to non-centre")
        # How restore_draws batches the model, found on its first call.
        self._batching: str | None = None
        self._reparameterised = poutine.reparam(model, config={name: LocScaleReparam(centered=0.0) for name in self.sites})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._reparameterised(*args, **kwargs)

    def __repr__(self) -> str:
        name = getattr(self.model, "__name__", type(self.model).__name__)
        return f"NoncentredModel({name}, sites={list(self.sites)})"

    def restore(self, values: dict[str, Tensor], args: tuple = (), kwargs: dict | None = None) -> dict[str, Tensor]:
        """The original sites' values in one run of the model at ``values`` of its latents
        (unbatched, or batched as the caller's plates batch them)."""
        conditioned = poutine.condition(self._reparameterised, data=values)
        with poutine.block(), pyro.validation_enabled(False):
            trace = poutine.trace(conditioned).get_trace(*args, **(kwargs or {}))
        return {name: trace.nodes[name]["value"] for name in self.sites}

    def restore_draws(
        self,
        draws: dict[str, Tensor],
        event_dims: dict[str, int],
        max_plate_nesting: int,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> dict[str, Tensor]:
        """The original sites at ``n`` draws of the latents, batched the way the model allows
        (an outer plate, ``torch.func.vmap`` or one run per draw: the first that agrees with
        one run per draw on a probe, found once by `choose_batching()`).

        Args:
            draws: ``{latent site: (n, *site_shape)}``.
            event_dims: each latent site's event dim.
            max_plate_nesting: the model's plate depth.
            args: the model's positional arguments.
            kwargs: the model's keyword arguments.

        Returns:
            ``{site: (n, *site_shape)}`` for each non-centred site.
        """
        kwargs = kwargs or {}
        shapes = {name: value.shape[1:] for name, value in draws.items()}

        def plated(batch: dict[str, Tensor]) -> dict[str, Tensor]:
            num = next(iter(batch.values())).shape[0]
            padded = {
                name: value.reshape(
                    (num,) + (1,) * (max_plate_nesting - (len(shapes[name]) - event_dims[name])) + shapes[name]
                )
                for name, value in batch.items()
            }
            with poutine.block(), pyro.plate(PARTICLE_PLATE, num, dim=-(max_plate_nesting + 1)):
                restored = self.restore(padded, args, kwargs)
            return {name: _per_draw(value, num, shapes[f"{name}_decentered"]) for name, value in restored.items()}

        def vmapped(batch: dict[str, Tensor]) -> dict[str, Tensor]:
            return torch.func.vmap(lambda one: self.restore(one, args, kwargs), randomness="same")(batch)

        def looped(batch: dict[str, Tensor]) -> dict[str, Tensor]:
            num = next(iter(batch.values())).shape[0]
            runs = [self.restore({name: value[i] for name, value in batch.items()}, args, kwargs) for i in range(num)]
            return {name: torch.stack([run[name] for run in runs]) for name in self.sites}

        ways = {"plate": plated, "vmap": vmapped, "loop": looped}
        if self._batching is None:
            probe = {name: value[:3] for name, value in draws.items()}
            self._batching = choose_batching(
                lambda way: ways[way](probe), what="the original sites of a batch of draws", unit="draw"
            )
        return ways[self._batching](draws)


def _per_draw(value: Tensor, num: int, shape: torch.Size) -> Tensor:
    """A value batched by a particle plate as ``(num, *site_shape)``."""
    return value.expand((num,) + (1,) * (value.dim() - 1 - len(shape)) + shape).reshape((num,) + shape)
