"""What every particle engine shares: the Pyro loss protocol around a batch of particles.

An engine here is a `pyro.infer.ELBO` subclass that ``SVI`` calls as its ``loss``.
Each step draws ``N`` particles from a sampler guide in one batched pass, evaluates the
model's log joint and its score for all of them at once through
[`UnconstrainedLogDensity`][pyro_stein.model_density.UnconstrainedLogDensity], and back-propagates a
per-particle direction into the guide's parameters through the surrogate

    - 1/N sum_i <w_i, v_i>,   v_i detached,

whose gradient is ``-1/N sum_i (dw_i/deta)^T v_i``: an optimizer step then moves every
draw ``w_i`` along ``v_i``.  The directions come from the subclass
([`AmortizedSVGD`][pyro_stein.AmortizedSVGD]: the Stein variational direction;
[`CTFDistillation`][pyro_stein.CTFDistillation]: the displacement that matches the sampler's batch
to a Langevin flow's).  Both work in the guide's whitened coordinates
``w = L^{-1}(z - m)`` when it has a preconditioner.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor

from .model_density import BATCHING, PARTICLE_PLATE, UnconstrainedLogDensity

__all__ = ["ParticleEngine"]


class ParticleEngine(ELBO):
    """Base class of the particle engines (see the module docstring).

    Subclasses implement `differentiable_loss()`, using `setup()`,
    `draw()`, `whitening()` and `surrogate()`, and set ``self.diagnostics``.

    Args:
        num_particles: particles per step, at least 2.
        precondition: work in the guide's whitened coordinates (when the guide has a
            ``preconditioner``).
        recenter_every: re-centre the guide's preconditioner on the sampler's own mean
            and covariance every this many steps (``0``: never).
        batching: how to evaluate the model for all particles (see
            [`UnconstrainedLogDensity`][pyro_stein.model_density.UnconstrainedLogDensity]).
    """

    #: The engine's name in messages.
    name = "ParticleEngine"

    def __init__(
        self,
        num_particles: int,
        *,
        precondition: bool = True,
        recenter_every: int = 50,
        batching: str = "auto",
    ) -> None:
        if not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(
                f"num_particles must be an integer >= 2 (particles interact, so a step "
                f"needs at least two), got {num_particles!r}"
            )
        if recenter_every < 0:
            raise ValueError(f"recenter_every must be >= 0, got {recenter_every!r}")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        self.precondition = precondition
        self.recenter_every = recenter_every
        self.batching = batching
        #: Training steps taken (it drives re-centring).
        self.step_count = 0
        self.diagnostics: dict[str, float] = {}
        self._density: UnconstrainedLogDensity | None = None
        self._density_key: tuple[int, int] | None = None
        self._warned_invalid = False

    # ------------------------------------------------------------------ set-up
    def setup(self, model: Callable, guide: AutoContinuous, *args: Any, **kwargs: Any) -> UnconstrainedLogDensity:
        """Set up the guide and the model's batched log density (done by the first step).

        Returns:
            The [`UnconstrainedLogDensity`][pyro_stein.model_density.UnconstrainedLogDensity] used for scores.
        """
        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                f"{self.name} trains guides that produce one unconstrained latent vector, "
                f"i.e. pyro.infer.autoguide.AutoContinuous subclasses such as "
                f"pyro_stein.AutoNeuralSampler; got {type(guide).__name__}."
            )
        key = (id(model), id(guide))
        if self._density is not None and self._density_key == key:
            return self._density
        if guide.prototype_trace is None:
            with poutine.block():
                guide(*args, **kwargs)
        batching = self.batching
        if batching == "auto":  # the guide has already probed the model (AutoNeuralSampler)
            batching = getattr(guide, "batching", "auto")
        density = UnconstrainedLogDensity(model, guide, batching=batching)
        density.setup(args, kwargs)
        self._density, self._density_key = density, key
        return density

    def state_dict(self) -> dict[str, Any]:
        """The engine's own state (its step count, which drives re-centring)."""
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # "num_steps": the key of checkpoints written before the engines shared this class.
        self.step_count = int(state.get("step_count", state.get("num_steps", 0)))

    # ------------------------------------------------------------------ pieces of a step
    def draw(self, guide: AutoContinuous, density: UnconstrainedLogDensity, args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None]:
        """This step's particle batch ``(N, D)``, differentiable in the guide's parameters,
        and its whitened coordinates where the guide computes them on the way."""
        if hasattr(guide, "rsample_latent_batch"):
            particles, whitened = guide.rsample_latent_batch(self.num_particles, return_whitened=True)
        else:
            with pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-(density.max_plate_nesting + 1)):
                guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            latent = guide_trace.nodes[f"_{guide._pyro_name}_latent"]["value"]
            particles, whitened = latent.reshape(self.num_particles, guide.latent_dim), None
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
        return particles, whitened

    def whitening(self, guide: AutoContinuous, particles: Tensor, whitened: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The coordinates the engine works in, and the scale ``L`` that maps them back
        (``None``: the unconstrained coordinates themselves)."""
        preconditioner = getattr(guide, "preconditioner", None) if self.precondition else None
        if preconditioner is None:
            return particles, None
        loc, scale_tril = preconditioner
        if whitened is None:
            whitened = torch.linalg.solve_triangular(scale_tril, (particles - loc).T, upper=False).T
        return whitened, scale_tril

    def unwhiten(self, guide: AutoContinuous, coordinates: Tensor) -> Tensor:
        """Unconstrained latents from the coordinates of `whitening()` (its inverse)."""
        preconditioner = getattr(guide, "preconditioner", None) if self.precondition else None
        if preconditioner is None:
            return coordinates
        loc, scale_tril = preconditioner
        return loc + coordinates @ scale_tril.T

    def surrogate(self, coordinates: Tensor, direction: Tensor, value: Tensor, model_log_p: Tensor | None = None) -> Tensor:
        """A scalar whose value is ``value`` (the monitored figure) and whose gradient is
        minus the mean of ``<coordinates_i, direction_i>`` (and minus the mean of
        ``model_log_p`` for the model's own parameters, which estimates the gradient of the
        log evidence once the sampler matches the posterior: amortized MLE)."""
        surrogate = -(coordinates * direction.detach()).sum() / coordinates.shape[0]
        if model_log_p is not None:
            surrogate = surrogate - model_log_p.mean()
        return surrogate + (value.detach() - surrogate).detach()

    def warn_invalid(self, invalid_fraction: float) -> None:
        """Warn once that particles reached where the log density is not finite."""
        if invalid_fraction <= 0 or self._warned_invalid:
            return
        self._warned_invalid = True
        warnings.warn(
            f"{invalid_fraction:.0%} of the particles at step {self.step_count} have a "
            "non-finite log density or gradient; they exert no force and are pulled back "
            "towards the others (see diagnostics['invalid_fraction']). If the model "
            "restricts a latent with a hard wall (a log density of -inf outside a "
            "region), particle methods are biased next to the wall: give the site a "
            "constrained support instead (a positive or interval distribution, or "
            "ImproperUniform with that support).",
            RuntimeWarning,
            stacklevel=6,  # warn_invalid < _record < differentiable_loss < loss_and_grads < SVI.step < caller
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

    # ------------------------------------------------------------------ Pyro's loss protocol
    def differentiable_loss(self, model: Callable, guide: AutoContinuous, *args: Any, **kwargs: Any) -> Tensor:
        raise NotImplementedError

    def loss_and_grads(self, model: Callable, guide: AutoContinuous, *args: Any, **kwargs: Any) -> float:
        """One step's gradients (into ``.grad`` of the guide's parameters).

        Returns:
            The engine's monitored figure (see the subclass).
        """
        # Re-centre before drawing, so that this step's gradient and the optimizer's update
        # refer to the same coordinates.
        if self._recenter_due() and hasattr(guide, "recenter"):
            guide.recenter()
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        self.step_count += 1
        return loss.item()

    def _recenter_due(self) -> bool:
        every = self.recenter_every
        return self.precondition and every > 0 and self.step_count > 0 and self.step_count % every == 0

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{self.name} works on particle batches, not ELBO trace pairs")

    def loss(self, model: Callable, guide: AutoContinuous, *args: Any, **kwargs: Any) -> float:
        """The monitored figure for a fresh particle batch, without a step."""
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()
