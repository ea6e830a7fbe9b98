"""The package's guides on Pyro's autoguide machinery: the one place that overrides its
hooks and reads its private state.

[`LatentVectorGuide`][pyro_stein.glue.autoguide.LatentVectorGuide] is an `AutoContinuous`
(so ``Predictive``, ``poutine`` handlers and ``SVI`` treat it as they treat Pyro's own
autoguides) that sets itself up once, with the checks our engines need, exposes its
[`LatentLayout`][pyro_stein.glue.layout.LatentLayout] and lets a subclass read its
parameters through ``pyro.param`` (`parameters_in_pyro()`).  A subclass implements
`setup_sampler()` and ``get_posterior()``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide import AutoContinuous, AutoGuide
from torch import Tensor
from torch.distributions import biject_to

from .layout import PARTICLE_PLATE, LatentLayout
from .local import DataPlate, LocalStructure, Rows
from .noncentring import NoncentredModel

__all__ = [
    "LatentVectorGuide",
    "LocalLatentGuide",
    "autoguide_latent_batch",
    "guide_param_prefix",
    "is_set_up",
    "latent_site_name",
    "set_up",
]

# How many guides of each class this process has made: each gets its own parameter names.
_instances: defaultdict[str, itertools.count] = defaultdict(itertools.count)


class LatentVectorGuide(AutoContinuous):
    """An `AutoContinuous` guide that draws one unconstrained latent vector per draw.

    On its first call (or `setup()`) the model is traced at ``init_loc_fn``'s values with
    Pyro's validation off (so that a model that is NaN there reaches the checks that name
    its sites), discrete latent sites and latents inside subsampled plates are refused
    with a message naming the site, `layout` is built, and `setup_sampler()` runs.
    """

    layout: LatentLayout

    def __init__(self, model: Callable, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        # Pyro wraps self.model in its init handler; the NoncentredModel itself restores sites.
        self._noncentred = model if isinstance(model, NoncentredModel) else None
        # Pyro names an autoguide's parameters after its class, so two guides of one class
        # share names in the parameter store: a second guide on another model would then read
        # (or train) the first one's tensors. Each guide gets its own prefix instead: the first
        # of a class keeps the class name (as Pyro's own guides), later ones get "_2", "_3", ...
        name = type(self).__name__
        number = next(_instances[name])
        self._pyro_name = name if number == 0 else f"{name}_{number + 1}"

    def setup(self, *args: Any, **kwargs: Any) -> None:
        """Set the guide up for the model arguments (once; hidden from outer handlers)."""
        if self.prototype_trace is None:
            with poutine.block():
                self._setup_prototype(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """One draw of every latent site, as `AutoContinuous` makes it; for a guide of a
        `NoncentredModel`, also each original site (a ``Delta`` at its value, in its plates),
        so that ``Predictive(model, guide)`` on the user's model sees the sites it has."""
        values = super().forward(*args, **kwargs)
        if self._noncentred is not None:
            plates = self.plates  # made by this call's AutoContinuous.forward; a second call would repeat their sites
            for name, value in self._noncentred.restore(values, args, kwargs).items():
                site = self.prototype_trace.nodes[f"{name}_decentered"]  # same event shape as the original
                with contextlib.ExitStack() as stack:
                    for frame in self._cond_indep_stacks[f"{name}_decentered"]:
                        stack.enter_context(plates[frame.name])
                    values[name] = pyro.sample(name, dist.Delta(value, event_dim=site["fn"].event_dim))
        return values

    @property
    def density_model(self) -> Callable:
        """The model whose log density the guide's set-up evaluates: ``self.model`` (Pyro's
        init-wrapped model), except for a `NoncentredModel`, whose own sites ``poutine.reparam``
        would set from an enclosing init handler (its deterministic sites would then read
        their initial values), so that one is used without the wrapper."""
        return self.model if self._noncentred is None else self._noncentred

    @property
    def is_set_up(self) -> bool:
        return self.prototype_trace is not None

    def setup_sampler(self, args: tuple, kwargs: dict) -> None:
        """Build the sampler once the layout is known (subclasses)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def parameters_in_pyro(self) -> Iterator[None]:
        """Within this context the guide's parameters are read through ``pyro.param``,
        as in its ``forward``, so that ``SVI`` (and any ``poutine.trace(param_only=True)``)
        sees and trains them."""
        with self._pyro_context:
            yield

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        try:
            with pyro.validation_enabled(False):
                super()._setup_prototype(*args, **kwargs)
        except (NotImplementedError, ValueError) as error:
            self._raise_for_discrete_sites(error)
            raise
        self._refuse_subsampled_local_latents()
        self.layout = LatentLayout.from_trace(self.prototype_trace, args, kwargs, model=self.model)
        self.layout.noncentred = self._noncentred
        self.setup_sampler(args, kwargs)

    def _raise_for_discrete_sites(self, error: Exception) -> None:
        if self.prototype_trace is None:
            return
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if site["fn"].support.is_discrete:
                raise ValueError(
                    f"Latent site {name!r} is discrete ({type(site['fn']).__name__}). "
                    f"{type(self).__name__} and the particle engines handle continuous latents only, and "
                    "enumeration of discrete latents is not supported yet: marginalize the "
                    "site out in the model by hand (e.g. a mixture distribution)."
                ) from error

    def _refuse_subsampled_local_latents(self) -> None:
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            for frame in site["cond_indep_stack"]:
                if frame.full_size is not None and frame.full_size != frame.size:
                    raise NotImplementedError(
                        f"Latent site {name!r} lies inside the subsampled plate "
                        f"{frame.name!r} (size {frame.full_size}, subsample_size {frame.size}). "
                        "Subsampled data plates are supported for global latents, but "
                        "per-datapoint latents inside a subsampled plate are not supported "
                        "yet: drop subsample_size from that plate."
                    )


class _NoiseOnly(dist.TorchDistribution):
    """Standard normal noise that an implicit sampler transforms: it draws but has no
    density a loss could use (the sampler's draws have none)."""

    arg_constraints: dict = {}
    support = dist.constraints.real_vector
    has_rsample = True

    def __init__(self, size: int, like: Tensor, batch_shape: torch.Size = torch.Size(), guide: str = "") -> None:
        self._like = like
        self._guide = guide
        super().__init__(torch.Size(batch_shape), torch.Size([size]), validate_args=False)

    def expand(self, batch_shape, _instance=None) -> _NoiseOnly:
        return _NoiseOnly(self.event_shape[0], self._like, torch.Size(batch_shape), self._guide)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.randn(shape, dtype=self._like.dtype, device=self._like.device)

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{self._guide} is an implicit sampler: it draws samples but has no density, so density-based losses "
            "such as Trace_ELBO cannot train it. Use loss=pyro_stein.AmortizedSVGD()."
        )


class LocalLatentGuide(AutoGuide):
    """An autoguide for models whose latents are local: one per datapoint of a data plate
    (a plate with observed and latent sites, [`pyro_stein.glue.local`][pyro_stein.glue.local]).

    On its first call (or `setup()`) it finds the data plates (`structure`) and runs
    `setup_sampler()`.  Each call then runs the model once, hidden, for the rows of its
    minibatch and their observations, and draws every local site inside its plate, over
    those rows, from `encode()`: so ``Predictive(model, guide=guide)`` on data the guide never
    saw draws each new datapoint's latents from its own observations.  A subclass
    implements `setup_sampler()` and `encode()`.

    Args:
        model: the Pyro model.
        local_plates: the plates whose latent sites are local; default every plate that
            holds a latent site and an observed site.
        encoded_plates: plates whose encoder the user gives the subclass, so that they
            need no observed site.
    """

    def __init__(
        self, model: Callable, *, local_plates: tuple[str, ...] | None = None, encoded_plates: tuple[str, ...] = ()
    ) -> None:
        super().__init__(model)
        #: The model's data plates and local sites (`LocalStructure`), once set up.
        self.structure: LocalStructure | None = None
        self.local_plates = None if local_plates is None else tuple(local_plates)
        self.encoded_plates = tuple(encoded_plates)
        name = type(self).__name__
        number = next(_instances[name])
        self._pyro_name = name if number == 0 else f"{name}_{number + 1}"

    @property
    def is_set_up(self) -> bool:
        return self.prototype_trace is not None

    def setup(self, *args: Any, **kwargs: Any) -> None:
        """Set the guide up for the model arguments (once; hidden from outer handlers)."""
        if self.prototype_trace is None:
            with poutine.block():
                self._setup_prototype(*args, **kwargs)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        with pyro.validation_enabled(False):
            super()._setup_prototype(*args, **kwargs)
        self.structure = LocalStructure.from_model(
            self.model, args, kwargs, local_plates=self.local_plates, encoded_without_observations=self.encoded_plates
        )
        if not self.structure.plates:
            raise ValueError(
                f"{type(self).__name__} found no local latent site: no plate holds both a latent and an observed "
                "site. For a model with global latents only, use pyro_stein.AutoNeuralSampler."
            )
        self.setup_sampler(args, kwargs)

    def setup_sampler(self, args: tuple, kwargs: dict) -> None:
        """Build the samplers once the `structure` is known (subclasses)."""
        raise NotImplementedError

    def global_model(self) -> Callable:
        """The model with its local sites fixed at their prototype values: what a sampler of
        the global latents alone is set up on (its layout is theirs, and its log density,
        evaluated at fixed local values, is deterministic)."""
        local = {site.name for plate in self.structure.plates.values() for site in plate.sites}
        values = {name: site["value"].detach() for name, site in self.prototype_trace.nodes.items() if name in local}
        return poutine.condition(self.model, data=values)

    def _check_prototype(self, part_trace: poutine.Trace) -> None:
        """Pyro's check, as for `AutoGuideList`, of a part guide (the global latents'
        sampler) whose master this guide is: its sites are the model's, of the same shapes."""
        for name, part_site in part_trace.iter_stochastic_nodes():
            site = self.prototype_trace.nodes.get(name)
            if site is None or part_site["value"].shape != site["value"].shape:
                raise ValueError(f"the global latents' sampler has a site {name!r} that the model does not have, or of another shape")

    def _global_plates(self) -> dict[str, Any]:
        """The plates of the global latents, for a part guide that draws them (Pyro's
        autoguides read their master's ``plates``)."""
        local = {site.name for plate in self.structure.plates.values() for site in plate.sites}
        frames = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if name not in local:
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        frames[frame.name] = frame
        return {
            name: pyro.plate(name, frame.full_size or frame.size, dim=frame.dim, subsample_size=frame.size)
            for name, frame in frames.items()
        }

    def draw_globals(self, args: tuple, kwargs: dict) -> Tensor | None:
        """One draw of the global latents as sample sites of the current trace (with their
        plates), and the same draw as an unconstrained vector ``(1, D)``; ``None`` without
        global latents (subclasses that have them)."""
        return None

    def encode(self, plate: DataPlate, rows: Rows, noise: Tensor, global_latent: Tensor | None = None) -> Tensor:
        """Unconstrained local latents ``(B, plate.latent_size)`` of ``rows``, from standard
        normal ``noise`` of that shape, given the global latents ``(1, D)`` if any
        (subclasses)."""
        raise NotImplementedError

    def minibatch(self, args: tuple, kwargs: dict) -> dict[str, Rows]:
        """The rows the model evaluates next, and their observations, per data plate
        (`LocalStructure.minibatch()`)."""
        self.setup(*args, **kwargs)
        return self.structure.minibatch(self.model, args, kwargs)

    @contextlib.contextmanager
    def parameters_in_pyro(self) -> Iterator[None]:
        """Within this context the guide's parameters are read through ``pyro.param``, so
        that ``SVI`` sees and trains them."""
        with self._pyro_context:
            yield

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """One draw of the global latents and of every local site, for the rows the model evaluates."""
        batch = self.minibatch(args, kwargs)
        self.plates = self._global_plates()
        global_latent = self.draw_globals(args, kwargs)
        draws: dict[str, Tensor] = {}
        for plate in self.structure.plates.values():
            rows = batch[plate.name]
            padding = (1,) * (-plate.dim - 1)
            with pyro.plate(plate.name, rows.size, subsample=rows.indices, dim=plate.dim):
                noise = pyro.sample(
                    f"_{self._pyro_name}_{plate.name}_noise",
                    _NoiseOnly(plate.latent_size, rows.observations, guide=type(self).__name__).expand(
                        (len(rows.indices), *padding)
                    ),
                    infer={"is_auxiliary": True},
                )
                if noise.dim() != 2 + len(padding):
                    raise NotImplementedError(
                        f"{type(self).__name__} draws one set of local latents per call; run Predictive with "
                        "parallel=False (its default)."
                    )
                with self.parameters_in_pyro():
                    latents = self.encode(plate, rows, noise.reshape(len(rows.indices), -1), global_latent)
                parts = plate.split_rows(latents)
                for site in plate.sites:
                    value = biject_to(site.support)(site.rows_to_value(parts[site.name], self.structure.max_plate_nesting))
                    draws[site.name] = pyro.sample(site.name, dist.Delta(value, event_dim=site.event_dim))
        return draws


def is_set_up(guide: AutoContinuous) -> bool:
    """Whether an autoguide has traced its model (its first call has happened)."""
    return guide.prototype_trace is not None


def set_up(guide: AutoGuide, args: tuple, kwargs: dict) -> None:
    """Set an autoguide up for the model arguments, if it is not yet: one guide run hidden
    from outer handlers (it draws, as ``SVI``'s first step would)."""
    if guide.prototype_trace is None:
        with poutine.block():
            guide(*args, **kwargs)


def guide_param_prefix(guide: Any) -> str:
    """The prefix of a Pyro autoguide's (or ``PyroModule``'s) parameter names in the
    parameter store, e.g. ``'AutoNeuralSampler.'``; ``''`` for a guide function."""
    name = getattr(guide, "_pyro_name", None)
    return f"{name}." if name else ""


def latent_site_name(guide: AutoContinuous) -> str:
    """The name of the auxiliary site under which an `AutoContinuous` guide samples its
    latent vector."""
    return f"_{guide._pyro_name}_latent"


def autoguide_latent_batch(
    guide: AutoContinuous, num: int, max_plate_nesting: int, args: tuple, kwargs: dict
) -> Tensor:
    """``num`` latent vectors ``(num, D)`` of any `AutoContinuous` guide, from one guide
    run inside an outer plate (differentiable when the guide reparameterizes)."""
    with pyro.plate(PARTICLE_PLATE, num, dim=-(max_plate_nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    return guide_trace.nodes[latent_site_name(guide)]["value"].reshape(num, guide.latent_dim)
