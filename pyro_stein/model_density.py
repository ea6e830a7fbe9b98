"""A Pyro model's log joint in unconstrained space, for a whole batch of latent vectors.

The latent vector layout is that of a `pyro.infer.autoguide.AutoContinuous` guide:
every latent site, mapped to unconstrained space by ``biject_to(site["fn"].support)``,
flattened and concatenated in the order of the guide's prototype trace.  For a batch
``z`` of shape ``(N, D)`` the density is

    log p(T(z_i)) + log |det dT/dz (z_i)|,    i = 1..N,

computed for the whole batch at once.  Three ways of batching, tried in this order on the
first call and each checked against a per-particle evaluation:

``"plate"``
    the model runs once inside an outer "particle" plate, placed left of all the model's
    own batch dimensions: Pyro's own vectorization, for models whose tensors broadcast
    over a leading batch dimension;
``"vmap"``
    ``torch.func.vmap`` over a one-particle evaluation, for models written for a single
    draw (say ``X @ beta``); as fast, and no code changes;
``"loop"``
    one model run per particle, with a warning: correct for any model, but slow.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask, sum_rightmost
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import biject_to

from .initialization import init_to_feasible

__all__ = [
    "BATCHING",
    "PARTICLE_PLATE",
    "GuideModelMismatch",
    "LatentLayout",
    "UnconstrainedLogDensity",
    "check_model_args",
    "constrained_batch",
    "latent_dtype",
    "max_plate_nesting",
]

PARTICLE_PLATE = "_pyro_stein_particles"
BATCHING = ("auto", "plate", "vmap", "loop")


class GuideModelMismatch(ValueError):
    """The guide's latent sites do not match the model's."""


def check_model_args(args: Iterable[Any], kwargs: dict[str, Any]) -> None:
    """Fail early on model arguments that Pyro models cannot use as data.

    NumPy arrays (and pandas objects, which carry ``__array__``) are the usual mistake:
    torch operations on them fail deep inside the model, or silently cast.

    Raises:
        TypeError: naming the offending argument.
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


def constrained_batch(guide: AutoContinuous, latent: Tensor) -> dict[str, Tensor]:
    """Unconstrained latent vectors ``(n, D)``, laid out like ``guide``'s, as constrained
    values ``{site: (n, *site_shape)}`` (the site shape as the model uses it, no plate
    padding).  ``guide``'s prototype trace must be set up."""
    num = latent.shape[0]
    # _unpack_latent aligns batch dims to the right: pad them to the plates' depth.
    depth = max_plate_nesting(guide.prototype_trace)
    padded = latent.reshape((num,) + (1,) * depth + (guide.latent_dim,))
    return {
        site["name"]: biject_to(site["fn"].support)(value).reshape((num,) + site["value"].shape)
        for site, value in guide._unpack_latent(padded)
    }


def _observed_sites_are_tensors(trace: poutine.Trace) -> None:
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and site["is_observed"] and not site_is_subsample(site):
            if not isinstance(site["value"], torch.Tensor):
                raise TypeError(
                    f"Observed site {name!r} got obs of type {type(site['value']).__name__}; "
                    "Pyro needs a torch.Tensor there (torch.as_tensor(...))."
                )


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


def _agree(batched: Tensor, reference: Tensor) -> bool:
    if batched.shape != reference.shape:
        return False
    finite = torch.isfinite(reference)
    if not torch.equal(finite, torch.isfinite(batched)):
        return False
    if not finite.any():
        return True
    rtol = 1e-8 if reference.dtype == torch.float64 else 1e-4
    scale = 1.0 + reference[finite].abs().max().item()
    return torch.allclose(batched[finite], reference[finite], rtol=rtol, atol=rtol * scale)


def _sum_per_particle(value: Tensor | float, num_particles: int, batch_rank: int, like: Tensor) -> Tensor:
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


class UnconstrainedLogDensity:
    """Batched log joint of ``model`` on the unconstrained latent space of ``guide``.

    Args:
        model: the Pyro model.
        guide: an `AutoContinuous` guide whose prototype trace
            is already set up; it defines the latent layout.
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
        >>> density = UnconstrainedLogDensity(model, guide)          # doctest: +SKIP
        >>> log_p = density(torch.zeros(10, guide.latent_dim), (x, y), {})  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Callable[..., Any],
        guide: AutoContinuous,
        *,
        batching: str = "auto",
        frozen_subsample: bool = False,
    ) -> None:
        if guide.prototype_trace is None:
            raise ValueError("set up the guide (call it once) before building its log density")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        self.model = model
        self.guide = guide
        self.batching = batching
        self.frozen_subsample = frozen_subsample
        self._subsample: dict[str, Tensor] | None = None
        self.max_plate_nesting: int | None = None
        self.has_model_params = False
        #: Whether some plate evaluates a minibatch (``subsample_size`` below its size).
        self.subsampled = False

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
        with poutine.block(), pyro.validation_enabled(False):
            model_trace = poutine.trace(InitMessenger(init_to_feasible)(self.model)).get_trace(*args, **kwargs)
        _observed_sites_are_tensors(model_trace)
        self._check_sites(model_trace)
        self.has_model_params = any(s["type"] == "param" for s in model_trace.nodes.values())
        subsample = {
            name: site["value"]
            for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and site_is_subsample(site)
        }
        self.max_plate_nesting = max_plate_nesting(model_trace)
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
        guide_sites = dict(self.guide.prototype_trace.iter_stochastic_nodes())
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
        z0 = self.guide._init_loc().detach()
        generator = torch.Generator(device="cpu").manual_seed(0)
        jitter = torch.randn((3,) + z0.shape, generator=generator).to(z0)
        probe = z0 + 0.1 * jitter
        with pyro.validation_enabled(False):
            reference = self._looped(probe, args, kwargs)
        reasons = []
        for batching, evaluate in (("plate", self._plated), ("vmap", self._vmapped)):
            try:
                with pyro.validation_enabled(False):
                    batched = evaluate(probe, args, kwargs)
            except Exception as error:  # any failure of the model's own code when batched
                reasons.append(f"{batching}: it raised {type(error).__name__}: {error}")
                continue
            if _agree(batched, reference):
                return batching
            reasons.append(
                f"{batching}: its log density over a batch of particles differs from one "
                f"particle at a time ({batched.tolist()} vs {reference.tolist()})"
            )
        warnings.warn(
            "The model cannot be evaluated for all particles at once ("
            + "; ".join(reasons)
            + "). Falling back to a per-particle loop, which is correct but slower. A model "
            "whose tensors broadcast over a leading batch dimension, and that has no "
            "Python control flow on latent values, runs batched.",
            RuntimeWarning,
            stacklevel=3,
        )
        return "loop"

    # ----------------------------------------------------------- evaluation
    def __call__(self, latent: Tensor, args: tuple = (), kwargs: dict | None = None) -> Tensor:
        """Log joint plus log-Jacobian at each row of ``latent`` (``(N, D) -> (N,)``)."""
        kwargs = {} if kwargs is None else kwargs
        if latent.dim() != 2 or latent.shape[-1] != self.guide.latent_dim:
            raise ValueError(
                f"latent must have shape (N, {self.guide.latent_dim}), got {tuple(latent.shape)}"
            )
        self.setup(args, kwargs)
        evaluate = {"plate": self._plated, "vmap": self._vmapped, "loop": self._looped}[self.batching]
        with pyro.validation_enabled(False):
            return evaluate(latent, args, kwargs)

    def log_prob_and_score(
        self, latent: Tensor, args: tuple = (), kwargs: dict | None = None, *, retain_graph: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Log density, its gradient (the score) and validity at each row of ``latent``.

        Args:
            latent: ``(N, D)``.
            retain_graph: keep the log density's graph, e.g. to back-propagate it into the
                model's parameters afterwards.

        Returns:
            ``(log_p, score, valid)`` of shapes ``(N,)``, ``(N, D)``, ``(N,)``: ``valid`` marks
            the rows where both the log density and the score are finite; the score of the
            other rows is not meaningful.
        """
        with torch.enable_grad():
            z = latent.detach().requires_grad_(True)
            log_p = self(z, args, kwargs)
            valid = torch.isfinite(log_p)
            (score,) = torch.autograd.grad(log_p[valid].sum(), z, retain_graph=retain_graph, allow_unused=True)
        if score is None:  # no latent enters the log density
            score = torch.zeros_like(z)
        return log_p, score, valid & torch.isfinite(score).all(-1)

    def _model(self) -> Callable[..., Any]:
        if self._subsample:
            return poutine.condition(self.model, data=self._subsample)
        return self.model

    def _constrain(self, latent: Tensor) -> tuple[dict[str, Tensor], list[tuple[str, Tensor]]]:
        """Unpack a latent batch into constrained site values and log-Jacobian terms."""
        values: dict[str, Tensor] = {}
        log_jacobians: list[tuple[str, Tensor]] = []
        for site, unconstrained in self.guide._unpack_latent(latent):
            transform = biject_to(site["fn"].support)
            value = transform(unconstrained)
            log_jac = transform.log_abs_det_jacobian(unconstrained, value)
            log_jac = sum_rightmost(log_jac, log_jac.dim() - value.dim() + site["fn"].event_dim)
            values[site["name"]] = value
            log_jacobians.append((site["name"], log_jac))
        return values, log_jacobians

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
            total = total + _sum_per_particle(term, num, rank, latent)
        for _, term in self._site_terms(trace):
            total = total + _sum_per_particle(term, num, rank, latent)
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


class LatentLayout(AutoContinuous):
    """The unconstrained latent layout of a model, with no distribution attached: what
    `UnconstrainedLogDensity` needs in order to judge draws that came from
    elsewhere (another engine, MCMC).

    Args:
        model: the Pyro model.
        *args: its positional arguments (they fix the latent sites' shapes).
        **kwargs: its keyword arguments.

    Example:
        >>> layout = LatentLayout(model, x, y)                           # doctest: +SKIP
        >>> z = layout.pack(mcmc.get_samples())                         # doctest: +SKIP
    """

    def __init__(self, model: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(model, init_loc_fn=init_to_feasible)
        with poutine.block(), pyro.validation_enabled(False):
            self._setup_prototype(*args, **kwargs)
        self.dtype = latent_dtype(self.prototype_trace, args, kwargs)

    def get_posterior(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("LatentLayout only lays out latent values; it is not a guide")

    @property
    def site_shapes(self) -> dict[str, torch.Size]:
        """Each latent site's shape in one (unbatched) run of the model."""
        return {name: site["value"].shape for name, site in self.prototype_trace.iter_stochastic_nodes()}

    def unpack(self, latent: Tensor) -> dict[str, Tensor]:
        """Unconstrained ``(n, D)`` -> constrained ``{site: (n, *site_shape)}``; the inverse
        of `pack()`."""
        return constrained_batch(self, latent)

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
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if name not in values:
                raise KeyError(
                    f"no draws for latent site {name!r}; the model's latent sites are "
                    f"{list(self._unconstrained_shapes)}"
                )
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
                    f"{int((~inside).sum())} draws of site {name!r} lie outside its support "
                    f"{site['fn'].support}"
                )
            unconstrained = biject_to(site["fn"].support).inv(constrained)
            blocks.append(unconstrained.reshape(count, -1))
        if not blocks:
            raise ValueError("the model has no latent sites")
        return torch.cat(blocks, -1)
