"""``fit``: one call from a Pyro model to a trained posterior sampler."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyro
import pyro.optim
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO, SVI, Predictive
from pyro.infer.autoguide import AutoContinuous, AutoGuide
from pyro.params.param_store import ParamStoreDict, StateDict
from tqdm.auto import tqdm

from ..diagnostics.ksd import ksd_of_latents
from ..diagnostics.reliability import (
    CHECK_DRAWS,
    Reliability,
    UnreliableFitWarning,
    check_reliability,
    reliability_of_latents,
)
from ..engines import AmortizedSVGD, CTFDistillation, Engine
from ..engines.base import ParticleEngine
from ..glue.autoguide import guide_param_prefix, set_up
from ..glue.density import UnconstrainedLogDensity
from ..glue.fingerprint import argument_fingerprint, model_fingerprint
from ..glue.local import LocalStructure
from ..glue.noncentring import NoncentredModel, centred_hierarchical_sites
from ..glue.optim import set_learning_rate
from ..glue.params import model_param_state
from ..guides.amortized_sampler import AutoAmortizedSampler
from ..guides.neural_sampler import AutoNeuralSampler
from ..guides.protocols import LatentSampler, LocalParticleSampler, ParticleSampler
from ..ops.caller import warn
from ..ops.convergence import ConvergenceRule
from ..ops.digest import describe
from .allocator import retain_freed_memory
from .averaging import TailAverage
from .checkpoint import load_checkpoint, read_checkpoint, rng_state, save_checkpoint
from .convergence import ConvergenceMonitor
from .result import FitResult

__all__ = ["CONVERGENCE", "DEFAULTS", "ENGINES", "KSD_DRAWS", "LOCAL_PARTICLES", "LOCAL_WITH_GLOBAL_STEPS", "fit", "run_fingerprint"]

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
    "stop_when_converged": True,
}

_FINAL_RATE = DEFAULTS["final_learning_rate"] / DEFAULTS["learning_rate"]

#: The learning-rate ladder and convergence test of `fit()`'s own budget (see
#: [`ConvergenceRule`][pyro_stein.ops.convergence.ConvergenceRule]).  Its last rate is the
#: fixed schedule's final one, so that the fallback decays to where the fixed budget does.
CONVERGENCE = ConvergenceRule(rates=(1.0, _FINAL_RATE**0.5, _FINAL_RATE))

#: Draws of the trained sampler on which `fit()` reports the kernelized Stein discrepancy.
KSD_DRAWS = 2000

ENGINES: dict[str, Callable[[], Engine]] = {
    "asvgd": AmortizedSVGD,
    "ctf": CTFDistillation,
}


#: Particles per row of a data plate for an engine named by `fit()` on a model with local
#: latents (``benchmarks/local_latents.py``, factor analysis with exact posteriors, at
#: 3b25373): Amortized SVGD's sd ratios were 0.97-1.04 at 16; CTF's matching of few particles
#: narrows the sampler, 0.94-0.99 at 64 (0.89-0.95 at 32, measured on an earlier step).
LOCAL_PARTICLES = {"asvgd": 16, "ctf": 64}

#: `fit()`'s default budget for local latents beside global ones: the encoder learns how
#: each row follows the global latents slowly.  A Gaussian hierarchy with exact posterior
#: (400 groups of 4 rows, 32 groups a step, ``benchmarks/local_models.py``): its population
#: mean's sd ratio was 0.70 after 2000 steps, 1.00 after 4000 (groups within 0.054 sd).
LOCAL_WITH_GLOBAL_STEPS = 4000


def _make_engine(engine: str | Engine | ELBO, *, local: bool = False) -> Engine | ELBO:
    if isinstance(engine, str):
        try:
            return ENGINES[engine](num_particles=LOCAL_PARTICLES[engine]) if local else ENGINES[engine]()
        except KeyError:
            raise ValueError(f"engine must be one of {sorted(ENGINES)} or an engine instance, got {engine!r}") from None
    if isinstance(engine, type):
        raise TypeError(
            f"engine must be a name ({sorted(ENGINES)}) or an engine instance; got the class "
            f"{engine.__name__}: pass {engine.__name__}() instead"
        )
    if not isinstance(engine, (Engine, ELBO)):
        raise TypeError(
            f"engine must be a name ({sorted(ENGINES)}), an engine such as AmortizedSVGD() or "
            f"CTFDistillation(), or a Pyro loss (pyro.infer.ELBO); got {type(engine).__name__}"
        )
    return engine


class _LossRun:
    """The run of a plain Pyro loss (say ``Trace_ELBO()`` with a Pyro autoguide): it
    adapts nothing, and its monitored figure is the loss ``SVI.step`` returns."""

    step_count = 0
    recentering = True

    def __init__(self) -> None:
        self.diagnostics: dict[str, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _checkpoint_path(checkpoint: str | os.PathLike) -> Path:
    """The checkpoint's path, checked before any work: its folder must exist and be
    writable, and the path must not be a folder."""
    path = Path(checkpoint)
    if path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is a directory; pass a file path such as {str(path / 'fit.pt')!r}")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"the folder of checkpoint {str(path)!r} does not exist: create {str(folder)!r} first")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"the folder of checkpoint {str(path)!r} is not writable")
    return path


def _engine_options() -> dict[str, list[str]]:
    """Each keyword of the engines' constructors, with the engines that take it."""
    options: dict[str, list[str]] = {}
    for engine in (AmortizedSVGD, CTFDistillation):
        for name in inspect.signature(engine).parameters:
            options.setdefault(name, []).append(engine.__name__)
    return options


def _refuse_engine_options(model: Callable, kwargs: dict[str, Any]) -> None:
    """Keyword arguments of ``fit`` go to the model; one that names an engine option, and
    that the model does not take, is a misplaced engine option."""
    try:
        parameters = inspect.signature(model).parameters
    except (TypeError, ValueError):  # no signature to read: leave the keywords to the model
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    options = _engine_options()
    for name in kwargs:
        if name in options and name not in parameters:
            engines = options[name]
            raise TypeError(
                f"fit() passes its keyword arguments to the model, which takes no {name!r}; {name!r} is an "
                f"option of {' and '.join(engines)}: pass engine={engines[0]}({name}=...) instead. "
                f"The engine options are: {sorted(options)}"
            )


# Engine attributes that are run state, not options: Pyro's ELBO learns max_plate_nesting on
# its first step.
_ENGINE_STATE = {"max_plate_nesting"}


def _options(label: str, obj: Any, options: Mapping[str, Any]) -> dict[str, str]:
    """``{label: class, "<label> option <name>": value}``: one entry an option, so that a
    refused resume names the option that differs."""
    return {label: type(obj).__name__, **{f"{label} option {name}": describe(value) for name, value in sorted(options.items())}}


def run_fingerprint(
    model: Callable, args: tuple, kwargs: dict, *, engine: Any, guide: Any, optim: Any, settings: Mapping[str, Any]
) -> dict[str, str]:
    """What a `fit()` run depends on, ``{what: description}``: the model's structure, its
    data arguments (by content), the engine's, guide's and optimizer's options, and
    ``settings`` (seed, number of steps, averaged fraction).  A checkpoint records it, and
    resuming refuses a run whose fingerprint differs, naming the entries."""
    fingerprint = {**model_fingerprint(model, args, kwargs), **argument_fingerprint(model, args, kwargs)}
    fingerprint.update(
        _options("engine", engine, {k: v for k, v in vars(engine).items() if not k.startswith("_") and k not in _ENGINE_STATE})
    )
    # Options only: the guide's tensors are the run's state (resuming with the guide object
    # the interrupted call trained is the same run), and loading them checks their shapes.
    fingerprint.update(_options("guide", guide, dict(getattr(guide, "config", {}))))
    optim_options = {
        "optimizer": getattr(optim, "pt_optim_constructor", None),
        "arguments": getattr(optim, "pt_optim_args", None),
        "clip": getattr(optim, "pt_clip_args", None),
    }
    if isinstance(optim, pyro.optim.PyroLRScheduler):
        optim_options.update(scheduler=optim.pt_scheduler_constructor, scheduler_arguments=optim.kwargs)
    fingerprint.update(_options("optimizer", optim, optim_options))
    for name, value in settings.items():
        fingerprint[name] = describe(value)
    return fingerprint


def _default_optim(num_steps: int, converging: bool) -> pyro.optim.PyroOptim:
    """Adam at ``DEFAULTS``' rate: constant where the convergence ladder sets the rate,
    else decayed exponentially to the final rate over ``num_steps``."""
    if converging:
        return pyro.optim.Adam({"lr": DEFAULTS["learning_rate"], "betas": DEFAULTS["betas"]})
    decay = (DEFAULTS["final_learning_rate"] / DEFAULTS["learning_rate"]) ** (1.0 / max(num_steps, 1))
    return pyro.optim.ExponentialLR(
        {
            "optimizer": torch.optim.Adam,
            "optim_args": {"lr": DEFAULTS["learning_rate"], "betas": DEFAULTS["betas"]},
            "gamma": decay,
        }
    )


def fit(
    model: Callable,
    *args: Any,
    engine: str | Engine | ELBO = "asvgd",
    guide: AutoContinuous | None = None,
    num_steps: int | None = None,
    optim: pyro.optim.PyroOptim | None = None,
    seed: int | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    average_last: float | None = None,
    check: bool = True,
    noncentre: bool = True,
    stop_when_converged: bool | None = None,
    **kwargs: Any,
) -> FitResult:
    """Train a posterior sampler for ``model`` and return it with its training history.

    Defaults (see ``docs/defaults.md`` for how they were chosen):

    * engine ``"asvgd"``: [`AmortizedSVGD`][pyro_stein.AmortizedSVGD] with 512 particles per step,
      the RBF kernel with 3x the median-heuristic bandwidth in whitened coordinates, leave-one-out
      Stein direction, preconditioner re-centred every 50 steps.
    * engine ``"ctf"``: [`CTFDistillation`][pyro_stein.CTFDistillation] with 512 particles per step,
      3 Metropolis-adjusted Langevin steps per training step (step size adapted to an
      acceptance rate of 0.9), sliced-Wasserstein distillation, same preconditioning.
    * guide: [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler] started at the Laplace approximation;
      for a model with local latents (one per row of a data plate, a plate with observed
      sites), subsampled or numbering at least 100 coordinates,
      [`AutoAmortizedSampler`][pyro_stein.AutoAmortizedSampler] (an encoder per data plate),
      trained with 16 particles a row (``"asvgd"``) or 64 (``"ctf"``, `LOCAL_PARTICLES`) on
      the fixed schedule below (4000 steps by default where there are global latents
      beside the local ones, `LOCAL_WITH_GLOBAL_STEPS`), without the reliability checks (they do not cover local
      latents yet: ``result.reliable`` is ``None``).
    * a budget of its own, at most ``num_steps=2000``: Adam (betas 0.9, 0.9) at learning rate
      1e-2 until the sampler stops changing, then at 3.2e-3 and at 1e-3 until it stops
      changing again (`CONVERGENCE`; after Welandawe et al. 2022).  The change is measured on
      fixed base draws (common random numbers) pushed through the sampler with its
      parameters averaged over each window of 40 steps, so it has no Monte Carlo noise of
      its own: the largest mean shift (in sds), log sd ratio or correlation change, against
      a tolerance of 0.05 (over each of the last two windows) at the first rate and 0.03 at
      the second; at the last rate the run stops once the Monte Carlo standard error of its
      averaged sampler is at most 0.01 (below that of 4000 draws' means), after at least 4
      windows, so at least 360 steps.  ``result.convergence`` says why the run stopped,
      with the figure; the progress bar shows it.  A run that does not converge moves on
      to the lower rates at 1/4 and 1/2 of ``num_steps``.
    * the returned sampler's parameters are their average over the last stage, during which
      the preconditioner stays fixed.

    Args:
        model: a Pyro model with continuous latent sites.
        *args: the model's positional arguments.
        **kwargs: the model's keyword arguments (so they cannot be named like the keyword
            arguments below).
        engine: ``"asvgd"``, ``"ctf"`` or a configured engine such as
            ``AmortizedSVGD(num_particles=512)`` or ``CTFDistillation(num_steps=10)``
            (one engine object can serve several fits: its state is kept per guide); a
            plain Pyro loss such as ``Trace_ELBO()`` with a Pyro autoguide also runs.
        guide: a guide to train; default ``AutoNeuralSampler(model)``.
        num_steps: the most optimisation steps (a resumed run counts the steps it resumes);
            with ``stop_when_converged=False``, or an ``optim`` of your own, exactly this many.
        optim: a ``pyro.optim`` optimizer; a ``PyroLRScheduler`` is stepped once per step.
            The default is Adam under the convergence ladder above; with your own optimizer
            `fit()` follows its schedule for ``num_steps`` steps.
        seed: seeds Pyro, PyTorch and NumPy for a reproducible run.
        progress: show a tqdm progress bar.
        checkpoint: a file path: resume from it if it exists, save to it every
            ``checkpoint_every`` steps (default 200), at the end and on Ctrl-C.
            Checkpoints hold tensors and plain values only and load with
            ``torch.load(..., weights_only=True)``; a file that holds anything else, or is
            truncated or corrupted, is refused with an error that says so.  A checkpoint
            records what its run depends on (`run_fingerprint()`: the model's structure,
            its data, the engine's, guide's and optimizer's options, ``seed``,
            ``num_steps``, ``average_last``) and resumes only that run: any difference is
            refused, naming it.
        checkpoint_every: steps between checkpoints.
        average_last: with a fixed budget, the fraction of the steps, at the end, over
            which the guide's parameters are averaged (default 0.5; 0 returns the last
            iterate).  Under the convergence ladder the last stage is averaged, and 0 returns
            the last iterate.  An interrupted run returns the last iterate.
        check: judge the fitted sampler's draws against the model
            ([`check_reliability()`][pyro_stein.check_reliability]: support, stationarity
            under Metropolis-adjusted Langevin steps, modes); the verdict is
            ``result.reliable``, and a failed check raises an `UnreliableFitWarning` naming
            the check, its figure and what to try.  ``False`` skips it (``result.reliable``
            is then ``None``).
        noncentre: when the stationarity check fails on a fit of the default guide and the
            model has centred hierarchical sites (location-scale latents whose location or
            scale depends on other latents, e.g. ``theta ~ Normal(mu, tau)``), fit once more
            with them non-centred (``poutine.reparam`` with ``LocScaleReparam(centered=0.0)``,
            see `NoncentredModel`) and return that fit if it is reliable.  Its guide still
            emits the original sites, so ``result.sample``, ``Predictive(model, result.guide)``
            and ``result.to_arviz()`` see ``theta`` (and ``theta_decentered``);
            ``result.noncentred`` names the sites.  ``False`` never refits.
        stop_when_converged: run the convergence ladder above (default ``True`` with the
            default optimizer and an engine of this package); ``False`` runs ``num_steps``
            steps with the learning rate decayed exponentially from 1e-2 to 1e-3 over them.

    Returns:
        A `FitResult`; ``result.sample(n)`` gives ``n`` posterior draws per site, and
        ``result.convergence`` says why the run stopped.

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

    Interrupting a run with Ctrl-C lets the current step finish and returns the partial
    result (with a warning); with a ``checkpoint``, calling `fit()` again with the same
    arguments resumes it, and the resumed run repeats the uninterrupted one exactly.  A
    second Ctrl-C stops at once, saving nothing half-done.

    The model's ``pyro.param`` sites start from their initial values (a fresh parameter
    store; the parameters of a ``PyroModule`` model live in the module, so they start from
    its current values) and are trained with the guide; afterwards the fitted values are in
    Pyro's global parameter store, as after ``SVI``, and the result keeps its own copy
    (`FitResult.params`, `FitResult.param_scope()`).
    """
    steps_given = num_steps is not None
    if num_steps is None:
        num_steps = DEFAULTS["num_steps"]
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
    if optim is not None and not isinstance(optim, pyro.optim.PyroOptim):
        raise TypeError(f"optim must be a pyro.optim optimizer, got {type(optim).__name__}")
    if stop_when_converged is None:
        stop_when_converged = DEFAULTS["stop_when_converged"]
    if not isinstance(stop_when_converged, bool):
        raise TypeError(f"stop_when_converged must be True or False, got {stop_when_converged!r}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    guide_is_default, optim_is_default = guide is None, optim is None
    _refuse_engine_options(model, kwargs)  # before the model first runs (choosing the guide runs it)
    if guide is None:
        structure = LocalStructure.detect(model, args, kwargs)
        guide = AutoNeuralSampler(model) if structure is None else AutoAmortizedSampler(model)
        if structure is not None and structure.global_sites and not steps_given:
            num_steps = LOCAL_WITH_GLOBAL_STEPS
    engine = _make_engine(engine, local=isinstance(guide, LocalParticleSampler))
    # The ladder sets the learning rate, so it needs the default optimizer, and it compares
    # samplers on their draws, so it needs a latent sampler trained by one of our engines.
    # (A guide is a LatentSampler only once set up: its class is what can be checked now.)
    converging = (
        stop_when_converged and optim_is_default and isinstance(engine, Engine)
        and callable(getattr(type(guide), "sample_latent_batch", None))
    )
    optim = _default_optim(num_steps, converging) if optim is None else optim
    checkpoint_every = DEFAULTS["checkpoint_every"] if checkpoint_every is None else checkpoint_every
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer (steps between checkpoints), got {checkpoint_every!r}")
    path = None if checkpoint is None else _checkpoint_path(checkpoint)
    average_last = DEFAULTS["average_last"] if average_last is None else average_last
    if not 0.0 <= average_last <= 1.0:
        raise ValueError(f"average_last must lie in [0, 1], got {average_last!r}")
    average_from = num_steps - round(num_steps * average_last)

    settings = {"seed": seed, "num_steps": num_steps, "average_last": float(average_last), "stop_when_converged": converging}
    train = functools.partial(
        _train, engine=engine, args=args, kwargs=kwargs, num_steps=num_steps, seed=seed, progress=progress,
        checkpoint_every=checkpoint_every, average_from=average_from, settings=settings, check=check,
        converging=converging, average_last=average_last,
    )
    start = time.perf_counter()
    # Every step frees and allocates the same large temporaries: keep them in the process
    # (glibc), returning what is free at the end (`retain_freed_memory`).
    with retain_freed_memory():
        result, fitted = train(model, guide, optim, path)
        refit_note = ""
        if noncentre and guide_is_default and isinstance(engine, Engine) and _stationarity_failed(result):
            sites = centred_hierarchical_sites(model, args, kwargs)
            if sites:
                fresh_optim = functools.partial(_default_optim, num_steps, converging) if optim_is_default else None
                result, fitted, refit_note = _refit_noncentred(model, sites, result, fitted, train, fresh_optim, path, progress)
    store = pyro.get_param_store()
    _keep_fitted_params(result, fitted, store)
    result.seconds = time.perf_counter() - start
    if progress and result.ksd is not None:
        verdict = "" if result.reliable is None else f"; reliable={result.reliable}"
        stopped = "" if result.convergence is None else f" ({result.convergence.message()})"
        tqdm.write(
            f"pyro_stein.fit: {result.num_steps} steps in {result.seconds:.1f} s{stopped}; "
            f"KSD of the sampler {result.ksd:.3g}{verdict}"
        )
    if progress and isinstance(result.guide, LocalParticleSampler):
        tqdm.write(
            f"pyro_stein.fit: {result.num_steps} steps in {result.seconds:.1f} s; the reliability checks do not "
            "cover local latents yet (result.reliable is None)"
        )
    if result.reliability is not None and not result.reliability.reliable:
        warn(f"pyro_stein.fit: result.reliable is False: {result.reliability.message()}{refit_note}", UnreliableFitWarning)
    return result


def _stationarity_failed(result: FitResult) -> bool:
    """Whether a complete fit's stationarity check failed (the funnel's signature)."""
    if not result.completed or result.reliability is None or result.reliability.reliable:
        return False
    return any(check.name == "stationarity" for check in result.reliability.failed)


def _refit_noncentred(
    model: Callable, sites: tuple[str, ...], result: FitResult, fitted: StateDict, train: Callable,
    fresh_optim: Callable[[], pyro.optim.PyroOptim] | None, path: Path | None, progress: bool,
) -> tuple[FitResult, StateDict, str]:
    """Fit ``model`` once more with ``sites`` non-centred; keep that fit if it is reliable.
    Returns the fit kept, its parameter-store state, and a sentence for the warning when
    the refit was not kept.

    A stationarity failure on a centred hierarchy is the funnel: no sampler of ours follows
    a conditional scale that changes by orders of magnitude, but the non-centred posterior has
    none of that geometry and the same information (the original sites come back from it).
    """
    noncentred = NoncentredModel(model, sites)
    if progress:
        tqdm.write(
            f"pyro_stein.fit: the stationarity check failed on the centred hierarchy; fitting again with "
            f"{list(sites)} non-centred (poutine.reparam with LocScaleReparam(centered=0.0))"
        )
    optim = result.optim if fresh_optim is None else fresh_optim()
    refit_path = None if path is None else path.with_name(path.name + ".noncentred")
    refit, refit_fitted = train(noncentred, AutoNeuralSampler(noncentred), optim, refit_path)
    if refit.reliable:
        refit.model = model  # the guide emits the original sites too: the user's model runs with it
        refit.noncentred = sites
        refit.centred_reliability = result.reliability
        refit.num_steps_total = result.num_steps + refit.num_steps
        return refit, refit_fitted, ""
    return result, fitted, (
        f" | A refit with {list(sites)} non-centred was not reliable either, so the centred fit is returned: "
        f"{refit.reliability.message()}"
    )


def _train(
    model: Callable, guide: Any, optim: pyro.optim.PyroOptim, path: Path | None, *, engine: Engine | ELBO,
    args: tuple, kwargs: dict, num_steps: int, seed: int | None, progress: bool, checkpoint_every: int,
    average_from: int, settings: dict[str, Any], check: bool, converging: bool, average_last: float,
) -> tuple[FitResult, StateDict]:
    """One training run of `fit()`, resumed from ``path`` when it holds one: the result and
    the parameter-store state it trained (which `fit()` puts in the global store)."""
    result = FitResult(model=model, guide=guide, engine=engine, optim=optim, args=args, kwargs=kwargs)
    average = TailAverage(guide)
    monitor = ConvergenceMonitor(guide, CONVERGENCE, DEFAULTS["learning_rate"], num_steps, average_from) if converging else None
    store = pyro.get_param_store()
    # A fresh store: parameters of earlier fits (or of other guides) cannot leak into this one.
    with store.scope() as fitted:
        fingerprint: dict[str, str] = {}
        saved = None
        if path is not None:
            fingerprint = run_fingerprint(model, args, kwargs, engine=engine, guide=guide, optim=optim, settings=settings)
            if path.exists():
                saved = read_checkpoint(path, fingerprint)
        run = engine.start_run(model, guide, *args, **kwargs) if isinstance(engine, Engine) else _LossRun()
        if saved is not None:
            if isinstance(guide, AutoGuide):
                set_up(guide, args, kwargs)  # a Pyro autoguide makes its parameters on its first run
            load_checkpoint(path, saved, result, run, average, monitor)
        svi = SVI(model, guide, optim, loss=engine)
        scheduler = isinstance(optim, pyro.optim.PyroLRScheduler)
        bar = tqdm(total=num_steps, initial=result.num_steps, disable=not progress, desc="pyro_stein.fit")
        generators = rng_state() if path is not None else None
        saved_at = None if saved is None else result.num_steps
        stopped = None  # why the loop ended early
        try:
            with deferred_interrupt() as interrupt:
                while result.num_steps < num_steps and not (monitor is not None and monitor.stopped):
                    # The average needs fixed coordinates: no re-centring in the averaged tail.
                    if monitor is None:
                        run.recentering = result.num_steps < average_from
                    else:
                        run.recentering = monitor.recentering(result.num_steps)
                        if isinstance(engine, ParticleEngine) and engine.recenter_due(run):
                            monitor.restart_window()
                    value = svi.step(*args, **kwargs)
                    if scheduler:
                        optim.step()
                    diagnostics = run.diagnostics or {"loss": value}
                    for name, figure in diagnostics.items():
                        result.history.setdefault(name, []).append(figure)
                    result.num_steps += 1
                    if monitor is None:
                        if result.num_steps > average_from:
                            average.update()
                    else:
                        if monitor.averaging(result.num_steps) and average_last > 0:
                            average.update()
                        monitor.update(result.num_steps)
                        # Now, not before the next step: a checkpoint saved below then holds
                        # the rate that step uses (a resumed run's optimizers load it).
                        set_learning_rate(optim, monitor.learning_rate(result.num_steps))
                    bar.update(1)
                    if progress and result.num_steps % 25 == 0:
                        postfix = {k: f"{v:.3g}" for k, v in diagnostics.items() if k != "bandwidth"}
                        if monitor is not None:
                            postfix["lr"] = f"{monitor.learning_rate(result.num_steps):.2g}"
                            postfix["change"] = f"{monitor.state.change:.3g}/{monitor.tolerance:g}"
                        bar.set_postfix(postfix, refresh=False)
                    if path is not None:
                        generators = rng_state()
                        if result.num_steps % checkpoint_every == 0 or interrupt.requested:
                            save_checkpoint(path, result, run, generators, average, fingerprint, monitor)
                            saved_at = result.num_steps
                    if interrupt.requested:
                        stopped = "between steps"
                        break
        except KeyboardInterrupt:
            # Raised inside a step (a second Ctrl-C, or an interrupt from elsewhere): the
            # guide, optimizer and engine may be half-way through it, so nothing is saved.
            stopped = "inside a step"
        finally:
            bar.close()
            run.recentering = True
        result.completed = stopped is None or result.num_steps >= num_steps or (monitor is not None and monitor.stopped)
        if monitor is not None:
            result.convergence = monitor.report(result.num_steps, interrupted=not result.completed)
        if stopped is not None and result.num_steps < num_steps:
            message = f"fit interrupted after {result.num_steps} of {num_steps} steps ({stopped})"
            if path is not None and saved_at is not None:
                message += (
                    f"; the checkpoint holds step {saved_at}: call fit again with checkpoint={str(path)!r} "
                    "and the same arguments to resume"
                )
            elif path is not None:
                message += "; no checkpoint was written yet"
            warn(message, RuntimeWarning)
        if result.completed:
            average.apply()
            if path is not None:
                save_checkpoint(path, result, run, generators, average, fingerprint, monitor)
        density = _sampler_density(model, guide)
        result.ksd = _final_ksd(guide, density, args, kwargs)
        if check and not isinstance(guide, LocalParticleSampler):
            result.reliability = _fit_reliability(model, guide, density, args, kwargs, 0 if seed is None else seed)
    return result, fitted


def _keep_fitted_params(result: FitResult, fitted: StateDict, store: ParamStoreDict) -> None:
    """Put the fitted parameters where a Pyro user looks after ``SVI`` (the global store:
    ``pyro.param(name)``, ``Predictive(model, guide=result.guide)``), and give the result
    its own copy of the model's, which later fits and guides cannot change."""
    result.param_state = model_param_state(fitted, guide_param_prefix(result.guide))
    # The model's parameters only: a guide holds its own, and Pyro's autoguides of one class
    # share names, so putting a guide's in the global store would hand them to another guide.
    store.set_state(model_param_state(fitted, guide_param_prefix(result.guide)))


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Any]:
    """Within this context a Ctrl-C (SIGINT) does not interrupt: it sets ``requested`` on
    the object yielded, and the loop stops at the end of its step, with everything
    consistent.  A second Ctrl-C interrupts at once (``KeyboardInterrupt``).  Outside the
    main thread, or where SIGINT is ignored, interrupts behave as usual."""
    state = SimpleNamespace(requested=False)

    def handle(signum: int, frame: Any) -> None:
        if state.requested:
            raise KeyboardInterrupt
        state.requested = True
        sys.stderr.write("\npyro_stein.fit: stopping after this step (press Ctrl-C again to stop at once)\n")

    previous = None
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGINT)
        if current is not None and current is not signal.SIG_IGN:  # None: a handler not set from Python
            previous = signal.signal(signal.SIGINT, handle)
    try:
        yield state
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _sampler_density(model: Callable, guide: Any) -> UnconstrainedLogDensity | None:
    """The model's log density on the returned sampler's layout (one fixed minibatch for
    subsampled models), for the final KSD and the reliability checks; ``None`` for a guide
    that is not a latent sampler."""
    if not isinstance(guide, LatentSampler):
        return None
    batching = guide.batching if isinstance(guide, ParticleSampler) else "auto"
    return UnconstrainedLogDensity(model, guide, batching=batching, frozen_subsample=True)


def _fit_reliability(
    model: Callable, guide: Any, density: UnconstrainedLogDensity | None, args: tuple, kwargs: dict, seed: int
) -> Reliability:
    """The reliability checks on the returned sampler's draws (any guide: those that are not
    latent samplers are drawn from through ``Predictive``)."""
    with poutine.block(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the checks' figures speak for themselves
        if density is not None:
            return reliability_of_latents(density, guide.sample_latent_batch(CHECK_DRAWS), args, kwargs, seed=seed)
        draws = Predictive(model, guide=guide, num_samples=CHECK_DRAWS)(*args, **kwargs)
        return check_reliability(model, draws, *args, seed=seed, **kwargs)


def _final_ksd(guide: Any, density: UnconstrainedLogDensity | None, args: tuple, kwargs: dict) -> float | None:
    """The discrepancy of the returned sampler, on its own draws."""
    if density is None:
        return None
    with poutine.block(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an infinite figure speaks for itself
        return ksd_of_latents(density, guide.sample_latent_batch(KSD_DRAWS), args, kwargs)
