"""``fit``: one call from a Pyro model to a trained posterior sampler."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.optim
import pyro.poutine as poutine
import pyro.util
import torch
from pyro.infer import SVI, Predictive
from tqdm.auto import tqdm

from .asvgd import AmortizedSVGD
from .ctf import CTFDistillation
from .diagnostics import ksd_of_latents
from .guides import AutoNeuralSampler
from .model_density import UnconstrainedLogDensity

__all__ = ["DEFAULTS", "FitResult", "fit"]

#: Defaults of `fit()`, chosen on the test suite's Gaussian and conjugate targets and
#: the diabetes regression (see ``docs/defaults.md``).
DEFAULTS: dict[str, Any] = {
    "num_steps": 2000,
    "num_particles": 512,
    "learning_rate": 1e-2,
    "final_learning_rate": 1e-3,
    "betas": (0.9, 0.9),
    "checkpoint_every": 200,
    "average_last": 0.5,
}

#: Draws of the trained sampler on which `fit()` reports the kernelized Stein discrepancy.
KSD_DRAWS = 2000

ENGINES: dict[str, Callable[[], Any]] = {
    "asvgd": AmortizedSVGD,
    "ctf": CTFDistillation,
}


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
    """

    model: Callable
    guide: AutoNeuralSampler
    engine: Any
    optim: pyro.optim.PyroOptim
    args: tuple
    kwargs: dict
    history: dict[str, list[float]] = field(default_factory=dict)
    num_steps: int = 0
    seconds: float = 0.0
    ksd: float | None = None

    def sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        """``{site: tensor(num_samples, *site_shape)}`` of constrained latent draws."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples!r}")
        return self.guide.sample_posterior(num_samples)

    def to_arviz(self, num_samples: int = 4000, **kwargs: Any) -> Any:
        """[`pyro_stein.to_inference_data()`][pyro_stein.to_inference_data] of this fit on its training data: posterior,
        posterior predictive, log-likelihood, observed data and sample stats, one chain of
        independent draws.

        Example:
            >>> import arviz as az                                   # doctest: +SKIP
            >>> az.summary(result.to_arviz())                        # doctest: +SKIP
        """
        from .inference_data import to_inference_data

        return to_inference_data(self, num_samples=num_samples, **kwargs)

    def predictive(self, num_samples: int, *, parallel: bool = True, return_sites=()) -> dict[str, torch.Tensor]:
        """Posterior predictive draws: ``pyro.infer.Predictive`` on the training arguments."""
        predictive = Predictive(
            self.model, guide=self.guide, num_samples=num_samples, parallel=parallel, return_sites=return_sites
        )
        return predictive(*self.args, **self.kwargs)


def _make_engine(engine: Any) -> Any:
    if isinstance(engine, str):
        try:
            return ENGINES[engine]()
        except KeyError:
            raise ValueError(f"engine must be one of {sorted(ENGINES)} or an engine instance, got {engine!r}") from None
    if not hasattr(engine, "loss_and_grads"):
        raise TypeError(f"engine must be a name or a Pyro loss with loss_and_grads, got {type(engine).__name__}")
    return engine


def _default_optim(num_steps: int) -> pyro.optim.PyroLRScheduler:
    decay = (DEFAULTS["final_learning_rate"] / DEFAULTS["learning_rate"]) ** (1.0 / max(num_steps, 1))
    return pyro.optim.ExponentialLR(
        {
            "optimizer": torch.optim.Adam,
            "optim_args": {"lr": DEFAULTS["learning_rate"], "betas": DEFAULTS["betas"]},
            "gamma": decay,
        }
    )


class _TailAverage:
    """Uniform (Polyak-Ruppert) average of a module's parameters over the last steps.

    Stochastic Stein directions leave the sampler's parameters jittering around their
    fixed point; averaging the tail of the run cancels most of that jitter (for a
    subsampled regression it cut the error in the posterior mean by up to five times).
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.values: list[torch.Tensor] | None = None
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        current = [p.detach() for p in self.module.parameters()]
        if self.values is None:
            self.values = [c.clone() for c in current]
        else:
            for value, c in zip(self.values, current):
                value += (c - value) / self.count

    @torch.no_grad()
    def apply(self) -> None:
        if self.values is not None:
            for param, value in zip(self.module.parameters(), self.values):
                param.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values, self.count = state["values"], state["count"]


def _rng_state() -> dict[str, Any]:
    """Every generator a step may draw from: Python's, NumPy's, torch's CPU and CUDA ones."""
    state = pyro.util.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    pyro.util.set_rng_state(state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(path: Path, result: FitResult, rng_state: dict[str, Any], average: _TailAverage) -> None:
    state = {
        "guide": result.guide.state_dict(),
        "optim": result.optim.get_state(),
        "engine": result.engine.state_dict() if hasattr(result.engine, "state_dict") else {},
        "history": result.history,
        "num_steps": result.num_steps,
        "average": average.state_dict(),
        # The generators as they were when the next step to run began, so that a resumed
        # run repeats an uninterrupted one exactly.
        "rng": rng_state,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, result: FitResult, average: _TailAverage) -> None:
    try:
        state = torch.load(path, weights_only=False)
        result.guide.load_state_dict(state["guide"])
    except Exception as error:
        raise ValueError(
            f"Cannot resume from checkpoint {str(path)!r}: {error}. It was written for "
            "another model or guide; delete it or pass another checkpoint path."
        ) from error
    result.optim.set_state(state["optim"])
    if hasattr(result.engine, "load_state_dict"):
        result.engine.load_state_dict(state["engine"])
    result.history = state["history"]
    result.num_steps = state["num_steps"]
    average.load_state_dict(state["average"])
    _set_rng_state(state["rng"])


def fit(
    model: Callable,
    *args: Any,
    engine: str | Any = "asvgd",
    guide: AutoNeuralSampler | None = None,
    num_steps: int | None = None,
    optim: pyro.optim.PyroOptim | None = None,
    seed: int | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    average_last: float | None = None,
    **kwargs: Any,
) -> FitResult:
    """Train a posterior sampler for ``model`` and return it with its training history.

    Defaults (see ``docs/defaults.md`` for how they were chosen):

    * engine ``"asvgd"``: [`AmortizedSVGD`][pyro_stein.AmortizedSVGD] with 512 particles per step,
      the RBF kernel with 3x the median-heuristic bandwidth in whitened coordinates, leave-one-out
      Stein direction, preconditioner re-centred every 50 steps.
    * engine ``"ctf"``: [`CTFDistillation`][pyro_stein.CTFDistillation] with 512 particles per step,
      5 Metropolis-adjusted Langevin steps per training step (step size adapted to an
      acceptance rate of 0.9), sliced-Wasserstein distillation, same preconditioning.
    * guide: [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler] started at the Laplace approximation.
    * ``num_steps=2000``.
    * optim: Adam (betas 0.9, 0.9) with learning rate 1e-2 decayed exponentially to
      1e-3 over the run (``pyro.optim.ExponentialLR``).
    * the returned sampler's parameters are their average over the last half of the steps,
      during which the preconditioner stays fixed.

    Args:
        model: a Pyro model with continuous latent sites.
        *args: the model's positional arguments.
        **kwargs: the model's keyword arguments (so they cannot be named like the keyword
            arguments below).
        engine: ``"asvgd"``, ``"ctf"`` or a configured engine such as
            ``AmortizedSVGD(num_particles=512)`` or ``CTFDistillation(num_steps=10)``.
        guide: a guide to train; default ``AutoNeuralSampler(model)``.
        num_steps: optimisation steps in total (a resumed run counts the steps it resumes).
        optim: a ``pyro.optim`` optimizer; a ``PyroLRScheduler`` is stepped once per step.
        seed: seeds Pyro, PyTorch and NumPy for a reproducible run.
        progress: show a tqdm progress bar.
        checkpoint: a file path: resume from it if it exists, save to it every
            ``checkpoint_every`` steps (default 200), at the end and on ``KeyboardInterrupt``.
        checkpoint_every: steps between checkpoints.
        average_last: the fraction of the steps, at the end, over which the guide's
            parameters are averaged (default 0.5; 0 returns the last iterate).  An
            interrupted run returns the last iterate.

    Returns:
        A `FitResult`; ``result.sample(n)`` gives ``n`` posterior draws per site.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> import pyro_stein
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, sigma), obs=y)
        >>> y = 3.0 + torch.randn(50)
        >>> result = pyro_stein.fit(model, y, num_steps=200, seed=0, progress=False)
        >>> result.sample(1000)["mu"].shape
        torch.Size([1000])

    Interrupting a run with Ctrl-C returns the partial result (with a warning); with a
    ``checkpoint``, calling `fit()` again with the same arguments resumes it.
    """
    if num_steps is None:
        num_steps = DEFAULTS["num_steps"]
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
    if optim is not None and not isinstance(optim, pyro.optim.PyroOptim):
        raise TypeError(f"optim must be a pyro.optim optimizer, got {type(optim).__name__}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    engine = _make_engine(engine)
    guide = AutoNeuralSampler(model) if guide is None else guide
    optim = _default_optim(num_steps) if optim is None else optim
    checkpoint_every = checkpoint_every or DEFAULTS["checkpoint_every"]
    path = None if checkpoint is None else Path(checkpoint)
    average_last = DEFAULTS["average_last"] if average_last is None else average_last
    if not 0.0 <= average_last <= 1.0:
        raise ValueError(f"average_last must lie in [0, 1], got {average_last!r}")
    average_from = num_steps - round(num_steps * average_last)

    result = FitResult(model=model, guide=guide, engine=engine, optim=optim, args=args, kwargs=kwargs)
    average = _TailAverage(guide)
    recenter_every = getattr(engine, "recenter_every", None)
    start = time.perf_counter()
    with pyro.get_param_store().scope():
        if hasattr(engine, "setup"):
            engine.setup(model, guide, *args, **kwargs)
        if path is not None and path.exists():
            _load_checkpoint(path, result, average)
        svi = SVI(model, guide, optim, loss=engine)
        scheduler = isinstance(optim, pyro.optim.PyroLRScheduler)
        bar = tqdm(total=num_steps, initial=result.num_steps, disable=not progress, desc="pyro_stein.fit")
        rng_state = _rng_state() if path is not None else None
        try:
            while result.num_steps < num_steps:
                if result.num_steps >= average_from and recenter_every is not None:
                    engine.recenter_every = 0  # the average needs fixed coordinates
                value = svi.step(*args, **kwargs)
                if scheduler:
                    optim.step()
                diagnostics = getattr(engine, "diagnostics", None) or {"loss": value}
                for name, figure in diagnostics.items():
                    result.history.setdefault(name, []).append(figure)
                result.num_steps += 1
                if result.num_steps > average_from:
                    average.update()
                bar.update(1)
                if progress and result.num_steps % 25 == 0:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in diagnostics.items() if k != "bandwidth"}, refresh=False)
                if path is None:
                    continue
                rng_state = _rng_state()
                if result.num_steps % checkpoint_every == 0:
                    _save_checkpoint(path, result, rng_state, average)
        except KeyboardInterrupt:
            message = f"fit interrupted after {result.num_steps} of {num_steps} steps"
            if path is not None:
                _save_checkpoint(path, result, rng_state, average)
                message += f"; call fit again with checkpoint={str(path)!r} to resume"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        finally:
            bar.close()
            if recenter_every is not None:
                engine.recenter_every = recenter_every
        if result.num_steps == num_steps:
            average.apply()
            if path is not None:
                _save_checkpoint(path, result, rng_state, average)
        result.ksd = _final_ksd(model, guide, args, kwargs)
    result.seconds = time.perf_counter() - start
    if progress and result.ksd is not None:
        tqdm.write(f"pyro_stein.fit: {result.num_steps} steps in {result.seconds:.1f} s; KSD of the sampler {result.ksd:.3g}")
    return result


def _final_ksd(model: Callable, guide: AutoNeuralSampler, args: tuple, kwargs: dict) -> float | None:
    """The discrepancy of the returned sampler, on its own draws."""
    if guide.prototype_trace is None or not hasattr(guide, "sample_latent_batch"):
        return None
    density = UnconstrainedLogDensity(model, guide, batching=getattr(guide, "batching", "auto"), frozen_subsample=True)
    with poutine.block(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an infinite figure speaks for itself
        return ksd_of_latents(density, guide.sample_latent_batch(KSD_DRAWS), args, kwargs)
