"""What a run on a Pyro model depends on, as ``{what: description}``: the model's structure
(every sample site's role, distribution, shapes and support, every ``pyro.param``'s shape
and constraint, every plate) and its data arguments (by parameter name, tensors by a
SHA-256 of their contents; see [`pyro_stein.ops.digest`][pyro_stein.ops.digest]).

A checkpoint records these so that resuming refuses a run on another model or other data,
naming the entry that differs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pyro
import pyro.util
from pyro.poutine.util import site_is_subsample

from ..ops.digest import describe, digest_of_bytes
from .layout import feasible_trace

__all__ = ["argument_fingerprint", "model_fingerprint"]


def _family(fn: Any) -> str:
    """The distribution's family under Pyro's wrappers (``Independent``, ``Expanded``,
    ``Masked``), e.g. ``'Normal'`` for ``Normal(0, 1).expand([3]).to_event(1)``."""
    while hasattr(fn, "base_dist") and type(fn).__name__ in {"Independent", "ExpandedDistribution", "MaskedDistribution"}:
        fn = fn.base_dist
    return type(fn).__name__


def _model_name(model: Callable[..., Any]) -> str:
    if isinstance(model, functools.partial):
        return f"partial of {_model_name(model.func)}"
    name = getattr(model, "__qualname__", None) or type(model).__qualname__
    return f"{getattr(model, '__module__', None) or type(model).__module__}.{name}"


def model_fingerprint(model: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, str]:
    """The structure of ``model`` on these arguments, from one run at feasible values.

    The run draws nothing from the caller's generators (their state is restored after it)
    and leaves the parameter store as it found it.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> model_fingerprint(model, (torch.zeros(3),), {})
        {'model': '...model', "site 'mu'": 'latent Normal, batch (), event (), support Real(), parameters sha256 ...', "site 'y'": 'observed Normal, batch (3,), event (), support Real(), parameters and values sha256 ...', "plate 'data'": 'size 3, dim -1'}
    """
    generators = pyro.util.get_rng_state()
    try:
        # A fixed seed: a model that draws (a subsample, a random initial parameter) traces
        # the same in every process.
        pyro.set_rng_seed(0)
        with pyro.get_param_store().scope():
            trace = feasible_trace(model, args, kwargs)
    finally:
        pyro.util.set_rng_state(generators)
    fingerprint = {"model": _model_name(model)}
    plates: dict[str, str] = {}
    for site_name, site in trace.nodes.items():
        if site["type"] == "param":
            constraint = site["kwargs"].get("constraint")
            value = site["value"]
            fingerprint[f"param {site_name!r}"] = f"shape {tuple(value.shape)}, constraint {constraint}"
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        fn = site["fn"]
        role = "observed" if site["is_observed"] else "latent"
        # The distribution's parameters (and the observed values) at the feasible point: a
        # changed prior, or data the model holds itself (a closure, a partial), shows here.
        contents = describe(vars(fn)) + (describe(site["value"]) if site["is_observed"] else "")
        fingerprint[f"site {site_name!r}"] = (
            f"{role} {_family(fn)}, batch {tuple(fn.batch_shape)}, event {tuple(fn.event_shape)}, support {fn.support}, "
            f"{'parameters and values' if site['is_observed'] else 'parameters'} sha256 {digest_of_bytes(contents.encode())}"
        )
        for frame in site["cond_indep_stack"]:
            subsample = "" if frame.full_size in (None, frame.size) else f", subsample {frame.size}"
            plates[f"plate {frame.name!r}"] = f"size {frame.full_size or frame.size}{subsample}, dim {frame.dim}"
    return {**fingerprint, **plates}


def argument_fingerprint(model: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, str]:
    """The model's arguments by parameter name (``argument 0``, ... where the signature
    does not name them), each described by `pyro_stein.ops.digest.describe`.

    Example:
        >>> import torch
        >>> def model(x, y=None):
        ...     pass
        >>> argument_fingerprint(model, (torch.zeros(2),), {"y": None})
        {"argument 'x'": 'tensor float32 (2,) sha256 ...', "argument 'y'": 'None'}
    """
    names: list[str] = []
    try:
        parameters = list(inspect.signature(model).parameters.values())
        names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # no signature to read: number the arguments
        pass
    fingerprint = {}
    for index, value in enumerate(args):
        label = names[index] if index < len(names) else index
        fingerprint[f"argument {label!r}"] = describe(value)
    for key, value in kwargs.items():
        fingerprint[f"argument {key!r}"] = describe(value)
    return fingerprint
