"""Each datapoint's log marginal likelihood ``log p(x_i)`` by importance sampling, for
models with local latents.

For a model whose rows are independent given its parameters (a variational autoencoder,
a factor analysis, a hierarchical model with known hyperparameters), ``log p(x_i) =
log E_q[p(x_i, z_i) / q(z_i)]`` for any proposal ``q`` with a known density that covers
the posterior.  The proposal here is built from any guide's draws, so the same estimate
judges an amortized sampler (which has no density of its own) and a Gaussian encoder
trained by ``Trace_ELBO``: per row, a multivariate Student-t with ``df`` degrees of
freedom in unconstrained space whose mean and covariance are those of the guide's draws
of that row (heavier tails than the posterior's, so the importance weights have a finite
variance where the draws are about right).  The estimate is consistent whatever the
guide; a poor guide shows as a low effective sample size.

References:
    Y. Burda, R. Grosse and R. Salakhutdinov. "Importance Weighted Autoencoders." ICLR 2016.
    Y. Wu, Y. Burda, R. Salakhutdinov and R. Grosse. "On the Quantitative Analysis of
    Decoder-Based Generative Models." ICLR 2017 (importance sampling estimates of the test
    log-likelihood, and their checks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import Predictive
from torch import Tensor
from torch.distributions import biject_to

from ..glue.local import LocalLogDensity, LocalStructure

__all__ = ["ImportanceEstimate", "importance_log_likelihood"]


class ImportanceEstimate(NamedTuple):
    """Per-row importance sampling estimates.

    Attributes:
        log_likelihood: ``(B,)``, the estimate of each row's ``log p(x_i)``.
        effective_sample_fraction: ``(B,)``, the effective sample size of each row's
            importance weights over the number of proposals (near 1: a proposal close to the
            posterior; near 0: the estimate rests on a few proposals).
    """

    log_likelihood: Tensor
    effective_sample_fraction: Tensor


def importance_log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 1000,
    num_guide_draws: int = 200,
    df: float = 5.0,
    chunk_size: int = 100,
    **kwargs: Any,
) -> ImportanceEstimate:
    """``log p(x_i)`` of every row of the model's data plate (see the module docstring).

    Args:
        model: a Pyro model whose latents are local to one data plate, not subsampled for
            these arguments (pass the whole test set as one batch).
        guide: any guide that draws those latents, ``Predictive``-style (an
            [`AutoAmortizedSampler`][pyro_stein.AutoAmortizedSampler], a Pyro encoder guide).
        *args: the model's positional arguments (the data).
        **kwargs: its keyword arguments.
        num_samples: importance samples per row.
        num_guide_draws: guide draws per row from which each row's proposal is fitted.
        df: the proposal's degrees of freedom (above 2).
        chunk_size: importance samples evaluated at once.

    Returns:
        An `ImportanceEstimate`.

    Raises:
        ValueError: the model has latents outside its data plate, several data plates, or
            subsamples it for these arguments.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def prior_guide(x):  # any guide works; a poor one costs effective samples
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> x = torch.tensor([0.0, 2.0])
        >>> estimate = importance_log_likelihood(model, prior_guide, x)
        >>> exact = dist.Normal(0.0, 2**0.5).log_prob(x)  # x ~ N(0, 2) exactly
        >>> bool((estimate.log_likelihood - exact).abs().max() < 0.02)
        True
    """
    if not df > 2:
        raise ValueError(f"df must exceed 2 (the proposal needs a covariance), got {df!r}")
    structure = LocalStructure.from_model(model, args, kwargs)
    if structure.global_sites or len(structure.plates) != 1:
        raise ValueError(
            "importance_log_likelihood needs a model whose latents are local to one data plate; this one has "
            f"data plates {sorted(structure.plates)} and latents outside them {list(structure.global_sites)}"
        )
    (plate,) = structure.plates.values()
    batch = structure.minibatch(model, args, kwargs)
    rows = batch[plate.name]
    if len(rows.indices) != rows.size:
        raise ValueError(
            f"the model subsamples plate {plate.name!r} ({len(rows.indices)} of {rows.size} rows) for these arguments; "
            "pass the data as one batch (its subsample size equal to its size)"
        )
    with torch.no_grad(), poutine.block():
        draws = Predictive(model, guide=guide, num_samples=num_guide_draws, return_sites=[s.name for s in plate.sites])(
            *args, **kwargs
        )
        parts = []
        for site in plate.sites:
            unconstrained = biject_to(site.support).inv(draws[site.name].to(structure.dtype))
            parts.append(site.value_to_rows(unconstrained))
        latents = torch.cat(parts, -1)  # (M, B, d)
        loc = latents.mean(0)
        centered = latents - loc
        cov = torch.einsum("mbi,mbj->bij", centered, centered) / (num_guide_draws - 1)
        dim = cov.shape[-1]
        eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
        cov = cov + 1e-6 * cov.diagonal(dim1=-2, dim2=-1).mean(-1).reshape(-1, 1, 1) * eye
        proposal = dist.MultivariateStudentT(
            torch.tensor(float(df), dtype=cov.dtype), loc, torch.linalg.cholesky(cov * ((df - 2) / df))
        )
        density = LocalLogDensity(model, structure)
        log_weights = []
        for start in range(0, num_samples, chunk_size):
            z = proposal.sample((min(chunk_size, num_samples - start),))  # (S, B, d)
            log_p, _ = density.log_prob_and_scores({plate.name: z}, batch, args, kwargs, per_row=plate.name, scores=False)
            log_weights.append(log_p - proposal.log_prob(z))
        log_weights = torch.cat(log_weights)
        estimate = torch.logsumexp(log_weights, 0) - math.log(len(log_weights))
        normalised = torch.softmax(log_weights, 0)
        fraction = 1.0 / normalised.pow(2).sum(0) / len(log_weights)
    return ImportanceEstimate(estimate, fraction)
