"""What `fit()` returns: [`FitResult`][pyro_stein.FitResult]."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.optim
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO, Predictive
from pyro.infer.autoguide import AutoContinuous
from pyro.params.param_store import StateDict
from torch.distributions import transform_to

from ..diagnostics.inference_data import to_inference_data
from ..diagnostics.reliability import Reliability
from ..engines import Engine
from ..guides.amortized_sampler import AutoAmortizedSampler
from ..guides.neural_sampler import AutoNeuralSampler
from ..guides.protocols import LocalParticleSampler
from .convergence import Convergence

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """What `fit()` returns.

    Attributes:
        model: the model.
        guide: the trained guide.
        engine: the inference engine (its ``diagnostics`` hold the last step's figures).
        optim: the Pyro optimizer, with its state.
        args, kwargs: the model arguments used for training.
        history: per-step monitored values, ``{name: [value at step 1, 2, ...]}``; for
            Amortized SVGD ``squared_ksd``, ``stein_force``, ``bandwidth`` and
            ``invalid_fraction``; for CTF distillation ``distance``, ``acceptance``,
            ``moved``, ``step_size`` and ``invalid_fraction``.
        num_steps: steps completed.
        seconds: wall-clock training time (this call only).
        ksd: the kernelized Stein discrepancy of ``KSD_DRAWS`` draws of the returned
            sampler (see [`pyro_stein.ksd()`][pyro_stein.ksd]); near zero when the sampler matches the
            posterior, ``None`` if not computed.
        param_state: the result's own copy of the model's fitted ``pyro.param`` values, as a
            parameter-store state (see `params` and `param_scope()`).
        reliability: every reliability check on the returned sampler's draws, with its
            figure and threshold ([`Reliability`][pyro_stein.diagnostics.reliability.Reliability]);
            ``None`` when `fit()` ran with ``check=False``.  See `reliable`.
        noncentred: the sites `fit()` non-centred after the centred fit failed its
            stationarity check (``()`` when it did not refit): the guide was trained on the
            non-centred model and emits both ``site`` and ``site_decentered``.
        centred_reliability: the verdict on that centred fit (``None`` without a refit).
        num_steps_total: steps of both fits when `fit()` refitted (``None`` otherwise).
        convergence: why the run stopped, with the figure that decided it
            ([`Convergence`][pyro_stein.fitting.convergence.Convergence]); ``None`` when
            `fit()` ran a fixed budget (``stop_when_converged=False`` or an optimizer of
            your own).
        completed: whether the run ended by itself (converged or at ``num_steps``), not by
            an interrupt.

    Parameters: `fit()` leaves the fitted ``pyro.param`` values in Pyro's global
    parameter store, as ``SVI`` does, so ``pyro.param(name)`` and
    ``Predictive(model, guide=result.guide)`` use them.  The result also keeps its own copy:
    its methods (`sample()`, `predictive()`, `to_arviz()`) use that copy, so a later fit of
    the same model (which replaces the global values) does not change them.
    """

    model: Callable
    guide: AutoNeuralSampler | AutoAmortizedSampler | AutoContinuous
    engine: Engine | ELBO
    optim: pyro.optim.PyroOptim
    args: tuple
    kwargs: dict
    history: dict[str, list[float]] = field(default_factory=dict)
    num_steps: int = 0
    seconds: float = 0.0
    ksd: float | None = None
    param_state: StateDict = field(default_factory=lambda: {"params": {}, "constraints": {}}, repr=False)
    reliability: Reliability | None = None
    noncentred: tuple[str, ...] = ()
    centred_reliability: Reliability | None = None
    num_steps_total: int | None = None
    convergence: Convergence | None = None
    completed: bool = False

    @property
    def reliable(self) -> bool | None:
        """The verdict: ``False`` when a reliability check failed (`fit()` then warned with an
        `UnreliableFitWarning` naming it), ``True`` when all passed, ``None`` when not checked.

        Example:
            >>> import torch, pyro, pyro.distributions as dist
            >>> import pyro_stein
            >>> def model(y):
            ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
            ...     with pyro.plate("data", len(y)):
            ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
            >>> result = pyro_stein.fit(model, torch.randn(20), num_steps=300, seed=0, progress=False)
            >>> result.reliable, [check.name for check in result.reliability.checks]
            (True, ['support', 'stationarity', 'modes'])
        """
        return None if self.reliability is None else self.reliability.reliable

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """``{name: fitted value}`` of the model's ``pyro.param`` sites (constrained, as
        ``pyro.param(name)`` returns them).

        Example:
            >>> import torch, pyro, pyro.distributions as dist
            >>> import pyro_stein
            >>> def model(y):
            ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
            ...     scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
            ...     with pyro.plate("data", len(y)):
            ...         pyro.sample("y", dist.Normal(mu, scale), obs=y)
            >>> result = pyro_stein.fit(model, 2.5 * torch.randn(100), num_steps=300, seed=0, progress=False)
            >>> bool(result.params["scale"] > 2.0), bool(pyro.param("scale") == result.params["scale"])
            (True, True)
        """
        state = self.param_state
        return {
            name: transform_to(state["constraints"][name])(value).detach() for name, value in state["params"].items()
        }

    @contextlib.contextmanager
    def param_scope(self) -> Iterator[None]:
        """A context in which ``pyro.param`` reads this fit's own parameter values (a
        ``pyro.get_param_store().scope``), whatever the global store holds now; for
        ``Predictive`` or any handler run on the model after other fits.

        Example:
            >>> import torch, pyro, pyro.distributions as dist
            >>> from pyro.infer import Predictive
            >>> import pyro_stein
            >>> def model(y=None):
            ...     scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
            ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
            ...     with pyro.plate("data", 100):
            ...         pyro.sample("y", dist.Normal(mu, scale), obs=y)
            >>> wide = pyro_stein.fit(model, 3.0 * torch.randn(100), num_steps=300, seed=0, progress=False)
            >>> narrow = pyro_stein.fit(model, 0.5 * torch.randn(100), num_steps=300, seed=0, progress=False)
            >>> with wide.param_scope():  # the global store now holds the second fit's scale
            ...     draws = Predictive(model, guide=wide.guide, num_samples=500)()
            >>> bool(draws["y"].std() > 2.0)
            True
        """
        state = self.param_state
        # New tensors each time: a PyroModule model adopts the store's tensors as its own, and
        # a later fit would then train this result's copy in place.
        params = {name: value.detach().clone() for name, value in state["params"].items()}
        with pyro.get_param_store().scope({"params": params, "constraints": dict(state["constraints"])}):
            yield

    def sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        """``{site: tensor(num_samples, *site_shape)}`` of constrained latent draws; for local
        latents, those of every row of the training data (the data plate's dimension as long
        as its full size)."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        with self.param_scope():
            if isinstance(self.guide, LocalParticleSampler):
                return self.guide.sample_posterior(num_samples, *self.args, **self.kwargs)
            return self.guide.sample_posterior(num_samples)

    def to_arviz(self, num_samples: int = 4000, **kwargs: Any) -> Any:
        """[`pyro_stein.to_inference_data()`][pyro_stein.to_inference_data] of this fit on its training data: posterior,
        posterior predictive, log-likelihood, observed data and sample stats, one chain of
        independent draws.

        Example:
            >>> import torch, pyro, pyro.distributions as dist
            >>> import arviz as az
            >>> import pyro_stein
            >>> def model(y):
            ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
            ...     with pyro.plate("data", len(y)):
            ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
            >>> result = pyro_stein.fit(model, torch.randn(30), num_steps=100, progress=False)
            >>> list(az.summary(result.to_arviz(num_samples=1000), kind="stats").index)
            ['mu']
        """
        return to_inference_data(self, num_samples=num_samples, **kwargs)  # it uses param_scope()

    def predictive(
        self, num_samples: int, *args: Any, parallel: bool = True, return_sites: Sequence[str] = (), **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Posterior predictive draws: every observed site drawn anew at each posterior draw
        (``pyro.infer.Predictive`` on the model with its observations released by
        ``poutine.uncondition``), not the observed values.

        Args:
            num_samples: posterior draws, one replicate of the data each.
            *args: the model's positional arguments; default the training ones.  For
                predictions at new inputs pass those, e.g. ``result.predictive(1000, x_new)``
                for ``model(x, y=None)`` (the same as
                ``Predictive(model, guide=result.guide, num_samples=1000)(x_new)``).
            parallel: as in ``Predictive``.
            return_sites: as in ``Predictive``.
            **kwargs: the model's keyword arguments; default the training ones.

        Returns:
            ``{site: (num_samples, ...)}``.
        """
        if not args and not kwargs:
            args, kwargs = self.args, self.kwargs
        predictive = Predictive(
            poutine.uncondition(self.model), guide=self.guide, num_samples=num_samples, parallel=parallel,
            return_sites=return_sites,
        )
        with self.param_scope():
            return predictive(*args, **kwargs)
