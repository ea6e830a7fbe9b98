"""The unconstrained latent layout of a Pyro model: one vector per draw.

Every latent site, mapped to unconstrained space by ``biject_to(site["fn"].support)``,
flattened and concatenated in the order of the model's trace: the layout of Pyro's
`AutoContinuous` guides, so a latent vector of ours and one of theirs mean the same.
`LatentLayout` computes it from a prototype trace (a guide's, or one of its own), so
nothing else in the package reads trace internals to pack or unpack draws.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.autoguide.utils import helpful_support_errors
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

from .initialization import init_to_feasible

__all__ = [
    "PARTICLE_PLATE",
    "LatentLayout",
    "check_model_args",
    "feasible_trace",
    "latent_dtype",
    "max_plate_nesting",
]

#: The name of the outer plate over particles (or draws) that batched evaluations add.
PARTICLE_PLATE = "_pyro_stein_particles"


def check_model_args(args: Iterable[Any], kwargs: dict[str, Any]) -> None:
    """Fail early on model arguments that Pyro models cannot use as data.

    NumPy arrays (and pandas objects, which carry ``__array__``) are the usual mistake:
    torch operations on them fail deep inside the model, or silently cast.

    Raises:
        TypeError: naming the offending argument.

    Example:
        >>> import numpy as np
        >>> check_model_args((np.zeros(3),), {})
        Traceback (most recent call last):
        ...
        TypeError: The model's positional argument 0 is a numpy.ndarray, not a torch.Tensor; ...
    """
    named = [(f"positional argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for where, value in named:
        if not isinstance(value, torch.Tensor) and hasattr(value, "__array__"):
            raise TypeError(
                f"The model's {where} is a {type(value).__module__}.{type(value).__name__}, "
                "not a torch.Tensor; convert it with torch.as_tensor(...) (and choose "
                "its dtype) before passing it to the model."
            )


def latent_dtype(trace: poutine.Trace, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None) -> torch.dtype:
    """The floating-point dtype to work in for a model: the widest among its latent sites'
    values and its floating-point tensor arguments.

    Sites with no parameters to take a dtype from (``ImproperUniform``) get the default
    dtype, so a model whose data is float64 but whose latents are all flat would otherwise
    be run in float32.
    """
    dtypes = [site["value"].dtype for _, site in trace.iter_stochastic_nodes()]
    dtypes += [
        value.dtype
        for value in [*args, *(kwargs or {}).values()]
        if isinstance(value, torch.Tensor) and value.is_floating_point()
    ]
    return functools.reduce(torch.promote_types, dtypes, torch.float16 if dtypes else torch.get_default_dtype())


def max_plate_nesting(trace: poutine.Trace) -> int:
    """Number of batch dimensions a model uses: its plate dims and undeclared batch dims.

    Undeclared batch dimensions (a site with ``batch_shape`` longer than its plates) count
    too, so that an outer plate placed left of this many dimensions never collides with
    the model's own.
    """
    depth = 0
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized:
                depth = max(depth, -frame.dim)
        depth = max(depth, len(site["fn"].batch_shape))
    return depth


def feasible_trace(model: Callable[..., Any], args: tuple, kwargs: dict) -> poutine.Trace:
    """One run of ``model`` at shape-derived feasible latent values (see
    `init_to_feasible()`), hidden from outer handlers and with validation off, so
    that a model that is NaN there still reaches the checks that name its sites."""
    with poutine.block(), pyro.validation_enabled(False):
        return poutine.trace(InitMessenger(init_to_feasible)(model)).get_trace(*args, **kwargs)


class LatentLayout:
    """The unconstrained latent layout of a model (see the module docstring).

    ``LatentLayout(model, *args, **kwargs)`` runs the model once at feasible values to
    find its latent sites; `LatentLayout.from_trace()` takes a prototype trace that
    exists already (an autoguide's).

    Args:
        model: the Pyro model.
        *args: its positional arguments (they fix the latent sites' shapes).
        **kwargs: its keyword arguments.

    Attributes:
        model: the model the layout was traced from (``None`` when not known).
        trace: the prototype trace, subsample sites pruned.
        latent_dim: ``D``, the length of one latent vector.
        dtype: the dtype to work in (see `latent_dtype()`).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("scale", dist.HalfNormal(1.0))
        ...     pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> layout = LatentLayout(model)
        >>> layout.latent_dim, layout.site_shapes
        (3, {'scale': torch.Size([]), 'w': torch.Size([2])})
        >>> z = layout.pack({"scale": torch.tensor([1.0]), "w": torch.tensor([[0.5, -0.5]])})
        >>> z
        tensor([[ 0.0000,  0.5000, -0.5000]])
        >>> layout.unpack(z)["scale"]
        tensor([1.])
    """

    def __init__(self, model: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._init_from(prune_subsample_sites(feasible_trace(model, args, kwargs)), args, kwargs)
        self.model = model

    @classmethod
    def from_trace(
        cls, trace: poutine.Trace, args: tuple = (), kwargs: dict | None = None, *, model: Callable | None = None
    ) -> LatentLayout:
        """The layout of a prototype trace (e.g. an autoguide's ``prototype_trace``);
        ``args`` and ``kwargs`` (the model's arguments) take part in choosing the dtype
        (see `latent_dtype()`), and ``model`` names the model the trace came from."""
        layout = cls.__new__(cls)
        layout._init_from(prune_subsample_sites(trace), args, kwargs or {})
        layout.model = model
        return layout

    def _init_from(self, trace: poutine.Trace, args: tuple, kwargs: dict) -> None:
        self.trace = trace
        self.args, self.kwargs = tuple(args), dict(kwargs)
        #: the `NoncentredModel` the trace came from, whose original sites `unpack` restores
        self.noncentred: Any = None
        self.sites: list[dict] = [site for _, site in trace.iter_stochastic_nodes()]
        if not self.sites:
            raise ValueError("the model has no latent sites: there is no posterior to lay out")
        self._unconstrained_shapes = {}
        for site in self.sites:
            for frame in site["cond_indep_stack"]:
                if not frame.vectorized:
                    raise NotImplementedError(
                        f"latent site {site['name']!r} lies in the sequential plate {frame.name!r}; "
                        "only vectorized plates (pyro.plate used as a context manager) are supported"
                    )
            with helpful_support_errors(site):
                self._unconstrained_shapes[site["name"]] = biject_to(site["fn"].support).inv(site["value"]).shape
        self.latent_dim = sum(math.prod(shape) for shape in self._unconstrained_shapes.values())
        self.dtype = latent_dtype(trace, args, kwargs)
        self.max_plate_nesting = max_plate_nesting(trace)

    # ------------------------------------------------------------------ facts
    @property
    def site_shapes(self) -> dict[str, torch.Size]:
        """Each latent site's shape in one (unbatched) run of the model."""
        return {site["name"]: site["value"].shape for site in self.sites}

    @property
    def device(self) -> torch.device:
        return self.sites[0]["value"].device if self.sites else torch.device("cpu")

    def init_loc(self) -> Tensor:
        """The prototype trace's values as one unconstrained vector ``(D,)``."""
        return torch.cat(
            [biject_to(site["fn"].support).inv(site["value"].detach()).reshape(-1) for site in self.sites]
        )

    # ------------------------------------------------------------------ unpacking
    def unpack_unconstrained(self, latent: Tensor) -> Iterator[tuple[dict, Tensor]]:
        """``(site, unconstrained value)`` for each latent site of ``latent`` ``(..., D)``.

        The batch dims of ``latent`` are aligned to the right of each site's own batch
        dims, as Pyro's ``AutoContinuous`` does: pad them to the plates' depth to place a
        particle dim left of every plate.
        """
        if latent.shape[-1] != self.latent_dim:
            raise ValueError(f"latent vectors must have length {self.latent_dim}, got shape {tuple(latent.shape)}")
        batch_shape = latent.shape[:-1]
        position = 0
        for site in self.sites:
            shape = self._unconstrained_shapes[site["name"]]
            size = math.prod(shape)
            event_dim = site["fn"].event_dim + len(shape) - len(site["value"].shape)
            shape = torch.broadcast_shapes(shape, batch_shape + (1,) * event_dim)
            yield site, latent[..., position : position + size].reshape(shape)
            position += size

    def constrain(self, latent: Tensor) -> tuple[dict[str, Tensor], list[tuple[str, Tensor]]]:
        """A latent batch ``(..., D)`` (padded as in `unpack_unconstrained()`) unpacked into
        constrained site values and each site's log-Jacobian term, summed over its event
        dimensions: ``({site: value}, [(site, log |det J|)])``."""
        values: dict[str, Tensor] = {}
        log_jacobians: list[tuple[str, Tensor]] = []
        for site, unconstrained in self.unpack_unconstrained(latent):
            transform = biject_to(site["fn"].support)
            value = transform(unconstrained)
            log_jac = transform.log_abs_det_jacobian(unconstrained, value)
            log_jac = sum_rightmost(log_jac, log_jac.dim() - value.dim() + site["fn"].event_dim)
            values[site["name"]] = value
            log_jacobians.append((site["name"], log_jac))
        return values, log_jacobians

    def unpack(self, latent: Tensor, *, restore: bool = True) -> dict[str, Tensor]:
        """Unconstrained ``(n, D)`` -> constrained ``{site: (n, *site_shape)}`` (the site
        shape as the model uses it, no plate padding); the inverse of `pack()`.

        For a `NoncentredModel` (`noncentred`) the original sites follow the latent ones (``x`` after
        ``x_decentered``), computed at the draws with the layout's model arguments, unless
        ``restore=False``.
        """
        num = latent.shape[0]
        padded = latent.reshape((num,) + (1,) * self.max_plate_nesting + (self.latent_dim,))
        unpacked = {
            site["name"]: biject_to(site["fn"].support)(value).reshape((num,) + site["value"].shape)
            for site, value in self.unpack_unconstrained(padded)
        }
        if restore and self.noncentred is not None:
            event_dims = {site["name"]: site["fn"].event_dim for site in self.sites}
            unpacked.update(
                self.noncentred.restore_draws(unpacked, event_dims, self.max_plate_nesting, self.args, self.kwargs)
            )
        return unpacked

    def pack(self, values: dict[str, Tensor]) -> Tensor:
        """Constrained draws ``{site: (n, *site_shape)}`` -> unconstrained ``(n, D)``.

        Extra keys (observed or deterministic sites) are ignored; singleton plate dims, as
        ``Predictive`` leaves them, are accepted.

        Raises:
            KeyError: a latent site of the model has no draws.
            ValueError: a site's draws have the wrong size, lie outside the site's support,
                or the sites disagree on ``n``.
        """
        blocks, num = [], None
        for site in self.sites:
            name = site["name"]
            if name not in values:
                raise KeyError(f"no draws for latent site {name!r}; the model's latent sites are {list(self.site_shapes)}")
            value = torch.as_tensor(values[name])
            shape = site["value"].shape
            count = value.numel() // max(shape.numel(), 1)
            if value.numel() != count * shape.numel() or (num is not None and count != num):
                raise ValueError(
                    f"draws of site {name!r} have shape {tuple(value.shape)}; expected "
                    f"(num_draws, *{tuple(shape)}) with the same num_draws for every site"
                )
            num = count
            constrained = value.reshape((count,) + shape).to(self.dtype)
            inside = site["fn"].support.check(constrained)
            if not bool(inside.all()):
                # biject_to's inverses clamp to the support, which would hide such draws.
                raise ValueError(
                    f"{int((~inside).sum())} draws of site {name!r} lie outside its support {site['fn'].support}"
                )
            unconstrained = biject_to(site["fn"].support).inv(constrained)
            blocks.append(unconstrained.reshape(count, -1))
        if not blocks:
            raise ValueError("the model has no latent sites")
        return torch.cat(blocks, -1)
