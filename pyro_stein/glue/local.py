"""Local latent variables: a latent per datapoint, found in the model's trace and
evaluated for a batch of particles per datapoint.

A *data plate* is a plate that holds both an observed site and a latent site.  Every
latent site inside it is *local*: one value per datapoint (per row of the plate), whose
conditional posterior depends on that datapoint's observations.  A variational
autoencoder's code ``z`` in ``pyro.plate("data", N, subsample_size=B)`` is the typical
case; nested plates inside the data plate (a group's rows) belong to the datapoint.

[`LocalStructure`][pyro_stein.glue.local.LocalStructure] says which plates and sites these
are and how a site's values map to one flat vector per datapoint;
[`LocalLogDensity`][pyro_stein.glue.local.LocalLogDensity] evaluates the model's log joint
at ``K`` particles of every datapoint of one minibatch, and each local latent's score,
which is the score of its datapoint's conditional posterior.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_validation_enabled, scale_and_mask, sum_rightmost
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

from ..ops.dimensions import HIGH_DIMENSION
from .initialization import init_to_feasible
from .layout import PARTICLE_PLATE, check_model_args, feasible_trace, latent_dtype, max_plate_nesting
from .site_checks import (
    observations_in_support,
    observed_sites_are_tensors,
    site_shapes_agree_with_plates,
    sum_per_particle,
)
from .subsample import CheapSubsample

__all__ = ["GLOBAL", "DataPlate", "LocalLogDensity", "LocalSite", "LocalStructure", "Rows"]

#: The key of the global latents' score in `LocalLogDensity.log_prob_and_scores`'s scores.
GLOBAL = "_global"


class Rows(NamedTuple):
    """The rows of a data plate that one run of the model evaluates.

    Attributes:
        indices: ``(B,)``, which rows.
        size: the plate's full size in that run.
        observations: ``(B, features)``, the plate's observed values per row.
    """

    indices: Tensor
    size: int
    observations: Tensor

    @property
    def scale(self) -> float:
        """How Pyro scales the rows' terms: full size over rows evaluated."""
        return self.size / len(self.indices)


@dataclass(frozen=True)
class LocalSite:
    """A latent site with one value per row of its data plate.

    Attributes:
        name: the site.
        plate: its data plate.
        row_index: where the data plate's dimension lies in the site's unconstrained value.
        row_shape: the unconstrained value of one row (the other dimensions, in order).
        batch_rank: how many batch dimensions the unconstrained value has.
        support: the site's support (``biject_to`` maps from unconstrained space).
        event_dim: the site's event dimensions.
    """

    name: str
    plate: str
    row_index: int
    row_shape: torch.Size
    batch_rank: int
    support: Any
    event_dim: int

    @property
    def row_size(self) -> int:
        """Unconstrained coordinates per row."""
        return math.prod(self.row_shape)

    def rows_to_value(self, rows: Tensor, max_plate_nesting: int) -> Tensor:
        """Unconstrained site values from per-row vectors ``(..., B, row_size)``, the
        leading dimensions (particles) placed left of all of the model's plates."""
        lead = rows.shape[:-2]
        value = rows.reshape(*lead, rows.shape[-2], *self.row_shape).movedim(len(lead), len(lead) + self.row_index)
        if lead:
            padding = (1,) * (max_plate_nesting - self.batch_rank)
            value = value.reshape(*lead, *padding, *value.shape[len(lead):])
        return value

    def value_to_rows(self, value: Tensor) -> Tensor:
        """Per-row vectors ``(..., B, row_size)`` from unconstrained values of the site
        ``(..., *site_shape)`` (leading dimensions: draws); the inverse of `rows_to_value()`
        without particle padding."""
        lead = value.dim() - len(self.row_shape) - 1
        value = value.movedim(lead + self.row_index, lead)
        return value.reshape(*value.shape[: lead + 1], -1)


@dataclass(frozen=True)
class DataPlate:
    """A plate with observed and local latent sites.

    Attributes:
        name, dim: the plate's name and dimension.
        size: its full size (rows of data).
        subsample_size: rows per evaluation.
        sites: its local latent sites.
        observed: its observed sites, what an encoder conditions on by default.
    """

    name: str
    dim: int
    size: int
    subsample_size: int
    sites: tuple[LocalSite, ...]
    observed: tuple[str, ...]

    @property
    def latent_size(self) -> int:
        """Unconstrained coordinates of all local sites of one row."""
        return sum(site.row_size for site in self.sites)

    @property
    def subsampled(self) -> bool:
        return self.subsample_size < self.size

    def split_rows(self, rows: Tensor) -> dict[str, Tensor]:
        """``{site: (..., B, site.row_size)}`` from the rows of all sites ``(..., B, latent_size)``."""
        parts = rows.split([site.row_size for site in self.sites], dim=-1)
        return {site.name: part for site, part in zip(self.sites, parts)}


def _rows_of(value: Tensor, fn: Any, plate_dim: int) -> Tensor:
    """An observed value as one flat row per datapoint ``(B, -1)``."""
    batch_shape, event_shape = fn.batch_shape, fn.event_shape
    value = value.expand(*batch_shape, *event_shape)
    index = len(batch_shape) + plate_dim
    return value.movedim(index, 0).reshape(value.shape[index], -1)


def _traced(model: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """`feasible_trace()`, or where it fails on a discrete latent site (which has no feasible
    continuous value), an error naming that site."""
    try:
        return feasible_trace(model, args, kwargs)
    except (ValueError, NotImplementedError) as error:
        with poutine.block(), pyro.validation_enabled(False):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        for name, site in trace.iter_stochastic_nodes():
            if not site_is_subsample(site) and site["fn"].support.is_discrete:
                raise ValueError(
                    f"Latent site {name!r} is discrete ({type(site['fn']).__name__}); the particle engines handle "
                    "continuous latents only: marginalize it out in the model (a mixture distribution)."
                ) from error
        raise


@dataclass(frozen=True)
class LocalStructure:
    """The data plates of a model and their local latent sites (see the module docstring).

    Build it with `from_model()`.

    Attributes:
        plates: ``{plate name: DataPlate}``.
        global_sites: latent sites outside every data plate.
        max_plate_nesting: batch dimensions the model uses.
        dtype, device: of the latent values.
        has_model_params: the model has ``pyro.param`` / ``pyro.module`` parameters.
    """

    plates: dict[str, DataPlate]
    global_sites: tuple[str, ...]
    max_plate_nesting: int
    dtype: torch.dtype
    device: torch.device
    has_model_params: bool

    @classmethod
    def from_model(
        cls,
        model: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        *,
        local_plates: tuple[str, ...] | None = None,
        encoded_without_observations: tuple[str, ...] = (),
    ) -> LocalStructure:
        """Trace ``model`` once and find its data plates.

        Args:
            model: the model.
            args: its positional arguments.
            kwargs: its keyword arguments.
            local_plates: the plates whose latent sites are local; default every plate
                that holds a latent site and an observed site.
            encoded_without_observations: plates whose encoder the user supplies, so that
                they need no observed site of their own.

        Raises:
            ValueError: a named plate does not exist or holds no latent site; a local
                latent site's plate has no observed site (and no user encoder); a discrete
                latent site; a latent site in two subsampled plates.
        """
        check_model_args(args, kwargs)
        return cls._from_trace(
            _traced(model, args, kwargs), args, kwargs, local_plates=local_plates,
            encoded_without_observations=encoded_without_observations,
        )

    @classmethod
    def _from_trace(
        cls,
        trace: Any,
        args: tuple,
        kwargs: dict,
        *,
        local_plates: tuple[str, ...] | None = None,
        encoded_without_observations: tuple[str, ...] = (),
    ) -> LocalStructure:
        observed_sites_are_tensors(trace)
        if is_validation_enabled():
            observations_in_support(trace)
            site_shapes_agree_with_plates(trace)
        latents = [(name, site) for name, site in trace.iter_stochastic_nodes() if not site_is_subsample(site)]
        observed_in: dict[str, list[str]] = {}
        latent_in: dict[str, list[str]] = {}
        frames: dict[str, Any] = {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if not frame.vectorized:
                    continue
                frames[frame.name] = frame
                (observed_in if site["is_observed"] else latent_in).setdefault(frame.name, []).append(name)
        if local_plates is None:
            chosen = [plate for plate in latent_in if plate in observed_in or plate in encoded_without_observations]
        else:
            chosen = list(local_plates)
            for plate in chosen:
                if plate not in frames:
                    raise ValueError(f"local_plates names {plate!r}, but the model has no such plate (it has {sorted(frames)})")
                if plate not in latent_in:
                    raise ValueError(f"local_plates names {plate!r}, but no latent site lies inside it")
        for name, site in latents:
            subsampled = [f.name for f in site["cond_indep_stack"] if f.vectorized and (f.full_size or f.size) != f.size]
            inside = [f.name for f in site["cond_indep_stack"] if f.name in chosen]
            if len(subsampled) > 1:
                raise ValueError(f"Latent site {name!r} lies in two subsampled plates {subsampled}; subsample one of them only.")
            if subsampled and subsampled[0] not in chosen:
                raise ValueError(
                    f"Latent site {name!r} lies inside the subsampled plate {subsampled[0]!r}, which holds no observed "
                    "site: an amortized sampler draws a local latent from its datapoint's observations. Observe the "
                    f"data inside plate {subsampled[0]!r}, or pass an encoder for it."
                )
            if len(inside) > 1:
                raise ValueError(f"Latent site {name!r} lies in two data plates {inside}; name one in local_plates.")
        plates = {}
        for plate in chosen:
            frame = frames[plate]
            observed = tuple(observed_in.get(plate, ()))
            if not observed and plate not in encoded_without_observations:
                raise ValueError(
                    f"The latent sites {latent_in[plate]} lie in plate {plate!r}, which holds no observed site, so "
                    "there is nothing to condition an amortized sampler on: observe the data inside that plate, or "
                    f"pass encoder={{{plate!r}: module}} to the guide."
                )
            sites = []
            for name in latent_in[plate]:
                site = trace.nodes[name]
                transform = biject_to(site["fn"].support)
                unconstrained = transform.inv(site["value"])
                batch_rank = unconstrained.dim() - transform.domain.event_dim
                row_index = batch_rank + frame.dim
                if row_index < 0:
                    raise ValueError(f"Latent site {name!r} does not extend along its plate {plate!r} (shape {tuple(site['value'].shape)})")
                shape = list(unconstrained.shape)
                del shape[row_index]
                sites.append(LocalSite(name, plate, row_index, torch.Size(shape), batch_rank, site["fn"].support, site["fn"].event_dim))
            plates[plate] = DataPlate(plate, frame.dim, int(frame.full_size or frame.size), int(frame.size), tuple(sites), observed)
        local = {site.name for plate in plates.values() for site in plate.sites}
        global_sites = tuple(name for name, _ in latents if name not in local)
        return cls(
            plates,
            global_sites,
            max_plate_nesting(trace),
            latent_dtype(trace, args, kwargs),
            next((site["value"].device for _, site in latents), torch.device("cpu")),
            any(site["type"] == "param" for site in trace.nodes.values()),
        )

    @classmethod
    def detect(cls, model: Callable[..., Any], args: tuple, kwargs: dict) -> LocalStructure | None:
        """The model's `LocalStructure` where an amortized sampler of local latents is the
        right guide, else ``None``: some data plate's latents are subsampled, or number at
        least ``HIGH_DIMENSION`` coordinates in all (as one joint vector they would be a
        high-dimensional posterior whose rows are independent).

        Raises:
            ValueError: as `from_model()`, for a local latent it cannot serve (say, in a
                subsampled plate without observations).
        """
        check_model_args(args, kwargs)
        trace = _traced(model, args, kwargs)
        observed, latent = set(), set()
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                plates = {frame.name for frame in site["cond_indep_stack"] if frame.vectorized}
                (observed if site["is_observed"] else latent).update(plates)
        subsampled_latent = any(
            (frame.full_size or frame.size) != frame.size
            for _, site in trace.iter_stochastic_nodes()
            if not site_is_subsample(site)
            for frame in site["cond_indep_stack"]
        )
        if not (latent & observed) and not subsampled_latent:
            return None
        structure = cls._from_trace(trace, args, kwargs)
        if not structure.plates:
            return None
        coordinates = sum(plate.subsample_size * plate.latent_size for plate in structure.plates.values())
        if any(plate.subsampled for plate in structure.plates.values()) or coordinates >= HIGH_DIMENSION:
            return structure
        return None

    def every_row(self, model: Callable[..., Any], args: tuple, kwargs: dict) -> Iterator[dict[str, Rows]]:
        """Minibatches that cover every row of every data plate once, in order: consecutive
        runs of the plate's subsample size (the last one ends at the last row, its first
        rows repeating the previous minibatch's are dropped)."""
        if len(self.plates) != 1:
            raise NotImplementedError(f"every_row() covers one data plate; the model has {sorted(self.plates)}")
        (plate,) = self.plates.values()
        probe = self.minibatch(model, args, kwargs)[plate.name]  # these arguments' sizes, not the prototype's
        size, batch = probe.size, len(probe.indices)
        counted = 0
        for start in range(0, size, batch):
            first = min(start, size - batch)
            indices = torch.arange(first, first + batch, device=self.device)
            rows = self.minibatch(poutine.condition(model, data={plate.name: indices}), args, kwargs)[plate.name]
            keep = indices >= counted
            counted = first + batch
            yield {plate.name: Rows(indices[keep], rows.size, rows.observations[keep])}

    def minibatch(self, model: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Rows]:
        """One run of the model (hidden from outer handlers, its latents at feasible values,
        `init_to_feasible`): for each data plate, the `Rows` it evaluates, their observations flattened
        per row and concatenated in the order of the trace (``(B, 0)`` for a plate without
        any)."""
        with poutine.block(), pyro.validation_enabled(False), torch.no_grad():
            trace = poutine.trace(InitMessenger(init_to_feasible)(CheapSubsample()(model))).get_trace(*args, **kwargs)
        batch: dict[str, Rows] = {}
        for plate in self.plates.values():
            observed = [
                _rows_of(trace.nodes[name]["value"], trace.nodes[name]["fn"], plate.dim).to(self.dtype)
                for name in plate.observed
            ]
            subsample = trace.nodes.get(plate.name)
            if subsample is not None and site_is_subsample(subsample):
                indices, size = subsample["value"], int(subsample["fn"].size)
            else:
                size = observed[0].shape[0] if observed else next(
                    trace.nodes[s.name]["value"].shape[s.row_index] for s in plate.sites
                )
                indices = torch.arange(size, device=self.device)
            observations = torch.cat(observed, -1) if observed else torch.zeros(len(indices), 0, dtype=self.dtype, device=self.device)
            batch[plate.name] = Rows(indices, size, observations)
        return batch


class LocalLogDensity:
    """The log joint of a model with local latents at ``K`` particles of every datapoint of
    a minibatch, and the score of every local latent's conditional posterior.

    Args:
        model: the Pyro model.
        structure: its `LocalStructure`.
        global_layout: the layout of its global latents (those outside the data plates),
            if it has any: a `LatentLayout` of the model with its local sites conditioned.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x), subsample_size=4) as rows:
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x[rows])
        >>> x = torch.arange(10.0)
        >>> structure = LocalStructure.from_model(model, (x,), {})
        >>> batch = structure.minibatch(model, (x,), {})
        >>> density = LocalLogDensity(model, structure)
        >>> log_p, scores = density.log_prob_and_scores({"data": torch.zeros(3, 4, 1)}, batch, (x,), {})
        >>> row_scores, rows = scores["data"], batch["data"]
        >>> log_p.shape, row_scores.shape
        (torch.Size([3]), torch.Size([3, 4, 1]))
        >>> torch.allclose(row_scores[0, :, 0], x[rows.indices])  # d/dz of the conditional at z = 0
        True
    """

    def __init__(self, model: Callable[..., Any], structure: LocalStructure, global_layout: Any = None) -> None:
        if structure.global_sites and global_layout is None:
            raise ValueError(f"the model has global latents {list(structure.global_sites)}: pass their global_layout")
        self.model = model
        self.structure = structure
        self.global_layout = global_layout

    @property
    def has_model_params(self) -> bool:
        return self.structure.has_model_params

    def log_prob_and_scores(
        self,
        rows: dict[str, Tensor],
        batch: dict[str, Rows],
        args: tuple,
        kwargs: dict,
        *,
        retain_graph: bool = False,
        per_row: str | None = None,
        scores: bool = True,
        global_latents: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The log joint at ``K`` particles, and the local scores.

        Args:
            rows: ``{plate: (K, B, latent_size)}``, each plate's local latents in
                unconstrained space, one vector per particle and row (their gradient is not
                followed: the scores are returned instead).
            batch: ``{plate: Rows}``, the rows of the minibatch (from
                `LocalStructure.minibatch()`).
            args: the model's positional arguments.
            kwargs: its keyword arguments.
            retain_graph: keep the log joint's graph for the model's parameters (amortized
                maximum likelihood differentiates it once more).
            per_row: a data plate: return each of its rows' own terms (unscaled) instead
                of the log joint, ``(K, B)``: the log density, up to a constant, of each
                row's conditional posterior, whose Metropolis tests are then independent.
                Terms outside the plate are left out.
            scores: compute the scores (``False``: the log densities only, ``{}`` for the
                scores, without autograd).
            global_latents: ``(K, D)``, the global latents of each particle in unconstrained
                space (laid out as ``global_layout``); their score, the gradient of the log
                joint (its subsampled terms scaled to the full data), is returned under the
                key `GLOBAL`.

        Returns:
            ``(log_p (K,), {plate: (K, B, latent_size)})``: the log joint with every
            subsampled plate's terms scaled to its full size (as Pyro scales them), and
            the gradient of each row's own terms (unscaled) with respect to its latents,
            the score of its conditional posterior given the other latents.
        """
        structure = self.structure
        rank = structure.max_plate_nesting + 1
        leaves = {plate: value.detach().requires_grad_(scores) for plate, value in rows.items()}
        if structure.global_sites and global_latents is None:
            raise ValueError(f"the model has global latents {list(structure.global_sites)}: pass global_latents")
        if global_latents is not None:
            leaves[GLOBAL] = global_latents.detach().requires_grad_(scores)
        num = next(iter(rows.values())).shape[0]
        values: dict[str, Tensor] = {}
        total = next(iter(rows.values())).new_zeros(num)
        row_plate = None if per_row is None else structure.plates[per_row]
        rows_total = None if row_plate is None else total.new_zeros(num, len(batch[per_row].indices))

        def add_rows(term: Tensor, plate_dim: int, scale: float) -> None:
            nonlocal rows_total
            if rows_total is None or term.dim() < -plate_dim:
                return
            while term.dim() < rank:
                term = term.unsqueeze(0)
            term = term.movedim(plate_dim, 1)
            rows_total = rows_total + term.reshape(*term.shape[:2], -1).sum(-1) / scale

        with torch.set_grad_enabled(scores or retain_graph), pyro.validation_enabled(False):
            if global_latents is not None:
                dim = global_latents.shape[-1]
                padded = leaves[GLOBAL].reshape((num,) + (1,) * (rank - 1) + (dim,))
                global_values, log_jacobians = self.global_layout.constrain(padded)
                values.update(global_values)
                for _, term in log_jacobians:
                    total = total + sum_per_particle(term, num, rank, total)
            for plate in structure.plates.values():
                scale = batch[plate.name].scale
                for site, part in zip(plate.sites, plate.split_rows(leaves[plate.name]).values()):
                    unconstrained = site.rows_to_value(part, structure.max_plate_nesting)
                    transform = biject_to(site.support)
                    value = transform(unconstrained)
                    log_jacobian = transform.log_abs_det_jacobian(unconstrained, value)
                    log_jacobian = sum_rightmost(log_jacobian, log_jacobian.dim() - value.dim() + site.event_dim)
                    total = total + scale * sum_per_particle(log_jacobian, num, rank, total)
                    if plate is row_plate:
                        add_rows(log_jacobian, plate.dim, 1.0)
                    values[site.name] = value
            indices = {name: rows.indices for name, rows in batch.items()}
            conditioned = poutine.condition(self.model, data={**indices, **values})
            # Outer handlers (SVI's parameter capture) see the model's parameters, not these sample sites.
            with pyro.plate(PARTICLE_PLATE, num, dim=-rank), poutine.block(hide_types=["sample"]):
                trace = poutine.trace(conditioned).get_trace(*args, **kwargs)
            for site in trace.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                term = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
                total = total + sum_per_particle(term, num, rank, total)
                if row_plate is not None and any(frame.name == per_row for frame in site["cond_indep_stack"]):
                    add_rows(term, row_plate.dim, batch[per_row].scale)
            grads = torch.autograd.grad(total.sum(), list(leaves.values()), retain_graph=retain_graph) if scores else ()
        row_scores = {plate: grad if plate == GLOBAL else grad / batch[plate].scale for plate, grad in zip(leaves, grads)}
        if rows_total is not None:
            return rows_total.detach(), row_scores
        return (total if retain_graph else total.detach()), row_scores
