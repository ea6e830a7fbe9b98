"""A Pyro model run at a batch of latent draws: deterministic sites, per-observation
log-likelihoods and posterior predictive replicates per draw, and how to cover every
observation of a subsampled plate.  What the ArviZ adapter
([`to_inference_data`][pyro_stein.to_inference_data]) puts into its
groups; it reads model traces, so it lives in the Pyro-glue layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import MCMC
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from .batching import choose_batching
from .layout import PARTICLE_PLATE

__all__ = ["BATCH_SIZE", "ModelRunner", "SubsamplePlan", "mcmc_inputs", "plate_dims"]

#: Draws evaluated by one batched run of the model (bounds the memory of a run).
BATCH_SIZE = 1000


def mcmc_inputs(mcmc: MCMC) -> tuple[Callable[..., Any] | None, tuple, dict]:
    """The model of a finished ``pyro.infer.MCMC`` run's kernel (``None`` for a kernel
    built from a potential function) and the arguments of its last ``run`` (MCMC keeps
    them; ArviZ's own ``from_pyro`` reads them too)."""
    return getattr(mcmc.kernel, "model", None), getattr(mcmc, "_args", ()), getattr(mcmc, "_kwargs", {})


class SubsamplePlan:
    """How to cover every observation of a model with a subsampled plate.

    ``pyro.plate(..., subsample_size=m)`` refuses an index set of another size, so the data
    are evaluated in consecutive minibatches of ``m`` indices (the last one ends at the last
    index and keeps only the indices not seen before), and the outputs are joined along the
    plate's dimension.
    """

    def __init__(self, trace: poutine.Trace, latents: Sequence[str]) -> None:
        subsampled = [
            (name, site) for name, site in trace.nodes.items() if site["type"] == "sample" and site_is_subsample(site)
            and site["fn"].subsample_size is not None and site["fn"].subsample_size < site["fn"].size
        ]
        if len(subsampled) > 1:
            raise ValueError(
                f"the model subsamples {len(subsampled)} plates ({[name for name, _ in subsampled]}); "
                "to_inference_data covers every observation of one subsampled plate only"
            )
        self.plate: str | None = None
        self.chunks: list[tuple[Tensor, slice]] = []
        if not subsampled:
            return
        self.plate, site = subsampled[0]
        size, batch = site["fn"].size, site["fn"].subsample_size
        local = [name for name in latents if any(f.name == self.plate for f in trace.nodes[name]["cond_indep_stack"])]
        if local:
            raise ValueError(
                f"latent sites {local} lie in the subsampled plate {self.plate!r}: their draws exist for "
                "one minibatch only, so there is no posterior over all of the data to report"
            )
        self.scale = size / batch
        for start in range(0, size, batch):
            first = min(start, size - batch)
            indices = torch.arange(first, first + batch, device=site["value"].device)
            self.chunks.append((indices, slice(start - first, batch)))

    def models(self, model: Callable[..., Any]) -> list[Callable[..., Any]]:
        if self.plate is None:
            return [model]
        return [poutine.condition(model, data={self.plate: indices}) for indices, _ in self.chunks]

    def axis(self, trace: poutine.Trace, name: str, rank: int) -> int | None:
        """The subsampled plate's axis in a value of ``rank`` dims whose batch dims are
        those of site ``name``, right-aligned as its plates place them; ``None`` if the
        site is not in the plate."""
        site = trace.nodes[name]
        for frame in site["cond_indep_stack"]:
            if frame.name == self.plate and frame.dim is not None:
                return _batch_rank(site, rank) + frame.dim
        return None

    def join_observed(self, traces: Sequence[poutine.Trace], name: str) -> tuple[Tensor, int | None]:
        """The observed values of site ``name`` over all chunks' traces, and the plate's
        axis in them (``None``: not subsampled)."""
        axis = self.axis(traces[0], name, traces[0].nodes[name]["value"].dim())
        return self.join([trace.nodes[name]["value"] for trace in traces], axis, draws=False), axis

    def join(self, parts: list[Tensor], axis: int | None, draws: bool) -> Tensor:
        """Join one output over the chunks (``draws``: a leading draw dim is present)."""
        if axis is None:
            return parts[0]
        axis += int(draws)
        kept = [part.narrow(axis, keep.start, keep.stop - keep.start) for part, (_, keep) in zip(parts, self.chunks)]
        return torch.cat(kept, axis)


def _is_deterministic(site: dict) -> bool:
    return site["type"] == "sample" and bool(site["infer"].get("_deterministic", False))


def _observed_names(trace: poutine.Trace, latents: Sequence[str]) -> list[str]:
    """Observed sites with data: not latents, subsample indices, deterministics or factors."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and site["is_observed"]
        and name not in latents
        and not site_is_subsample(site)
        and not _is_deterministic(site)
        and site["value"].numel() > 0  # pyro.factor's Unit sites carry no data
    ]


def _outputs_of_trace(trace: poutine.Trace, deterministic: Sequence[str], observed: Sequence[str]) -> dict[str, Tensor]:
    outputs = {f"deterministic/{name}": trace.nodes[name]["value"] for name in deterministic}
    for name in observed:
        fn, value = trace.nodes[name]["fn"], trace.nodes[name]["value"]
        log_prob = fn.log_prob(value)
        outputs[f"log_likelihood/{name}"] = log_prob
        # poutine.mask and obs_mask leave observations out of the model's density: they are
        # no data for LOO either. Kept as 0/1 values so batched and looped runs compare.
        mask = trace.nodes[name]["mask"]
        keep = torch.as_tensor(True if mask is None else mask, device=log_prob.device)
        outputs[f"mask/{name}"] = keep.to(log_prob.dtype).expand(log_prob.shape)
        outputs[f"predictive/{name}"] = fn.sample()
    return outputs


class ModelRunner:
    """Runs the model conditioned on a batch of latent draws and collects, per draw,
    deterministic values, per-observation log-likelihoods and a predictive replicate."""

    def __init__(
        self,
        model: Callable[..., Any],
        trace: poutine.Trace,
        latents: Sequence[str],
        batching: str,
        max_plate_nesting: int,
        dtype: torch.dtype,
        args: tuple,
        kwargs: dict,
    ) -> None:
        self.model, self.args, self.kwargs = model, args, kwargs
        self.latents = list(latents)
        self.deterministic = [name for name, site in trace.nodes.items() if _is_deterministic(site)]
        self.observed = _observed_names(trace, self.latents)
        self.batching = batching
        self.rank = max_plate_nesting + 1
        # Plate padding of each latent under the particle plate: Predictive's rule.
        self.padding = {name: self.rank - 1 - len(trace.nodes[name]["fn"].batch_shape) for name in self.latents}
        self.shapes = {key: value.shape for key, value in self._single(self._first(trace, dtype)).items()}

    def _first(self, trace: poutine.Trace, dtype: torch.dtype) -> dict[str, Tensor]:
        # In the draws' dtype: a float32 prior with float64 data is run with float64 latents.
        return {name: trace.nodes[name]["value"].to(dtype) for name in self.latents}

    def _trace(self, values: dict[str, Tensor]) -> poutine.Trace:
        with poutine.block(), pyro.validation_enabled(False):
            return poutine.trace(poutine.condition(self.model, data=values)).get_trace(*self.args, **self.kwargs)

    def _single(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        return _outputs_of_trace(self._trace(values), self.deterministic, self.observed)

    def _looped(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        num = next(iter(values.values())).shape[0]
        rows = [self._single({name: value[i] for name, value in values.items()}) for i in range(num)]
        return {key: torch.stack([row[key] for row in rows]) for key in self.shapes}

    def _vmapped(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        return torch.func.vmap(self._single, randomness="different")(values)

    def _plated(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        num = next(iter(values.values())).shape[0]
        padded = {
            name: value.reshape((num,) + (1,) * self.padding[name] + value.shape[1:]) for name, value in values.items()
        }
        with pyro.plate(PARTICLE_PLATE, num, dim=-self.rank):
            outputs = self._single(padded)
        unpadded = {}
        for key, value in outputs.items():
            shape = self.shapes[key]
            if value.numel() == shape.numel():  # an output that does not depend on the draw
                unpadded[key] = value.reshape(shape).expand((num,) + shape)
            elif value.numel() == num * shape.numel():
                unpadded[key] = value.reshape((num,) + shape)
            else:
                raise ValueError(f"{key} has shape {tuple(value.shape)} when batched, {tuple(shape)} for one draw")
        return unpadded

    def __call__(self, values: dict[str, Tensor], batch_size: int = BATCH_SIZE) -> dict[str, Tensor]:
        """``{"deterministic/<site>" | "log_likelihood/<site>" | "predictive/<site>": (n, ...)}``."""
        num = next(iter(values.values())).shape[0]
        if self.batching != "loop":
            self.batching = self._check_batched(values)
        run = {"plate": self._plated, "vmap": self._vmapped, "loop": self._looped}[self.batching]
        chunks = [
            run({name: value[start : start + batch_size] for name, value in values.items()})
            for start in range(0, num, batch_size)
        ]
        return {key: torch.cat([chunk[key] for chunk in chunks]) for key in self.shapes}

    def _check_batched(self, values: dict[str, Tensor]) -> str:
        """Keep the batched evaluation if it agrees with one draw at a time on draws spread
        over the batch (deterministic values and log-likelihoods; predictive draws are
        random). Spread, because a model that branches on a latent value in Python can
        agree on nearby draws and not on distant ones."""
        num = next(iter(values.values())).shape[0]
        which = torch.linspace(0, num - 1, min(num, 8)).round().long().unique()
        probe = {name: value[which] for name, value in values.items()}
        runs = {"plate": self._plated, "vmap": self._vmapped, "loop": self._looped}
        return choose_batching(
            lambda batching: runs[batching](probe),
            candidates=(self.batching,),
            what="the output",
            unit="draw",
            ignore=("predictive/",),
        )


def _batch_rank(site: dict, rank: int) -> int:
    """How many leading dims of a ``rank``-dim value of ``site`` are batch dims."""
    # Plates index batch dims, so there are at least as many as the plates are deep; this
    # also places pyro.deterministic sites, whose event_dim defaults to the whole value.
    depth = max((-frame.dim for frame in site["cond_indep_stack"] if frame.vectorized and frame.dim is not None), default=0)
    return min(rank, max(rank - site["fn"].event_dim, depth))


def plate_dims(trace: poutine.Trace, names: Sequence[str]) -> dict[str, list[str]]:
    """Each site's dimension names: its plates' names for its batch dims, else ``<site>_dim_<i>``."""
    result = {}
    for name in names:
        site = trace.nodes[name]
        shape = site["value"].shape
        plates = {
            frame.dim: frame
            for frame in site["cond_indep_stack"]
            if frame.vectorized and frame.dim is not None and frame.name != PARTICLE_PLATE
        }
        batch_rank = _batch_rank(site, len(shape))
        labels = []
        for i, size in enumerate(shape):
            frame = plates.get(i - batch_rank)
            labels.append(frame.name if frame is not None and frame.size == size else f"{name}_dim_{i}")
        result[name] = labels
    return result
