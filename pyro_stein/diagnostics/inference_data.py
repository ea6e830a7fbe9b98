"""Posterior draws of a Pyro model as an ArviZ ``InferenceData``.

One code path for every source of draws (a [`fit()`][pyro_stein.fit] result, any Pyro guide,
``pyro.infer.MCMC``), so that a sampler and NUTS land in the same layout and compare in
one call. The model is run at every draw (batched the way `UnconstrainedLogDensity`
found works for it) to give deterministic sites, per-observation log-likelihoods and
posterior predictive draws.

ArviZ is touched only in `_build_inference_data()`, through ``az.from_dict``; a move to
ArviZ 1.x (whose ``from_dict`` takes one dict of groups) changes that function only.  Running
the model at the draws is the glue layer's
([`pyro_stein.glue.model_outputs`][pyro_stein.glue.model_outputs]); a fit is anything that
satisfies the [`Fit`][pyro_stein.diagnostics.inference_data.Fit] protocol, so this module
never imports `pyro_stein.fitting`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyro.poutine as poutine
import torch
from pyro.infer import MCMC, Predictive
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor

from .._version import __version__
from ..glue.autoguide import is_set_up
from ..glue.density import UnconstrainedLogDensity, layout_of
from ..glue.layout import LatentLayout, feasible_trace
from ..glue.model_outputs import BATCH_SIZE, ModelRunner, SubsamplePlan, mcmc_inputs, plate_dims
from ..guides.protocols import LatentSampler, LocalParticleSampler
from ..ops.caller import warn
from .ksd import ksd_of_latents

__all__ = ["Fit", "from_mcmc", "to_inference_data"]


@runtime_checkable
class Fit(Protocol):
    """What `to_inference_data()` reads of a fit (a [`FitResult`][pyro_stein.FitResult] is one)."""

    model: Callable[..., Any]
    guide: Any
    engine: Any
    args: tuple
    kwargs: dict
    history: dict[str, list[float]]
    num_steps: int
    seconds: float
    ksd: float | None

    def param_scope(self) -> AbstractContextManager[None]:
        """A context in which ``pyro.param`` reads the fit's own parameter values."""
        ...


def to_inference_data(
    source: Any,
    model: Callable[..., Any] | None = None,
    *args: Any,
    num_samples: int = 4000,
    coords: Mapping[str, Sequence[Any]] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    ksd: bool = True,
    **kwargs: Any,
) -> Any:
    """Posterior draws, posterior predictive and log-likelihood of a Pyro model, as ArviZ
    ``InferenceData``.

    Groups:

    * ``posterior``: every latent site (constrained, in the shape the model sees it for one
      draw: no plate padding, no auxiliary guide sites) and every ``pyro.deterministic`` site;
    * ``posterior_predictive``: one replicate of every observed site per draw, drawn from the
      site's distribution at that draw (for models whose observations depend on earlier
      observed data, such as autoregressions, that is the one-step-ahead predictive);
    * ``log_likelihood``: ``log p(y_i | draw)`` per observation (per element of the observed
      site's batch shape), so ``az.loo`` and ``az.waic`` work;
    * ``observed_data``: the observed values; ``constant_data``: the model's other tensor
      arguments, by parameter name;
    * ``sample_stats``: ``lp``, the log joint density of each draw in unconstrained space
      (with the log-Jacobian, like Stan's ``lp__`` and minus Pyro's potential energy),
      ``diverging`` for MCMC; its attributes hold the kernelized Stein discrepancy of the
      draws (``ksd``, see [`pyro_stein.ksd()`][pyro_stein.ksd]) and, for a fit, the engine and its
      training figures.

    Dimensions of sites inside ``pyro.plate`` are named after the plate; the others
    ``<site>_dim_<i>`` (ArviZ's convention). ``dims`` and ``coords`` override and label them.
    A subsampled plate is evaluated on all of its data, so the log-likelihood and the
    predictive cover every observation.

    Draws of a fit or guide are independent, so they form **one chain**. ArviZ's summaries
    work on it, but the MCMC diagnostics mean something else there: R-hat compares chains
    (ArviZ reports ``nan`` for one), and ESS is about the number of draws.
    Neither says whether the sampler matches the posterior; the ``ksd`` attribute does
    (``docs/arviz.md``).

    Args:
        source: a [`FitResult`][pyro_stein.FitResult], a trained guide (an
            [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler], any ``pyro.infer.autoguide`` guide or
            guide function whose sample sites are the model's latents), a finished
            ``pyro.infer.MCMC`` run (its chains are kept), or draws of every latent site,
            ``{site: (num_chains, num_draws, *site_shape)}`` or ``{site: (num_draws,
            *site_shape)}`` (one chain), e.g. a cached reference.
        model: the Pyro model; default the fit's, or the MCMC kernel's.
        *args: the model's positional arguments (the data); default the fit's, or the
            MCMC run's.
        **kwargs: the model's keyword arguments; they cannot be named like this
            function's own.
        num_samples: draws from a fit or guide (ignored for MCMC).
        coords: coordinate values by dimension name, e.g. ``{"school": names}``.
        dims: dimension names by variable, e.g. ``{"beta": ["feature"]}``; they replace the
            default names of that variable's dimensions after ``chain`` and ``draw``.
        ksd: compute the kernelized Stein discrepancy of the draws (``O(n^2 D)``, a second
            or two for 4000 draws).

    Returns:
        ``arviz.InferenceData``.

    Raises:
        TypeError: ``source`` is none of the above.
        ValueError: the guide is not trained, ``num_samples`` is not positive, or ``dims``
            names do not fit a variable's dimensions.
        KeyError: the draws miss a latent site of the model.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> import arviz as az
        >>> import pyro_stein
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> result = pyro_stein.fit(model, torch.randn(30), num_steps=100, progress=False)
        >>> idata = pyro_stein.to_inference_data(result, num_samples=1000)
        >>> sorted(idata.groups())
        ['log_likelihood', 'observed_data', 'posterior', 'posterior_predictive', 'sample_stats']
        >>> bool(az.loo(idata).elpd_loo < 0)
        True
    """
    if isinstance(source, Fit):
        if model is None:
            model = source.model
        if not args and not kwargs:
            args, kwargs = source.args, source.kwargs
        with source.param_scope():  # the model's pyro.param values as fitted, whatever the store holds now
            return _to_inference_data(
                source.guide, model, args, kwargs, num_samples, coords, dims, ksd, _fit_attrs(source)
            )
    return _to_inference_data(source, model, args, kwargs, num_samples, coords, dims, ksd, {})


def _to_inference_data(
    source: Any,
    model: Callable[..., Any] | None,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    coords: Mapping[str, Sequence[Any]] | None,
    dims: Mapping[str, Sequence[str]] | None,
    ksd: bool,
    engine_attrs: dict[str, Any],
) -> Any:
    if isinstance(source, MCMC):
        return from_mcmc(source, *args, model=model, coords=coords, dims=dims, ksd=ksd, **kwargs)
    if isinstance(source, LocalParticleSampler):
        raise NotImplementedError(
            "to_inference_data does not cover local latents (an AutoAmortizedSampler) yet; draw them with "
            "result.sample(n) or guide.sample_posterior(n, *args), or Predictive(model, guide=guide, num_samples=n)"
        )
    if model is None:
        raise TypeError("pass the model: to_inference_data(guide, model, *args, **kwargs)")
    if isinstance(source, Mapping):
        layout = LatentLayout(model, *args, **kwargs)
        draws = _chains_of(source, layout.site_shapes)
        return _assemble(draws, model, layout, args, kwargs, coords=coords, dims=dims, ksd=ksd, stats={}, attrs={})
    if not callable(source):
        raise TypeError(
            f"source must be a FitResult, a Pyro guide or a pyro.infer.MCMC run, got {type(source).__name__}"
        )
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    layout = LatentLayout(model, *args, **kwargs)
    draws = _guide_draws(source, model, layout, num_samples, args, kwargs)
    draws = {name: value.unsqueeze(0) for name, value in draws.items()}  # one chain
    return _assemble(
        draws, model, layout, args, kwargs, coords=coords, dims=dims, ksd=ksd, stats={}, attrs=engine_attrs
    )


def from_mcmc(
    mcmc: MCMC,
    *args: Any,
    model: Callable[..., Any] | None = None,
    coords: Mapping[str, Sequence[Any]] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    ksd: bool = True,
    **kwargs: Any,
) -> Any:
    """A finished ``pyro.infer.MCMC`` run in the layout of `to_inference_data()`, chains
    kept, with per-draw ``diverging`` and each chain's acceptance rate in ``sample_stats``.

    Args:
        mcmc: the run, after ``mcmc.run(...)``.
        *args: the model's positional arguments; default those of ``mcmc.run``.
        model: default the kernel's model.
        coords: as in `to_inference_data()`.
        dims: as in `to_inference_data()`.
        ksd: as in `to_inference_data()`.
        **kwargs: the model's keyword arguments; default those of ``mcmc.run``.

    Returns:
        ``arviz.InferenceData``.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC, NUTS
        >>> import pyro_stein
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> mcmc = MCMC(NUTS(model), num_samples=100, warmup_steps=100, disable_progbar=True)
        >>> mcmc.run(torch.randn(30))
        >>> nuts = pyro_stein.from_mcmc(mcmc)
        >>> nuts.posterior["mu"].shape, "diverging" in nuts.sample_stats
        ((1, 100), True)
    """
    if not isinstance(mcmc, MCMC):
        raise TypeError(f"from_mcmc needs a pyro.infer.MCMC run, got {type(mcmc).__name__}")
    run_model, run_args, run_kwargs = mcmc_inputs(mcmc)
    model = run_model if model is None else model
    if model is None:
        raise ValueError("the MCMC kernel has no model (it was built from a potential_fn); pass model=")
    if not args and not kwargs:
        args, kwargs = run_args, run_kwargs
    samples = mcmc.get_samples(group_by_chain=True)
    if not samples:
        raise ValueError("the MCMC run has no samples: call mcmc.run(...) first")
    layout = LatentLayout(model, *args, **kwargs)
    draws = {name: samples[name] for name in layout.site_shapes if name in samples}
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    diagnostics = mcmc.diagnostics()
    diverging = np.zeros((num_chains, num_draws), dtype=bool)
    for chain, indices in enumerate(diagnostics.get("divergences", {}).values()):
        diverging[chain, list(indices)] = True
    attrs = {"sampler": type(mcmc.kernel).__name__}
    for chain, rate in enumerate(diagnostics.get("acceptance rate", {}).values()):
        attrs[f"acceptance_rate_chain_{chain}"] = float(rate)
    return _assemble(
        draws, model, layout, args, kwargs, coords=coords, dims=dims, ksd=ksd,
        stats={"diverging": diverging}, attrs=attrs,
    )


# --------------------------------------------------------------------------- draws
def _guide_draws(
    guide: Callable[..., Any], model: Callable[..., Any], layout: LatentLayout, num: int, args: tuple, kwargs: dict
) -> dict[str, Tensor]:
    """``{latent site: (num, *site_shape)}`` from a trained guide."""
    if isinstance(guide, AutoContinuous):
        if not is_set_up(guide):
            raise ValueError("the guide has not been trained (its prototype trace is not set up); fit it first")
        with torch.no_grad(), poutine.block():
            if isinstance(guide, LatentSampler):
                latent = guide.sample_latent_batch(num)
            else:
                latent = guide.get_posterior(*args, **kwargs).sample((num,))
            return {name: value.detach() for name, value in layout_of(guide).unpack(latent).items()}
    shapes = layout.site_shapes
    with torch.no_grad(), poutine.block():
        try:
            raw = Predictive(guide, num_samples=num, parallel=True)(*args, **kwargs)
        except Exception as error:  # a guide that does not broadcast over a leading draw dimension
            warn(
                f"the guide cannot draw {num} samples at once (Predictive(parallel=True) raised "
                f"{type(error).__name__}: {error}); drawing them one at a time (correct, slower)",
                RuntimeWarning,
            )
            raw = Predictive(guide, num_samples=num, parallel=False)(*args, **kwargs)
    missing = [name for name in shapes if name not in raw]
    if missing:
        raise KeyError(f"the guide draws no value for the model's latent sites {missing}")
    return {name: raw[name].reshape((num,) + shape) for name, shape in shapes.items()}


def _chains_of(draws: Mapping[str, Any], shapes: dict[str, torch.Size]) -> dict[str, Tensor]:
    """User-given draws as ``{site: (chains, draws, *shape)}``; a leading chain dim is
    recognised by rank (one more than ``(draws, *shape)``)."""
    result = {}
    for name, shape in shapes.items():
        if name not in draws:
            raise KeyError(f"no draws for latent site {name!r}; the model's latent sites are {list(shapes)}")
        value = torch.as_tensor(np.asarray(draws[name]) if not isinstance(draws[name], Tensor) else draws[name])
        if value.dim() == len(shape) + 1:
            value = value.unsqueeze(0)
        if value.dim() != len(shape) + 2 or value.shape[2:] != shape:
            raise ValueError(
                f"draws of site {name!r} have shape {tuple(value.shape)}; expected (num_chains, num_draws, "
                f"*{tuple(shape)}) or (num_draws, *{tuple(shape)})"
            )
        result[name] = value
    chains_draws = {tuple(value.shape[:2]) for value in result.values()}
    if len(chains_draws) > 1:
        raise ValueError(f"the sites' draws disagree on (num_chains, num_draws): {sorted(chains_draws)}")
    return result


# ------------------------------------------------------------------ assembly
def _assemble(
    draws: dict[str, Tensor],
    model: Callable[..., Any],
    layout: LatentLayout,
    args: tuple,
    kwargs: dict,
    *,
    coords: Mapping[str, Sequence[Any]] | None,
    dims: Mapping[str, Sequence[str]] | None,
    ksd: bool,
    stats: dict[str, np.ndarray],
    attrs: dict[str, Any],
) -> Any:
    """Run the model at every draw (``{site: (chains, draws, *shape)}``) and build the groups."""
    latents = list(layout.site_shapes)
    missing = [name for name in latents if name not in draws]
    if missing:
        raise KeyError(f"no draws for the model's latent sites {missing}")
    num_chains, num_draws = draws[latents[0]].shape[:2]
    flat = {name: draws[name].reshape((num_chains * num_draws,) + draws[name].shape[2:]).to(layout.dtype) for name in latents}

    plan = SubsamplePlan(feasible_trace(model, args, kwargs), latents)
    packed = layout.pack(flat)
    chunk_outputs, traces, lp, density, runner = [], [], None, None, None
    for chunk_model in plan.models(model):
        trace = feasible_trace(chunk_model, args, kwargs)
        if density is None:
            density = UnconstrainedLogDensity(chunk_model, layout)
            density.setup(args, kwargs)
            batching = density.batching
        runner = ModelRunner(chunk_model, trace, latents, batching, density.max_plate_nesting, layout.dtype, args, kwargs)
        with torch.no_grad():
            chunk_outputs.append(runner(flat))
        batching = runner.batching
        traces.append(trace)
        if lp is None:
            # The runner checked batching on draws spread over the whole set, the density only
            # near its starting point: where they disagree, the density runs per draw too.
            density.batching = "loop" if batching == "loop" else density.batching
            with torch.no_grad():
                lp = torch.cat([density(block, args, kwargs) for block in packed.split(BATCH_SIZE)])
    trace = traces[0]
    outputs = {}
    for key in chunk_outputs[0]:
        axis = plan.axis(trace, key.split("/", 1)[1], chunk_outputs[0][key].dim() - 1)
        outputs[key] = plan.join([chunk[key] for chunk in chunk_outputs], axis, draws=True)
    observed_data = {}
    for name in runner.observed:
        observed_data[name], axis = plan.join_observed(traces, name)
        if axis is not None:
            # lp was computed on the first minibatch, scaled up: replace that estimate of
            # this site's log-likelihood by its value on all of the data.
            first = chunk_outputs[0]
            minibatch = first[f"log_likelihood/{name}"] * first[f"mask/{name}"]
            full = outputs[f"log_likelihood/{name}"] * outputs[f"mask/{name}"]
            lp = lp - plan.scale * minibatch.reshape(len(lp), -1).sum(-1)
            lp = lp + full.reshape(len(lp), -1).sum(-1)

    def per_chain(value: Tensor) -> np.ndarray:
        return value.detach().reshape((num_chains, num_draws) + value.shape[1:]).cpu().numpy()

    posterior = {name: per_chain(flat[name]) for name in latents}
    posterior.update({name: per_chain(outputs[f"deterministic/{name}"]) for name in runner.deterministic})
    groups: dict[str, dict[str, np.ndarray]] = {"posterior": posterior}
    masked_dims: dict[str, tuple[str, np.ndarray]] = {}
    if runner.observed:
        groups["posterior_predictive"] = {name: per_chain(outputs[f"predictive/{name}"]) for name in runner.observed}
        groups["log_likelihood"] = {}
        for name in runner.observed:
            log_lik, mask_dim = _unmasked(name, outputs[f"log_likelihood/{name}"], outputs[f"mask/{name}"])
            if log_lik is None:
                continue
            groups["log_likelihood"][name] = per_chain(log_lik)
            if mask_dim is not None:
                masked_dims[name] = mask_dim
        groups["observed_data"] = {name: value.detach().cpu().numpy() for name, value in observed_data.items()}
    constant = _constant_data(model, args, kwargs, list(observed_data.values()))
    if constant:
        groups["constant_data"] = constant
    groups["sample_stats"] = {"lp": per_chain(lp), **stats}

    stats_attrs = dict(attrs)
    if ksd:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an infinite figure speaks for itself
            stats_attrs["ksd"] = ksd_of_latents(density, packed, args, kwargs)
    default_dims = plate_dims(trace, latents + runner.deterministic + runner.observed)
    return _build_inference_data(groups, default_dims, dims or {}, coords or {}, stats_attrs, masked_dims)


def _unmasked(name: str, log_lik: Tensor, mask: Tensor) -> tuple[Tensor | None, tuple[str, np.ndarray] | None]:
    """The log-likelihood of the observations a mask keeps, ``(n, K)`` over a dimension
    ``<site>_observed`` labelled by their flat indices; ``(None, None)`` if it keeps none."""
    keep = mask[0] > 0.5
    if not bool(torch.equal(mask > 0.5, keep.expand_as(mask))):
        raise ValueError(f"the mask of observed site {name!r} differs between draws; to_inference_data needs a fixed one")
    if bool(keep.all()):
        return log_lik, None
    if not bool(keep.any()):
        return None, None
    indices = torch.nonzero(keep.reshape(-1)).reshape(-1)
    flat = log_lik.reshape(len(log_lik), -1)[:, indices]
    return flat, (f"{name}_observed", indices.cpu().numpy())


def _constant_data(model: Callable[..., Any], args: tuple, kwargs: dict, observed: Sequence[Tensor]) -> dict[str, np.ndarray]:
    """The model's tensor arguments that are not observed data, by parameter name."""
    function = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        bound = inspect.signature(function).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):  # no signature to bind to: number the arguments
        bound = {f"arg{i}": value for i, value in enumerate(args)} | dict(kwargs)
    constant = {}
    for name, value in bound.items():
        if isinstance(value, torch.Tensor) and not any(_same_data(value, obs) for obs in observed):
            constant[name] = value.detach().cpu().numpy()
    return constant


def _same_data(value: Tensor, observed: Tensor) -> bool:
    # A subsampled model indexes its data (y[ind]): a copy, equal to the argument.
    return value is observed or (value.shape == observed.shape and bool(torch.equal(value, observed)))


def _fit_attrs(result: Any) -> dict[str, Any]:
    """Scalar, netCDF-storable facts about a fit."""
    attrs: dict[str, Any] = {
        "engine": type(result.engine).__name__,
        "num_steps": int(result.num_steps),
        "training_seconds": float(result.seconds),
    }
    if result.ksd is not None:
        attrs["fit_ksd"] = float(result.ksd)
    for name, values in result.history.items():
        if values:
            tail = values[-min(len(values), 100) :]
            attrs[f"{name}_last100_mean"] = float(np.mean(tail))
    return attrs


def _build_inference_data(
    groups: dict[str, dict[str, np.ndarray]],
    default_dims: dict[str, list[str]],
    dims: Mapping[str, Sequence[str]],
    coords: Mapping[str, Sequence[Any]],
    stats_attrs: dict[str, Any],
    masked_dims: dict[str, tuple[str, np.ndarray]],
) -> Any:
    """The only place that calls ArviZ."""
    import arviz as az  # slow to import; only needed here

    variables = {name for group in groups.values() for name in group}
    unknown = sorted(set(dims) - variables)
    if unknown:
        raise ValueError(f"dims names variables {unknown} that are not in the model's output; they are {sorted(variables)}")
    merged = {name: list(dims.get(name, names)) for name, names in default_dims.items()}
    merged.update({name: list(names) for name, names in dims.items() if name not in merged})
    for group, variables in groups.items():
        for name, value in variables.items():
            names = merged.get(name)
            chain_draw = 0 if group in ("observed_data", "constant_data") else 2
            if names is not None and group != "log_likelihood" and len(names) != value.ndim - chain_draw:
                raise ValueError(
                    f"dims for {name!r} name {len(names)} dimensions ({names}), but it has "
                    f"{value.ndim - chain_draw}: shape {value.shape[chain_draw:]}"
                )
    # A per-observation log-likelihood drops the event dims of its site: it gets a prefix.
    likelihood_dims = {
        name: merged[name][: value.ndim - 2] for name, value in groups.get("log_likelihood", {}).items() if name in merged
    }
    likelihood_coords = dict(coords)
    for name, (dim, indices) in masked_dims.items():  # only the observations the mask keeps
        likelihood_dims[name] = [dim]
        likelihood_coords[dim] = list(indices)
    attrs = {"inference_library": "pyro_stein", "inference_library_version": __version__}
    other = {group: variables for group, variables in groups.items() if group != "log_likelihood"}
    used = {dim for names in merged.values() for dim in names}
    coords = {dim: list(values) for dim, values in coords.items() if dim in used}
    idata = az.from_dict(**other, coords=coords, dims=merged, attrs=attrs)
    if groups.get("log_likelihood"):
        used = {dim for names in likelihood_dims.values() for dim in names}
        likelihood = az.from_dict(
            log_likelihood=groups["log_likelihood"],
            coords={dim: values for dim, values in likelihood_coords.items() if dim in used},
            dims=likelihood_dims,
            attrs=attrs,
        )
        idata.extend(likelihood)
    idata.sample_stats.attrs.update(stats_attrs)
    return idata
