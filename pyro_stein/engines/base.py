"""What every particle engine shares: the Pyro loss protocol around a batch of particles,
and the per-run state.

An engine here is a `pyro.infer.ELBO` subclass that ``SVI`` calls as its ``loss``.
Each step draws ``N`` particles from a sampler guide in one batched pass, evaluates the
model's log joint and its score for all of them at once through
[`UnconstrainedLogDensity`][pyro_stein.glue.density.UnconstrainedLogDensity], and back-propagates a
per-particle direction into the guide's parameters through the surrogate of
[`pyro_stein.ops.surrogate`][pyro_stein.ops.surrogate]

    - 1/N sum_i <w_i, v_i>,   v_i detached,

whose gradient is ``-1/N sum_i (dw_i/deta)^T v_i``: an optimizer step then moves every
draw ``w_i`` along ``v_i``.  The directions come from the subclass
([`AmortizedSVGD`][pyro_stein.AmortizedSVGD]: the Stein variational direction;
[`CTFDistillation`][pyro_stein.CTFDistillation]: the displacement that matches the sampler's batch
to a Langevin flow's).  Both work in the guide's whitened coordinates
``w = L^{-1}(z - m)`` when it has a preconditioner.

An engine object holds its configuration only.  What a run resolves and adapts (the
model's batched density, the step count, an adapted step size, whether a warning was
given) lives in a [`ParticleRun`][pyro_stein.engines.base.ParticleRun], one per guide, so one
engine object can train several models, each as a fresh engine would.
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from pyro.infer import ELBO
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor

from ..glue.autoguide import autoguide_latent_batch, set_up
from ..glue.batching import BATCHING
from ..glue.density import Anchor, UnconstrainedLogDensity
from ..glue.local import LocalLogDensity
from ..guides.protocols import (
    LocalParticleSampler,
    ParticleSampler,
    PreconditionedSampler,
    TailStretchedSampler,
)
from ..ops.caller import warn
from ..ops.surrogate import direction_surrogate
from ..ops.tails import TailFreeCoordinates

__all__ = [
    "ANCHOR_EVERY",
    "LARGE_BATCH_TERMS",
    "anchor_due",
    "Engine",
    "LocalRun",
    "ParticleEngine",
    "ParticleRun",
    "Run",
]

#: Likelihood terms per step (particles x observations of one site, its plate not
#: subsampled) above which the engines warn: 512 particles x 20000 rows.  At 512 particles
#: x 100000 rows a regression's step took 4.7 s and 3.6 GB here.
LARGE_BATCH_TERMS = 10_000_000
#: Steps between the first re-anchorings of the control variate (then twice as many each time).
ANCHOR_EVERY = 50


@runtime_checkable
class Run(Protocol):
    """What `pyro_stein.fit` needs of an engine's per-run state."""

    step_count: int
    diagnostics: dict[str, float]
    recentering: bool

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """What `pyro_stein.fit` needs of an engine: a Pyro loss (``loss_and_grads``) that
    keeps a [`Run`][pyro_stein.engines.base.Run] per guide."""

    name: str

    def start_run(self, model: Callable, guide: Any, *args: Any, **kwargs: Any) -> Run: ...

    def loss_and_grads(self, model: Callable, guide: Any, *args: Any, **kwargs: Any) -> float: ...


@dataclass
class ParticleRun:
    """One engine's state on one guide (and its model).

    Attributes:
        model: the model the run was started for.
        density: the model's batched log density on the guide's layout.
        step_count: training steps taken (it drives re-centring).
        diagnostics: the last step's figures.
        recentering: whether the preconditioner may still be re-centred (`fit` turns it
            off while it averages the guide's parameters, which needs fixed coordinates).
        warned_invalid: whether the warning about invalid particles was given.
    """

    model: Callable
    density: UnconstrainedLogDensity
    step_count: int = 0
    diagnostics: dict[str, float] = field(default_factory=dict)
    recentering: bool = True
    warned_invalid: bool = False

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the run."""
        state: dict[str, Any] = {"step_count": self.step_count}
        if self.density.anchor is not None:
            state["anchor"] = self.density.anchor._asdict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # "num_steps": the key of checkpoints written before the engines shared this class.
        self.step_count = int(state.get("step_count", state.get("num_steps", 0)))
        anchor = state.get("anchor")
        self.density.anchor = None if anchor is None else Anchor(**anchor)


@dataclass
class LocalRun:
    """The state of one engine's run on a guide of local latents
    ([`LocalParticleSampler`][pyro_stein.guides.protocols.LocalParticleSampler])."""

    model: Callable
    density: LocalLogDensity
    step_count: int = 0
    diagnostics: dict[str, float] = field(default_factory=dict)
    recentering: bool = True
    #: The Langevin flow's step size, where the engine runs one (adapted per step).
    step_size: float | None = None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the run."""
        return {"step_count": self.step_count, "step_size": self.step_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.step_size = state.get("step_size")


def anchor_due(step: int) -> bool:
    """Whether a step re-anchors the control variate: steps 0, 50, 100, 200, 400, ... (the
    particles move most early on; each anchor costs one pass over the data)."""
    windows, rest = divmod(step, ANCHOR_EVERY)
    return rest == 0 and windows & (windows - 1) == 0


class ParticleEngine(ELBO):
    """Base class of the particle engines (see the module docstring).

    Subclasses implement `particle_loss()`, using `draw()`, `whitening()` and
    `unwhiten()`, and may extend `ParticleRun` (``run_type``) and `start_run()` with what
    their runs resolve.

    Args:
        num_particles: particles per step, at least 2.
        precondition: work in the guide's whitened coordinates (when the guide has a
            preconditioner, see [`PreconditionedSampler`][pyro_stein.guides.protocols.PreconditionedSampler]).
        recenter_every: re-centre the guide's preconditioner on the sampler's own mean
            and covariance every this many steps (``0``: never).
        batching: how to evaluate the model for all particles (see
            [`pyro_stein.glue.batching`][pyro_stein.glue.batching]).
        unstretch_tails: where the guide's sampler has learned heavy tails, work in the
            whitened coordinates with its tail stretch undone
            ([`TailFreeCoordinates`][pyro_stein.ops.tails.TailFreeCoordinates]), on the
            posterior pulled back through that map.
        control_variates: on a model that subsamples one plate, evaluate each step's
            minibatch against an anchor point where the full data's score is known
            ([`set_anchor`][pyro_stein.glue.density.UnconstrainedLogDensity.set_anchor]):
            the anchor is the particles' mean at steps 0, 50, 100, 200, 400, ..., one pass
            over the data each time.  A 100k-row regression subsampled to 1000 rows a step
            was off by 0.53 posterior sds in its means without them.
        compile_density: compile the model's batched log density
            ([`compile_for()`][pyro_stein.glue.density.UnconstrainedLogDensity.compile_for]):
            ``None`` (default) where a batch's operations produce at least
            `pyro_stein.glue.density.COMPILE_ELEMENTS` tensor elements, ``True`` always,
            ``False`` never.  A model written with broadcasting, ``(x * beta).sum(-1)``,
            stores a ``(particles, rows, features)`` product in eager PyTorch; compiled, it
            does not: the breast-cancer logistic regression's density and score went from
            41.4 to 3.4 ms a step (512 particles), and a default fit from 34 s to 19 s
            (27 s with an empty compiler cache).
    """

    #: The engine's name in messages.
    name = "ParticleEngine"
    #: The class of this engine's per-run state.
    run_type: ClassVar[type[ParticleRun]] = ParticleRun
    #: The smallest particle count measured to give correct posterior spreads, and what
    #: smaller counts gave: ``{count: "sd ratio range"}`` (``benchmarks/particle_count.py``).
    #: Fewer particles are accepted, with a warning quoting these figures.
    reliable_particles: ClassVar[int] = 2
    measured_spreads: ClassVar[dict[int, str]] = {}

    def __init__(
        self,
        num_particles: int,
        *,
        precondition: bool = True,
        recenter_every: int = 50,
        batching: str = "auto",
        unstretch_tails: bool = True,
        control_variates: bool = True,
        compile_density: bool | None = None,
    ) -> None:
        if not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(
                f"num_particles must be an integer >= 2 (particles interact, so a step "
                f"needs at least two), got {num_particles!r}"
            )
        if not isinstance(recenter_every, numbers.Integral) or recenter_every < 0:
            raise ValueError(f"recenter_every must be an integer >= 0, got {recenter_every!r}")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        if not isinstance(unstretch_tails, bool):
            raise TypeError(f"unstretch_tails must be True or False, got {unstretch_tails!r}")
        if num_particles < self.reliable_particles:
            measured = [count for count in self.measured_spreads if count <= num_particles]
            figure = (
                f" (at {max(measured)} particles the posterior sds came out {self.measured_spreads[max(measured)]} "
                "the true ones on Gaussian targets)"
                if measured
                else ""
            )
            warn(
                f"{self.name}(num_particles={num_particles}): fewer particles than {self.reliable_particles}, the "
                f"smallest count measured to give correct posterior spreads{figure}. Use num_particles >= "
                f"{self.reliable_particles} (the default is 512).",
                RuntimeWarning,
            )
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        self.precondition = precondition
        self.recenter_every = recenter_every
        self.batching = batching
        self.unstretch_tails = unstretch_tails
        if not isinstance(control_variates, bool):
            raise TypeError(f"control_variates must be True or False, got {control_variates!r}")
        self.control_variates = control_variates
        if not (compile_density is None or isinstance(compile_density, bool)):
            raise TypeError(f"compile_density must be True, False or None (automatic), got {compile_density!r}")
        self.compile_density = compile_density
        # Keyed by the guide, weakly: a run ends with its guide, and a new guide that
        # happens to get a dead one's id() starts afresh.
        self._runs: weakref.WeakKeyDictionary[Any, ParticleRun] = weakref.WeakKeyDictionary()
        self._last_guide: weakref.ref | None = None

    # ------------------------------------------------------------------ runs
    def start_run(self, model: Callable, guide: Any, *args: Any, **kwargs: Any) -> ParticleRun:
        """The run of this engine on ``guide``: the existing one if it was started for the
        same model, else a new one (the guide is set up and the model's density built).

        Raises:
            TypeError: ``guide`` is neither an `AutoContinuous` guide nor a sampler of local
                latents ([`LocalParticleSampler`][pyro_stein.guides.protocols.LocalParticleSampler]).
        """
        if isinstance(guide, LocalParticleSampler):
            return self._start_local_run(model, guide, args, kwargs)
        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                f"{self.name} trains guides that produce one unconstrained latent vector, "
                f"i.e. pyro.infer.autoguide.AutoContinuous subclasses such as "
                f"pyro_stein.AutoNeuralSampler; got {type(guide).__name__}."
            )
        run = self._runs.get(guide)
        if run is not None and run.model == model:  # == : a bound method is made anew per access
            return run
        set_up(guide, args, kwargs)
        batching = self.batching
        if batching == "auto" and isinstance(guide, ParticleSampler):
            batching = guide.batching  # the guide has already probed the model
        density = UnconstrainedLogDensity(model, guide, batching=batching)
        density.setup(args, kwargs)
        self._warn_large_batch(density)
        density.compile_for(self.num_particles, args, kwargs, policy=self.compile_density)
        run = self.run_type(model=model, density=density)
        self._resolve(run, guide)
        self._runs[guide] = run
        return run

    def _start_local_run(self, model: Callable, guide: Any, args: tuple, kwargs: dict) -> Any:
        run = self._runs.get(guide)
        if run is not None and run.model == model:
            return run
        guide.minibatch(args, kwargs)  # sets the guide up
        run = LocalRun(model=model, density=LocalLogDensity(model, guide.structure, guide.global_layout))
        self._runs[guide] = run
        return run

    def _warn_large_batch(self, density: UnconstrainedLogDensity) -> None:
        """Warn when every step evaluates more than `LARGE_BATCH_TERMS` likelihood terms of
        one observed site on its full data: time and memory per step grow with particles x
        rows, where a subsampled plate's do not."""
        if density.subsampled or density.largest_observed is None:
            return
        site, terms, plate = density.largest_observed
        total = self.num_particles * terms
        if total <= LARGE_BATCH_TERMS:
            return
        where = (
            f"subsample its plate, pyro.plate({plate!r}, size, subsample_size=...) with the data indexed by the "
            "plate's indices (the log-likelihood is then scaled to the full data: an unbiased estimate)"
            if plate is not None
            else "put its rows in a subsampled plate, pyro.plate('data', size, subsample_size=...)"
        )
        warn(
            f"{self.name}: every step evaluates the observed site {site!r} on {terms} terms for each of "
            f"{self.num_particles} particles ({total:.2g} terms per step, and time in proportion). "
            f"To make a step's cost independent of the data size, {where}; or use fewer particles "
            f"({self.name}(num_particles=...)).",
            RuntimeWarning,
        )

    def _resolve(self, run: ParticleRun, guide: Any) -> None:
        """Fill in what a subclass's run resolves once the model is known."""

    def run_of(self, guide: Any) -> ParticleRun:
        """The run started on ``guide``.

        Raises:
            KeyError: no run was started on it.
        """
        try:
            return self._runs[guide]
        except (KeyError, TypeError):
            raise KeyError(f"{self.name} has no run on this guide; train it first") from None

    @property
    def diagnostics(self) -> dict[str, float]:
        """The figures of the last step this engine took, on whichever guide."""
        guide = None if self._last_guide is None else self._last_guide()
        run = None if guide is None else self._runs.get(guide)
        return {} if run is None else run.diagnostics

    # ------------------------------------------------------------------ pieces of a step
    def draw(self, run: ParticleRun, guide: Any, args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None]:
        """This step's particle batch ``(N, D)``, differentiable in the guide's parameters,
        and its whitened coordinates where the guide computes them on the way."""
        if isinstance(guide, ParticleSampler):
            particles, whitened = guide.rsample_latent_batch(self.num_particles, return_whitened=True)
        else:
            particles = autoguide_latent_batch(guide, self.num_particles, run.density.max_plate_nesting, args, kwargs)
            whitened = None
        if torch.is_grad_enabled() and not particles.requires_grad:
            raise ValueError(
                "The guide's latent draws do not depend on any trainable parameter "
                f"(no reparameterized sample); {self.name} cannot train it."
            )
        if not torch.isfinite(particles).all():
            raise FloatingPointError(
                "The sampler produced non-finite particles; the learning rate is probably too "
                "large for this model."
            )
        if self.control_variates and run.density.subsampled and anchor_due(run.step_count):
            run.density.set_anchor(particles.detach().mean(0), args, kwargs)
        return particles, whitened

    def _preconditioner(self, guide: Any) -> tuple[Tensor, Tensor] | None:
        if self.precondition and isinstance(guide, PreconditionedSampler):
            return guide.preconditioner
        return None

    def whitening(self, guide: Any, particles: Tensor, whitened: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The coordinates the engine works in, and the scale ``L`` that maps them back
        (``None``: the unconstrained coordinates themselves)."""
        preconditioner = self._preconditioner(guide)
        if preconditioner is None:
            return particles, None
        loc, scale_tril = preconditioner
        if whitened is None:
            whitened = torch.linalg.solve_triangular(scale_tril, (particles - loc).T, upper=False).T
        return whitened, scale_tril

    def tail_free_coordinates(self, guide: Any) -> TailFreeCoordinates | None:
        """The map from `whitening()`'s coordinates to those in which the guide's heavy
        tails are undone, when this engine uses it (``unstretch_tails``, a preconditioned
        guide that stretches its tails, at least one coordinate with a tail weight of at
        least ``HEAVY_TAIL_WEIGHT``); else ``None``.  An engine may restrict it further.

        Why: a Cauchy-like coordinate's far draws are isolated in whitened coordinates,
        where a radial kernel exerts almost no force on them.  A default Amortized SVGD fit
        of a standard Cauchy came out with a 98% quantile of ``|z|`` of 25 to 26 (truth
        31.8) in whitened coordinates, and of 30.6 to 31.8 in these (seeds 0 to 2).
        """
        if self.unstretch_tails and self._preconditioner(guide) is not None and isinstance(guide, TailStretchedSampler):
            return guide.tail_free_coordinates()
        return None

    def unwhiten(self, guide: Any, coordinates: Tensor) -> Tensor:
        """Unconstrained latents from the coordinates of `whitening()` (its inverse)."""
        preconditioner = self._preconditioner(guide)
        if preconditioner is None:
            return coordinates
        loc, scale_tril = preconditioner
        return loc + coordinates @ scale_tril.T

    def warn_invalid(self, run: ParticleRun, invalid_fraction: float) -> None:
        """Warn once per run that particles reached where the log density is not finite."""
        if invalid_fraction <= 0 or run.warned_invalid:
            return
        run.warned_invalid = True
        warn(
            f"{invalid_fraction:.0%} of the particles at step {run.step_count} have a "
            "non-finite log density or gradient; they exert no force and are pulled back "
            "towards the others (see diagnostics['invalid_fraction']). If the model "
            "restricts a latent with a hard wall (a log density of -inf outside a "
            "region), particle methods are biased next to the wall: give the site a "
            "constrained support instead (a positive or interval distribution, or "
            "ImproperUniform with that support).",
            RuntimeWarning,
        )

    @staticmethod
    def raise_all_invalid(density: UnconstrainedLogDensity, z: Tensor, valid: Tensor, args: tuple, kwargs: dict) -> None:
        """Fail with the names of the non-finite terms at one of the invalid particles."""
        bad = (~valid).nonzero()[0, 0]
        culprits = density.non_finite_sites(z[bad].detach(), args, kwargs)
        raise FloatingPointError(
            f"{int((~valid).sum())} of {len(valid)} particles have a non-finite log density "
            f"or gradient; non-finite terms at one of them: {culprits or ['(the gradient)']}. "
            "The sampler has left the region where the model is defined; lower the "
            "learning rate or check the model."
        )

    @staticmethod
    def surrogate(coordinates: Tensor, direction: Tensor, value: Tensor, model_log_p: Tensor | None = None) -> Tensor:
        """[`direction_surrogate`][pyro_stein.ops.surrogate.direction_surrogate]: value
        ``value``, gradient minus the mean of ``<coordinates_i, direction_i>`` (and minus the
        mean of ``model_log_p`` for the model's own parameters, which estimates the gradient
        of the log evidence once the sampler matches the posterior: amortized MLE)."""
        return direction_surrogate(coordinates, direction, value, model_log_p)

    # ------------------------------------------------------------------ Pyro's loss protocol
    def particle_loss(self, run: ParticleRun, guide: Any, args: tuple, kwargs: dict) -> Tensor:
        """One step's surrogate on ``run`` (subclasses); it records ``run.diagnostics``."""
        raise NotImplementedError

    def local_particle_loss(self, run: LocalRun, guide: Any, args: tuple, kwargs: dict) -> Tensor:
        """One step's surrogate on a guide of local latents (subclasses that train them)."""
        raise NotImplementedError(
            f"{self.name} does not train samplers of local latents yet; use pyro_stein.AmortizedSVGD() as the loss."
        )

    def differentiable_loss(self, model: Callable, guide: Any, *args: Any, **kwargs: Any) -> Tensor:
        """A scalar whose gradient is minus the engine's update of the guide's parameters
        (and minus the mean log joint's gradient for model parameters), and whose value is
        the engine's monitored figure.  For PyTorch-style training loops, which then also
        own re-centring: call ``guide.recenter()`` every ``recenter_every`` steps
        (`loss_and_grads()`, which ``SVI`` uses, does it)."""
        run = self.start_run(model, guide, *args, **kwargs)
        self._last_guide = weakref.ref(guide)
        if isinstance(run, LocalRun):
            return self.local_particle_loss(run, guide, args, kwargs)
        return self.particle_loss(run, guide, args, kwargs)

    def loss_and_grads(self, model: Callable, guide: Any, *args: Any, **kwargs: Any) -> float:
        """One step's gradients (into ``.grad`` of the guide's parameters).

        Returns:
            The engine's monitored figure (see the subclass).
        """
        run = self.start_run(model, guide, *args, **kwargs)
        # Re-centre before drawing, so that this step's gradient and the optimizer's update
        # refer to the same coordinates.
        if self.recenter_due(run) and isinstance(guide, PreconditionedSampler):
            guide.recenter()
        elif self.recenter_due(run) and isinstance(guide, LocalParticleSampler):
            guide.recenter_globals()
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        run.step_count += 1
        return loss.item()

    def recenter_due(self, run: ParticleRun) -> bool:
        """Whether the next step of ``run`` starts by re-centring the preconditioner."""
        every = self.recenter_every
        return (
            self.precondition and run.recentering and every > 0 and run.step_count > 0 and run.step_count % every == 0
        )

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{self.name} works on particle batches, not ELBO trace pairs")

    def loss(self, model: Callable, guide: Any, *args: Any, **kwargs: Any) -> float:
        """The monitored figure for a fresh particle batch, without a step."""
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()
