"""A Pyro model's log joint in unconstrained space, for a whole batch of latent vectors.

The latent vector layout is a [`LatentLayout`][pyro_stein.glue.layout.LatentLayout] (that of Pyro's
`AutoContinuous` guides).  For a batch
``z`` of shape ``(N, D)`` the density is

    log p(T(z_i)) + log |det dT/dz (z_i)|,    i = 1..N,

computed for the whole batch at once, batched the way the first call finds to agree with
one particle at a time (an outer particle plate, ``torch.func.vmap``, or a loop with a
warning: [`pyro_stein.glue.batching`][pyro_stein.glue.batching]).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_validation_enabled, scale_and_mask
from pyro.infer.autoguide import AutoContinuous
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from ..ops.compiled import CompiledFunction, graph_elements
from .autoguide import LatentVectorGuide
from .batching import BATCHING, agree, choose_batching
from .layout import PARTICLE_PLATE, LatentLayout, check_model_args, feasible_trace, max_plate_nesting
from .site_checks import (
    observations_in_support,
    observed_sites_are_tensors,
    site_shapes_agree_with_plates,
    sum_per_particle,
)
from .subsample import CheapSubsample

__all__ = ["BATCHING", "Anchor", "GuideModelMismatch", "UnconstrainedLogDensity", "layout_of"]

#: The most likelihood terms of one observed site that `UnconstrainedLogDensity.log_prob_and_score`
#: evaluates at once (it splits a batch of particles beyond): about 4 MB per float32 tensor
#: of them, of which a Normal likelihood's graph holds a handful.  A 100k-row regression's
#: step at 512 particles peaked at 2060 MiB at once, 1070 MiB in parts of 2**22 terms and
#: 644 MiB in parts of 2**20 (``benchmarks/large_data.py``).
CHUNK_TERMS = 2**20
_UNBOUNDED = 2**62

#: `UnconstrainedLogDensity.compile_for` with ``policy=None`` compiles the density when one
#: batch of particles makes its operations produce at least this many tensor elements
#: (`graph_elements`, views excepted).  Compiling costs seconds, so it should pay back within
#: a few hundred steps.  At 512 particles (``benchmarks/step_cost.py``, docs/benchmarks.md):
#: the breast-cancer logistic regression written with broadcasting makes 1.0e7 (density and
#: score 41.4 ms eager, 3.4 ms compiled; a default fit 34.3 s eager, 18.6 s compiled with a
#: warm compiler cache, 27.4 s with an empty one: compiled); a 2000-D diagonal Gaussian 1.0e7
#: (compiled); the posteriordb Gaussian mixture 7.7e6 in float64 (not compiled: about 10 s
#: of steps, break-even at best); the diabetes regression 4.8e6 (9.7 ms eager, 2.0 ms
#: compiled: not compiled, since its whole fit takes about 6 s).
COMPILE_ELEMENTS = 9 * 10**6


def _same_arguments(leaves: list[Any], other: list[Any]) -> bool:
    """Whether two flattened argument lists hold the same objects, tensors unmodified."""
    if len(leaves) != len(other):
        return False
    for (mine, version), (theirs, their_version) in zip(leaves, other):
        if isinstance(mine, Tensor):
            if mine is not theirs or version != their_version:
                return False
        elif mine is not theirs:
            try:
                if not bool(mine == theirs):
                    return False
            except Exception:  # an object without a usable ==
                return False
    return True


def _argument_leaves(args: tuple, kwargs: dict) -> list[Any]:
    """The model's arguments as ``(object, version)`` pairs, tuples, lists and dicts opened."""
    leaves: list[Any] = []

    def visit(value: Any) -> None:
        if isinstance(value, (tuple, list)):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for key in sorted(value, key=repr):
                leaves.append((key, None))
                visit(value[key])
        else:
            leaves.append((value, value._version if isinstance(value, Tensor) else None))

    visit((args, kwargs))
    return leaves


class GuideModelMismatch(ValueError):
    """The guide's latent sites do not match the model's."""


def layout_of(layout_or_guide: LatentLayout | AutoContinuous) -> LatentLayout:
    """The [`LatentLayout`][pyro_stein.glue.layout.LatentLayout] itself, or that of a set-up
    `AutoContinuous` guide (read from its prototype trace)."""
    if isinstance(layout_or_guide, LatentLayout):
        return layout_or_guide
    if isinstance(layout_or_guide, LatentVectorGuide) and layout_or_guide.is_set_up:
        return layout_or_guide.layout
    if isinstance(layout_or_guide, AutoContinuous):
        if layout_or_guide.prototype_trace is None:
            raise ValueError("set up the guide (call it once) before building its log density")
        return LatentLayout.from_trace(layout_or_guide.prototype_trace, model=layout_or_guide.model)
    raise TypeError(
        f"expected a LatentLayout or an AutoContinuous guide, got {type(layout_or_guide).__name__}"
    )


def _largest_observed(trace: poutine.Trace) -> tuple[str, int, str | None] | None:
    """The observed site with the most log-likelihood terms: ``(name, terms, plate)``."""
    largest = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or site_is_subsample(site):
            continue
        terms = int(site["fn"].batch_shape.numel())
        plates = [frame for frame in site["cond_indep_stack"] if frame.vectorized]
        plate = max(plates, key=lambda frame: frame.size).name if plates else None
        if largest is None or terms > largest[1]:
            largest = (name, terms, plate)
    return largest


class Anchor(NamedTuple):
    """The point of a control variate, with the full data's log density and score there."""

    point: Tensor
    log_p: Tensor
    score: Tensor


class UnconstrainedLogDensity:
    """Batched log joint of ``model`` on an unconstrained latent layout.

    Args:
        model: the Pyro model.
        layout: a [`LatentLayout`][pyro_stein.glue.layout.LatentLayout], or a set-up
            autoguide whose layout to use (its prototype trace defines it).
        batching: ``"auto"`` (default) picks the first of ``"plate"``, ``"vmap"`` that
            agrees with a per-particle evaluation on the first call, else ``"loop"`` with
            a warning; or name one to use it unchecked.
        frozen_subsample: evaluate every subsampled plate on one fixed subsample (drawn
            on the first call) instead of a fresh one per call: a deterministic objective
            for optimisation, with the same scaling.

    Call it as ``density(z, args, kwargs)`` with ``z`` of shape ``(N, D)``; it returns
    ``(N,)``.  Evaluation runs with distribution validation off, so a particle where the
    model produces NaN or infinite values (or rounds onto the edge of a support) gets a
    non-finite log density instead of raising; the caller decides what to do with it, and
    `non_finite_sites()` names the sites responsible.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro_stein.glue.layout import LatentLayout
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> y = torch.zeros(3)
        >>> density = UnconstrainedLogDensity(model, LatentLayout(model, y))
        >>> log_p = density(torch.zeros(5, 1), (y,), {})
        >>> log_p.shape, density.batching
        (torch.Size([5]), 'plate')
    """

    def __init__(
        self,
        model: Callable[..., Any],
        layout: LatentLayout | Any,
        *,
        batching: str = "auto",
        frozen_subsample: bool = False,
    ) -> None:
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        self.model = model
        self.layout = layout_of(layout)
        self.batching = batching
        self.frozen_subsample = frozen_subsample
        self._subsample: dict[str, Tensor] | None = None
        self.max_plate_nesting: int | None = None
        self.has_model_params = False
        #: Whether some plate evaluates a minibatch (``subsample_size`` below its size).
        self.subsampled = False
        #: The observed site with the most likelihood terms per evaluation, as
        #: ``(site, terms, plate)`` (the plate: its largest one, or ``None``).
        self.largest_observed: tuple[str, int, str | None] | None = None
        #: A control variate for a subsampled plate's minibatch noise (`set_anchor()`).
        self.anchor: Anchor | None = None
        self._subsampled_plates: dict[str, tuple[int, int]] = {}
        self._full_data = False
        #: The compiled evaluation (`compile_for()`), and the arguments it was captured with.
        self.compiled: CompiledFunction | None = None
        self._compiled_arguments: list[Any] = []

    # ------------------------------------------------------------------ set-up
    def setup(self, args: tuple, kwargs: dict) -> None:
        """Check the model against the guide and choose how to batch its evaluation.

        Called automatically on first use; safe to call again (it does nothing then).

        Raises:
            GuideModelMismatch: a latent site is in one of model and guide but not the
                other, or has a different shape or support.
            TypeError: non-tensor data (see `check_model_args()`).
        """
        if self.max_plate_nesting is not None:
            return
        check_model_args(args, kwargs)
        # The model runs on its own (feasible, shape-derived) values, so that a guide built
        # for another model shows up as different latent-site sets or shapes.
        model_trace = feasible_trace(self.model, args, kwargs)
        observed_sites_are_tensors(model_trace)
        if is_validation_enabled():
            observations_in_support(model_trace)
            site_shapes_agree_with_plates(model_trace)
        self._check_sites(model_trace)
        self.has_model_params = any(s["type"] == "param" for s in model_trace.nodes.values())
        subsample = {
            name: site["value"]
            for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and site_is_subsample(site)
        }
        self.max_plate_nesting = max_plate_nesting(model_trace)
        self.largest_observed = _largest_observed(model_trace)
        self._subsampled_plates = {
            name: (int(site["fn"].size), len(site["value"]))
            for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and site_is_subsample(site) and len(site["value"]) < int(site["fn"].size)
        }
        self.subsampled = any(
            frame.full_size is not None and frame.full_size != frame.size
            for site in model_trace.nodes.values()
            if site["type"] == "sample"
            for frame in site["cond_indep_stack"]
        )
        if self.batching == "auto":
            # Every evaluation in the comparison must see the same minibatch.
            self._subsample = subsample
            try:
                self.batching = self._choose_batching(args, kwargs)
            finally:
                self._subsample = None
        if self.frozen_subsample:
            self._subsample = subsample

    def _check_sites(self, model_trace: poutine.Trace) -> None:
        guide_sites = {site["name"]: site for site in self.layout.sites}
        model_latents = {
            name: site
            for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        }
        missing = [n for n in model_latents if n not in guide_sites]
        extra = [n for n in guide_sites if n not in model_latents]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"model latent sites not in the guide: {missing}")
            if extra:
                parts.append(f"guide sites not in the model: {extra}")
            if self.layout.model is not None and self.layout.model == self.model:
                raise GuideModelMismatch(
                    "The model's latent sites changed since the guide was set up from this same model ("
                    + "; ".join(parts).replace("the guide", "its first run").replace("guide sites", "sites of its first run")
                    + "). A Pyro model must have the same latent sites at every call with the same arguments: "
                    "sites that depend on a random draw or on a Python branch over data must be written "
                    "with the same names and shapes on every path (or marginalized)."
                )
            raise GuideModelMismatch(
                "The guide was built for another model (" + "; ".join(parts) + "). "
                "Build the guide from this model: AutoNeuralSampler(model)."
            )
        for name, gsite in guide_sites.items():
            msite = model_latents[name]
            g_fn, m_fn = gsite["fn"], msite["fn"]
            same_shape = (g_fn.batch_shape, g_fn.event_shape) == (m_fn.batch_shape, m_fn.event_shape)
            same_support = type(g_fn.support) is type(m_fn.support) and (
                g_fn.support.event_dim == m_fn.support.event_dim
            )
            if not (same_shape and same_support):
                raise GuideModelMismatch(
                    f"Site {name!r} differs between guide and model: guide has "
                    f"batch_shape={tuple(g_fn.batch_shape)}, event_shape={tuple(g_fn.event_shape)}, "
                    f"support={g_fn.support}; model has batch_shape={tuple(m_fn.batch_shape)}, "
                    f"event_shape={tuple(m_fn.event_shape)}, support={m_fn.support}. "
                    "The guide was built for another model (or other data shapes)."
                )

    def _choose_batching(self, args: tuple, kwargs: dict) -> str:
        start = self.layout.init_loc().detach()
        generator = torch.Generator(device="cpu").manual_seed(0)
        jitter = torch.randn((3,) + start.shape, generator=generator).to(start)
        probe = start + 0.1 * jitter
        candidates = {"plate": self._plated, "vmap": self._vmapped}

        def run(batching: str, latent: Tensor) -> Tensor:
            with pyro.validation_enabled(False):
                return (candidates.get(batching) or self._looped)(latent, args, kwargs)

        return choose_batching(
            lambda batching: run(batching, probe),
            what="the log density over a batch of particles",
            advice="A model whose tensors broadcast over a leading batch dimension, and that has no "
            "Python control flow on latent values, runs batched.",
        )

    # ----------------------------------------------------------- compiling
    def compile_for(
        self, num_particles: int, args: tuple = (), kwargs: dict | None = None, *, policy: bool | None = None
    ) -> bool:
        """Compile the evaluation of batches of ``num_particles`` (and the parts
        `log_prob_and_score()` splits them into) for these arguments, with
        [`CompiledFunction`][pyro_stein.ops.compiled.CompiledFunction]: a model written with
        broadcasting then no longer stores its ``(particles, rows, ...)`` intermediates.

        Args:
            num_particles: the batch size to compile for; other sizes evaluate eagerly.
            args: the model's positional arguments; a call with other ones (or with a
                tensor among them modified in place) evaluates eagerly.
            kwargs: its keyword arguments, likewise.
            policy: ``True``: compile; ``False``: do not; ``None``: compile when a batch's
                operations produce at least `COMPILE_ELEMENTS` tensor elements.

        Returns:
            Whether the density will be compiled.  Never for a model with parameters (their
            gradients), a subsampled plate (fresh indices every step) or the ``"loop"``
            batching; where compiling fails or disagrees with the eager evaluation, the
            density stays eager (with a warning when it fails).
        """
        kwargs = {} if kwargs is None else kwargs
        self.setup(args, kwargs)
        if (
            policy is False
            or self.batching not in ("plate", "vmap")
            or self.subsampled
            or self.has_model_params
            or self._full_data
        ):
            return False
        evaluate = self._plated if self.batching == "plate" else self._vmapped

        def log_density(latent: Tensor) -> Tensor:
            with pyro.validation_enabled(False):
                return evaluate(latent, args, kwargs)

        chunk = min(num_particles, self.particles_per_chunk(args, kwargs))
        sizes = {chunk} | ({num_particles % chunk} if num_particles % chunk else set())
        example = self.layout.init_loc().detach().expand(chunk, self.layout.latent_dim).clone()
        if policy is None:
            parts = -(-num_particles // chunk)
            try:
                elements = graph_elements(log_density, example)
            except Exception:  # a value read inside the model, ...: it could not be captured
                return False
            if elements * parts < COMPILE_ELEMENTS:
                return False
        dim = self.layout.latent_dim
        self.compiled = CompiledFunction(
            log_density, agree=agree, what="the model's log density", shapes=[(size, dim) for size in sizes]
        )
        self._compiled_arguments = _argument_leaves(args, kwargs)
        return True

    # ----------------------------------------------------------- evaluation
    def __call__(self, latent: Tensor, args: tuple = (), kwargs: dict | None = None) -> Tensor:
        """Log joint plus log-Jacobian at each row of ``latent`` (``(N, D) -> (N,)``)."""
        kwargs = {} if kwargs is None else kwargs
        if latent.dim() != 2 or latent.shape[-1] != self.layout.latent_dim:
            raise ValueError(
                f"latent must have shape (N, {self.layout.latent_dim}), got {tuple(latent.shape)}"
            )
        self.setup(args, kwargs)
        evaluate = {"plate": self._plated, "vmap": self._vmapped, "loop": self._looped}[self.batching]
        if self._full_data:
            evaluate = self._full_data_log_prob
        elif self.compiled is not None and _same_arguments(_argument_leaves(args, kwargs), self._compiled_arguments):
            return self.compiled(latent)
        with pyro.validation_enabled(False):
            return evaluate(latent, args, kwargs)

    def log_prob_and_score(
        self, latent: Tensor, args: tuple = (), kwargs: dict | None = None, *, retain_graph: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Log density, its gradient (the score) and validity at each row of ``latent``.

        Rows are evaluated in parts of `particles_per_chunk()` rows, so that memory stays
        bounded on large data (except with ``retain_graph``, where every part's graph is kept).

        Args:
            latent: ``(N, D)``.
            retain_graph: keep the log density's graph, e.g. to back-propagate it into the
                model's parameters afterwards.

        Returns:
            ``(log_p, score, valid)`` of shapes ``(N,)``, ``(N, D)``, ``(N,)``: ``valid`` marks
            the rows where both the log density and the score are finite; the score of the
            other rows is not meaningful.

        Raises:
            ValueError: the log density does not depend on any latent value, naming the
                sites: flat priors with no data on them make the posterior improper.
        """
        chunk = self.particles_per_chunk(args, kwargs)
        if self.anchor is not None and not retain_graph and self.control_variates_apply:
            # The anchor rides in the same batch, so it sees the particles' minibatch.
            log_p, score, valid = self._raw_log_prob_and_score(torch.cat([latent, self.anchor.point.unsqueeze(0)]), args, kwargs)
            if bool(valid[-1]):
                return (
                    log_p[:-1] - log_p[-1] + self.anchor.log_p,
                    score[:-1] - score[-1] + self.anchor.score,
                    valid[:-1],
                )
        if not retain_graph and len(latent) > chunk:
            parts = [self.log_prob_and_score(part, args, kwargs) for part in latent.split(chunk)]
            return tuple(torch.cat(items) for items in zip(*parts))  # type: ignore[return-value]
        return self._raw_log_prob_and_score(latent, args, kwargs, retain_graph=retain_graph)

    def _raw_log_prob_and_score(
        self, latent: Tensor, args: tuple, kwargs: dict | None, *, retain_graph: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        with torch.enable_grad():
            z = latent.detach().requires_grad_(True)
            log_p = self(z, args, kwargs)
            if not log_p.requires_grad:
                sites = [site["name"] for site in self.layout.sites]
                raise ValueError(
                    f"The model's log density does not depend on its latent sites {sites}: their priors are "
                    "flat (ImproperUniform on the whole real line) and no observation involves them, so the "
                    "posterior is improper. Give them a proper prior, or data that depends on them."
                )
            valid = torch.isfinite(log_p)
            (score,) = torch.autograd.grad(log_p[valid].sum(), z, retain_graph=retain_graph, allow_unused=True)
        if score is None:  # no latent enters the log density
            score = torch.zeros_like(z)
        return log_p, score, valid & torch.isfinite(score).all(-1)

    @property
    def full_data_pass_applies(self) -> bool:
        """Whether `full_log_prob_and_score()` can evaluate this density on all the rows:
        exactly one plate is subsampled."""
        return len(self._subsampled_plates) == 1

    @property
    def control_variates_apply(self) -> bool:
        """Whether `set_anchor()` can reduce this density's minibatch noise: one subsampled
        plate, a batching that evaluates every particle on one minibatch ("plate" or "vmap"),
        and no model parameters (their gradient would need the full data's too)."""
        return (
            self.full_data_pass_applies
            and not self._full_data
            and not self.frozen_subsample
            and self.batching in ("plate", "vmap")
            and not self.has_model_params
        )

    def full_log_prob_and_score(self, point: Tensor, args: tuple = (), kwargs: dict | None = None) -> tuple[Tensor, Tensor]:
        """The log density and its score at one point ``(D,)`` on the full data of the
        subsampled plate: the plate's rows in consecutive minibatches of its subsample size
        (the last one shifted back to fit, its rows already counted weighted out), each
        term unscaled from the minibatch to its rows.  Costs one pass over the data."""
        kwargs = {} if kwargs is None else kwargs
        self.setup(args, kwargs)
        ((plate, (size, _)),) = self._subsampled_plates.items()
        total_value = point.new_zeros(())
        total_score = torch.zeros_like(point)
        for indices, weights, scale, first in self._consecutive_minibatches(point):
            with torch.enable_grad():
                z = point.detach().requires_grad_(True)
                value = self._rows_log_prob(z, plate, indices, weights, scale, args, kwargs, first)
                (grad,) = torch.autograd.grad(value, z, allow_unused=True)
            total_value = total_value + value.detach()
            if grad is not None:
                total_score = total_score + grad
        return total_value, total_score

    def on_full_data(self) -> UnconstrainedLogDensity:
        """This density evaluated on every row of its subsampled plate: the same model,
        layout and batching, each call summing consecutive minibatches as
        `full_log_prob_and_score()` does, but for a batch of points (memory bounded by
        `particles_per_chunk()`).  For diagnostics that need the posterior itself, which
        one minibatch's log density is not.  The density must be set up, with
        `full_data_pass_applies`."""
        if self.max_plate_nesting is None or not self.full_data_pass_applies:
            raise ValueError("on_full_data() needs a set-up density with exactly one subsampled plate")
        full = copy.copy(self)
        full._full_data = True
        full.subsampled = False
        full.anchor = None
        full.frozen_subsample = False
        full._subsample = None
        return full

    @property
    def full_data_rows(self) -> int:
        """Rows of the subsampled plate (``0`` without exactly one)."""
        return next(iter(self._subsampled_plates.values()))[0] if self.full_data_pass_applies else 0

    def _consecutive_minibatches(self, like: Tensor) -> Iterable[tuple[Tensor, Tensor, float, bool]]:
        """``(indices, weights, subsample_scale, first)`` of the plate's consecutive
        minibatches, the last one shifted back to fit with its already counted rows
        weighted out."""
        ((_, (size, batch)),) = self._subsampled_plates.items()
        counted = 0
        for start in range(0, size, batch):
            first_row = min(start, size - batch)
            indices = torch.arange(first_row, first_row + batch, device=like.device)
            weights = (indices >= counted).to(like.dtype)  # rows of an earlier minibatch count once
            counted = first_row + batch
            yield indices, weights, size / batch, start == 0

    def _full_data_log_prob(self, latent: Tensor, args: tuple, kwargs: dict) -> Tensor:
        ((plate, _),) = self._subsampled_plates.items()
        total = latent.new_zeros(len(latent))
        for indices, weights, scale, first in self._consecutive_minibatches(latent):
            if self.batching == "plate":
                total = total + self._rows_plated(latent, plate, indices, weights, scale, args, kwargs, first)
            else:
                rows = functools.partial(
                    self._rows_log_prob, plate=plate, indices=indices, weights=weights, subsample_scale=scale,
                    args=args, kwargs=kwargs, with_rest=first,
                )
                values = torch.func.vmap(rows)(latent) if self.batching == "vmap" else torch.stack([rows(z) for z in latent])
                total = total + values
        return total

    def _rows_plated(
        self, latent: Tensor, plate: str, indices: Tensor, weights: Tensor, subsample_scale: float,
        args: tuple, kwargs: dict, with_rest: bool,
    ) -> Tensor:
        """`_rows_log_prob()` for a batch ``(N, D)``, the particles in a plate of their own."""
        num, dim = latent.shape
        rank = self.max_plate_nesting + 1
        values, log_jacobians = self._constrain(latent.reshape((num,) + (1,) * (rank - 1) + (dim,)))
        model = poutine.condition(self.model, data={plate: indices, **values})
        with pyro.plate(PARTICLE_PLATE, num, dim=-rank), poutine.block(hide_types=["sample"]):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        total = latent.new_zeros(num)
        if with_rest:
            for _, term in log_jacobians:
                total = total + sum_per_particle(term, num, rank, latent)
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            term = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
            frames = [frame for frame in site["cond_indep_stack"] if frame.name == plate]
            if not frames:
                if with_rest:
                    total = total + sum_per_particle(term, num, rank, latent)
                continue
            shape = [1] * term.dim()
            shape[frames[0].dim] = len(weights)
            total = total + sum_per_particle(term / subsample_scale * weights.reshape(shape), num, rank, latent)
        return total

    def _rows_log_prob(
        self, z: Tensor, plate: str, indices: Tensor, weights: Tensor, subsample_scale: float,
        args: tuple, kwargs: dict, with_rest: bool,
    ) -> Tensor:
        """The terms of one minibatch's rows (weighted, unscaled to their rows), plus the
        terms outside the plate when ``with_rest``."""
        with pyro.validation_enabled(False):
            values, log_jacobians = self._constrain(z)
            model = poutine.condition(self.model, data={plate: indices, **values})
            with poutine.block(hide_types=["sample"]):
                trace = poutine.trace(model).get_trace(*args, **kwargs)
            total = z.new_zeros(())
            if with_rest:
                total = total + sum((term.sum() for _, term in log_jacobians), z.new_zeros(()))
            for site in trace.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                frames = [frame for frame in site["cond_indep_stack"] if frame.name == plate]
                if not frames:
                    if with_rest:
                        total = total + scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"]).sum()
                    continue
                term = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"]) / subsample_scale
                shape = [1] * term.dim()
                shape[frames[0].dim] = len(weights)
                total = total + (term * weights.reshape(shape)).sum()
        return total

    def set_anchor(self, point: Tensor, args: tuple = (), kwargs: dict | None = None) -> None:
        """Anchor a control variate at ``point`` (``(D,)``): from then on
        `log_prob_and_score()` returns, for a minibatch ``b``,

            log p_b(z) - log p_b(point) + log p(point)

        and its score: still unbiased for the full data's, with a noise that shrinks with
        ``|z - point|`` instead of growing with the rows per minibatch (Baker, Fearnhead,
        Fox & Nemeth 2019).  One pass over the data, with `full_log_prob_and_score()`.
        Does nothing where `control_variates_apply` is false.

        References:
            J. Baker, P. Fearnhead, E. B. Fox and C. Nemeth. "Control variates for stochastic
            gradient MCMC." Statistics and Computing 29, 2019.
        """
        self.setup(args, {} if kwargs is None else kwargs)
        if not self.control_variates_apply:
            return
        point = point.detach()
        log_p, score = self.full_log_prob_and_score(point, args, kwargs)
        self.anchor = Anchor(point, log_p.detach(), score.detach()) if bool(torch.isfinite(score).all()) else None

    def particles_per_chunk(self, args: tuple = (), kwargs: dict | None = None) -> int:
        """How many rows `log_prob_and_score()` evaluates at once: all of them, unless that
        would hold more than `CHUNK_TERMS` likelihood terms of one observed site (with their
        graph) in memory.  A subsampled plate is never split: every part of a batch must see
        the same minibatch, and its minibatch bounds the memory already."""
        self.setup(args, {} if kwargs is None else kwargs)
        if self.largest_observed is None or (self.subsampled and not self.frozen_subsample):
            return _UNBOUNDED
        terms = self.largest_observed[1]
        if self._full_data:  # each point's graph holds every minibatch's terms
            size, batch = next(iter(self._subsampled_plates.values()))
            terms = terms * size // batch
        return max(1, CHUNK_TERMS // max(1, terms))

    def _model(self) -> Callable[..., Any]:
        if self._subsample:
            return poutine.condition(self.model, data=self._subsample)
        if self._subsampled_plates:
            return CheapSubsample()(self.model)
        return self.model

    def _constrain(self, latent: Tensor) -> tuple[dict[str, Tensor], list[tuple[str, Tensor]]]:
        return self.layout.constrain(latent)

    def _trace(self, values: dict[str, Tensor], args: tuple, kwargs: dict) -> poutine.Trace:
        model = poutine.condition(self._model(), data=values)
        # Outer handlers (an SVI step's parameter capture, a user's trace) see the model's
        # parameters, so they can be trained, but none of these internal sample sites.
        with poutine.block(hide_types=["sample"]):
            return poutine.trace(model).get_trace(*args, **kwargs)

    @staticmethod
    def _site_terms(trace: poutine.Trace) -> Iterable[tuple[str, Tensor]]:
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            log_prob = site["fn"].log_prob(site["value"])
            yield name, scale_and_mask(log_prob, site["scale"], site["mask"])

    def _plated(self, latent: Tensor, args: tuple, kwargs: dict) -> Tensor:
        num, dim = latent.shape
        rank = self.max_plate_nesting + 1
        values, log_jacobians = self._constrain(latent.reshape((num,) + (1,) * (rank - 1) + (dim,)))
        with pyro.plate(PARTICLE_PLATE, num, dim=-rank):
            trace = self._trace(values, args, kwargs)
        total = latent.new_zeros(num)
        for _, term in log_jacobians:
            total = total + sum_per_particle(term, num, rank, latent)
        for _, term in self._site_terms(trace):
            total = total + sum_per_particle(term, num, rank, latent)
        return total

    def _vmapped(self, latent: Tensor, args: tuple, kwargs: dict) -> Tensor:
        # randomness="same": a subsampled plate draws one minibatch for all particles.
        return torch.func.vmap(lambda z: self._single(z, args, kwargs), randomness="same")(latent)

    def _looped(self, latent: Tensor, args: tuple, kwargs: dict) -> Tensor:
        return torch.stack([self._single(z, args, kwargs) for z in latent])

    def _single(self, z: Tensor, args: tuple, kwargs: dict) -> Tensor:
        return torch.stack(list(self.site_terms(z, args, kwargs).values())).sum()

    def site_terms(self, z: Tensor, args: tuple = (), kwargs: dict | None = None) -> dict[str, Tensor]:
        """Each site's contribution to the log density at one latent vector ``z`` (``(D,)``).

        Keys are site names for log probabilities and ``"log|det J| of <site>"`` for the
        change of variables.  Used to name the culprit when the density is not finite.
        """
        kwargs = {} if kwargs is None else kwargs
        with pyro.validation_enabled(False):
            values, log_jacobians = self._constrain(z)
            trace = self._trace(values, args, kwargs)
            terms = {f"log|det J| of {name}": term.sum() for name, term in log_jacobians}
            terms.update({name: term.sum() for name, term in self._site_terms(trace)})
        return terms

    def non_finite_sites(self, z: Tensor, args: tuple = (), kwargs: dict | None = None) -> list[str]:
        """Names of the terms (see `site_terms()`) that are NaN or infinite at ``z``."""
        with torch.no_grad():
            terms = self.site_terms(z, args, kwargs)
        return [name for name, value in terms.items() if not torch.isfinite(value)]
