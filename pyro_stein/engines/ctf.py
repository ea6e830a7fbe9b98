"""Continuous-time-flow distillation as a Pyro loss.

Each step draws ``N`` particles from the sampler guide, runs ``K`` steps of the
discretized Langevin flow ``dz = 1/2 grad log p(z) dt + dW`` on the model's log joint in
unconstrained space from all of them at once ([`langevin_flow()`][pyro_stein.ops.langevin.langevin_flow]),
and moves the sampler's batch towards the evolved batch *as a distribution*: each draw is
pushed along the sliced-Wasserstein (or energy-distance) transport from the sampler's
batch to the flow's ([`pyro_stein.ops.matching`][pyro_stein.ops.matching]).  Repeated, the flow is distilled into
the sampler, whose draws then cost one forward pass.  At the fixed point the sampler's
law is invariant under the flow; with the Metropolis-adjusted flow (the default) that is
the posterior itself, for any step size.

The flow, like everything else, runs in the guide's whitened coordinates
``w = L^{-1}(z - m)``, i.e. it is Langevin dynamics preconditioned by the guide's current
estimate of the posterior covariance, so one step size serves all latents.

References:
    C. Chen, C. Li, L. Chen, W. Wang, Y. Pu and L. Carin. "Continuous-Time Flows for
    Efficient Inference and Density Estimation." ICML 2018.
    S. J. Gershman and N. D. Goodman. "Amortized Inference in Probabilistic Reasoning."
    CogSci 2014.
    M. Welling and Y. W. Teh. "Bayesian Learning via Stochastic Gradient Langevin Dynamics."
    ICML 2011 (the unadjusted flow on minibatches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..ops.langevin import LangevinRun, langevin_flow
from ..ops.matching import energy_distance_direction, random_projections, sliced_wasserstein_direction
from ..ops.tails import HEAVY_TAIL_SLOPE, TailFreeCoordinates, far_log_density_slope
from .base import LocalRun, ParticleEngine, ParticleRun

__all__ = ["CTFDistillation", "CTFRun", "MATCHINGS"]

#: The distribution-matching objectives a step can use.
MATCHINGS = ("sliced_wasserstein", "energy")

#: How fast ``log h`` follows the acceptance rate (per step, per unit of acceptance gap).
ADAPTATION_RATE = 0.05

#: The unadjusted flow's fixed step size on subsampled models (whitened units).  Each flow
#: step sees another minibatch, so the gradient noise inflates the flow's spread by about
#: ``1 + h Var(noise) / 4`` and the Metropolis ratio of two minibatches says nothing about
#: the discretization.  On a regression with minibatches of 100 out of 1000: sd ratio 1.19
#: at h = 0.1, 1.07 at 0.04, 1.01-1.04 at 0.02 (docs/ctf.md).
SUBSAMPLED_STEP_SIZE = 0.02

#: The default Metropolis acceptance rate the step size is adapted to (see the class docstring).
DEFAULT_TARGET_ACCEPT = 0.9


@dataclass
class CTFRun(ParticleRun):
    """A CTF distillation run: the particle run plus what the flow resolves and adapts.

    Attributes:
        step_size: the flow's current step size ``h`` (whitened units), adapted per step.
        metropolis: whether the flow is Metropolis-adjusted (resolved from the model).
    """

    step_size: float = 0.0
    metropolis: bool = True

    def state_dict(self) -> dict[str, Any]:
        """Step count and the adapted step size."""
        return {**super().state_dict(), "step_size": self.step_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.step_size = state["step_size"]


class CTFDistillation(ParticleEngine):
    """Distil a discretized Langevin flow into a sampler guide (Chen et al., 2018).

    Use it as the ``loss`` of `pyro.infer.SVI` with an
    [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler], or as ``pyro_stein.fit(..., engine="ctf")``.
    ``SVI.step`` returns the sliced squared Wasserstein distance (or the energy distance)
    between the sampler's batch and the flow's batch in whitened coordinates: how far
    ``K`` flow steps still move the sampler's law; it shrinks towards the Monte Carlo
    noise floor as the sampler converges.  More per-step figures are in
    `diagnostics`: ``distance``, ``acceptance`` (the mean Metropolis acceptance
    probability, computed under ULA too), ``step_size``, ``moved`` (fraction of
    particle-steps that moved) and ``invalid_fraction``.

    Particles drawn where the log density is not finite cannot flow; they stay out of the
    flow's batch, and the matching pulls them towards it.  Proposals into such regions are
    rejected, under ULA too.

    If the model has parameters, they receive the gradient of the mean log joint at the
    flow's particles (amortized MLE, as in Chen et al.'s density estimation).

    Args:
        num_steps: ``K``, flow steps per training step.
        step_size: ``h`` of the flow in whitened coordinates; default ``D^(-1/3)``, the
            scale at which MALA's acceptance stays away from zero as the dimension ``D``
            grows (Roberts & Rosenthal, 1998), and 0.02 on subsampled models (see
            ``SUBSAMPLED_STEP_SIZE``).  With ``adapt_step_size`` it is only the starting
            value.
        num_particles: particles per step, at least 2.
        metropolis: accept or reject each flow step (MALA), which removes the
            discretization bias; ``False`` gives the unadjusted flow (ULA).  Default: MALA,
            except for models with subsampled plates, where the Metropolis test on a
            minibatch would be wrong and the unadjusted flow is stochastic-gradient
            Langevin dynamics.
        adapt_step_size: after each step, move ``log h`` by ``0.05 * (acceptance -
            target_accept)``.  Not on subsampled models, where each flow step sees another
            minibatch and the acceptance measures minibatch noise.
        target_accept: the acceptance rate the step size is adapted to; default 0.9
            (``DEFAULT_TARGET_ACCEPT``): a high acceptance keeps the flow's steps small
            enough to follow the continuous-time flow that is distilled (Roberts &
            Rosenthal's 0.574 maximises a single chain's efficiency instead).
        matching: ``"sliced_wasserstein"`` (default) or ``"energy"``; see
            [`pyro_stein.ops.matching`][pyro_stein.ops.matching].
        num_projections: directions of the sliced Wasserstein distance per step (rounded
            up to whole orthonormal bases).
        precondition: as in [`AmortizedSVGD`][pyro_stein.AmortizedSVGD].
        recenter_every: as in [`AmortizedSVGD`][pyro_stein.AmortizedSVGD].
        batching: as in [`AmortizedSVGD`][pyro_stein.AmortizedSVGD].
        control_variates: minibatch noise reduction on a subsampled plate, as in
            [`ParticleEngine`][pyro_stein.engines.base.ParticleEngine].
        compile_density: compile the model's batched log density, as in
            [`ParticleEngine`][pyro_stein.engines.base.ParticleEngine] (default: where it
            is costly enough to repay the seconds of compiling).
        unstretch_tails: run the flow and the matching in whitened coordinates with the
            guide's tail stretch undone
            ([`TailFreeCoordinates`][pyro_stein.ops.tails.TailFreeCoordinates]), on the
            posterior pulled back through that map, in the coordinates where both the
            sampler (a tail weight of at least `pyro_stein.ops.tails.HEAVY_TAIL_WEIGHT`)
            and the posterior at the batch's far draws
            ([`far_log_density_slope()`][pyro_stein.ops.tails.far_log_density_slope] below
            `pyro_stein.ops.tails.HEAVY_TAIL_SLOPE`) are heavy tailed.  In whitened
            coordinates a Cauchy's far draws barely feel its density, the flow only diffuses
            them, and the sampler's tails grew far too heavy (98% quantile of ``|z|`` 384,
            truth 31.8); in these coordinates it gave 29.7 and 28.9 (seeds 0 and 1).  The
            posterior's own test matters: with the sampler's alone, a correlated Gaussian
            whose sampler's tail weight passed the threshold in a transient (a 600-step
            energy-distance fit started at scale 0.3) was pulled back to tails lighter than
            Gaussian, the Metropolis-adjusted flow's acceptance fell to 0.13, it stopped
            moving the far draws, and the tail weight ran away until the draws' covariance
            could not be estimated.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import SVI
        >>> from pyro_stein import AutoNeuralSampler, CTFDistillation
        >>> def model():
        ...     pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> guide = AutoNeuralSampler(model)
        >>> engine = CTFDistillation(num_steps=3, num_particles=128)
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), loss=engine)
        >>> for step in range(20):
        ...     distance = svi.step()
        >>> engine.run_of(guide).step_count, round(engine.run_of(guide).step_size, 2) > 0
        (20, True)
    """

    name = "CTFDistillation"
    # Measured as for AmortizedSVGD: the flow's batch comes out too narrow, less so with more
    # particles (sd ratios 0.91-0.94 at 32, 0.95-0.97 at 64).
    reliable_particles = 32
    measured_spreads = {2: "0.27 to 0.46 times", 4: "0.56 to 0.67 times", 8: "0.72 to 0.80 times", 16: "0.83 to 0.88 times"}

    def __init__(
        self,
        num_steps: int = 3,
        step_size: float | None = None,
        num_particles: int = 512,
        *,
        metropolis: bool | None = None,
        adapt_step_size: bool = True,
        target_accept: float | None = None,
        matching: str = "sliced_wasserstein",
        num_projections: int = 64,
        precondition: bool = True,
        recenter_every: int = 50,
        batching: str = "auto",
        unstretch_tails: bool = True,
        control_variates: bool = True,
        compile_density: bool | None = None,
    ) -> None:
        super().__init__(
            num_particles,
            precondition=precondition,
            recenter_every=recenter_every,
            batching=batching,
            unstretch_tails=unstretch_tails,
            control_variates=control_variates,
            compile_density=compile_density,
        )
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps (flow steps per training step) must be an integer >= 1, got {num_steps!r}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        if target_accept is not None and not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
        if not isinstance(num_projections, int) or num_projections < 1:
            raise ValueError(f"num_projections must be a positive integer, got {num_projections!r}")
        self.num_steps = num_steps
        self.step_size = step_size
        self.metropolis = metropolis
        self.adapt_step_size = adapt_step_size
        self.target_accept = target_accept
        self.matching = matching
        self.num_projections = num_projections

    run_type = CTFRun

    def _resolve(self, run: CTFRun, guide: Any) -> None:
        subsampled = run.density.subsampled
        if self.metropolis and subsampled:
            raise ValueError(
                "metropolis=True needs the full log density, but the model subsamples a "
                "plate: a Metropolis test on minibatch estimates targets the wrong law. Use "
                "metropolis=False (stochastic-gradient Langevin dynamics) or drop "
                "subsample_size."
            )
        run.metropolis = (not subsampled) if self.metropolis is None else self.metropolis
        if self.step_size is not None:
            run.step_size = float(self.step_size)
        elif subsampled and not run.metropolis:
            run.step_size = SUBSAMPLED_STEP_SIZE
        else:
            run.step_size = run.density.layout.latent_dim ** (-1.0 / 3.0)

    @property
    def resolved_target_accept(self) -> float:
        return DEFAULT_TARGET_ACCEPT if self.target_accept is None else self.target_accept

    # ------------------------------------------------------------------ a step
    def flow(
        self,
        run: CTFRun,
        guide: Any,
        whitened: Tensor,
        scale_tril: Tensor | None,
        args: tuple,
        kwargs: dict,
        tails: TailFreeCoordinates | None = None,
        initial: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> LangevinRun:
        """Run this engine's ``K``-step flow from ``whitened`` (detached), in the
        coordinates of `whitening()` (``scale_tril`` is its ``L``, or ``None``); the
        run's ``score`` is in those coordinates too.  With ``tails``, ``whitened`` are
        that map's tail-free coordinates instead, and the flow targets the posterior
        pulled back through it (density times the map's Jacobian).  ``initial``: the
        log density, score and validity at the start in those coordinates, if known.

        A particle that starts where the log density is not finite stays there and every
        other one only moves to valid points, so the run has as many valid particles as
        the start, which is checked here.
        """

        density = run.density

        def log_prob_and_score(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            # The Jacobian of z = m + L w is constant: it does not change scores or
            # acceptance ratios.
            log_p, score, valid = density.log_prob_and_score(self.unwhiten(guide, w), args, kwargs)
            return log_p, (score if scale_tril is None else score @ scale_tril), valid

        if tails is not None:
            whitened_log_prob_and_score = log_prob_and_score

            def log_prob_and_score(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
                w, log_derivative = tails.to_stretched(v)
                log_p, score, valid = whitened_log_prob_and_score(w)
                return log_p + log_derivative.sum(-1), tails.pull_back_score(score, v, log_derivative), valid

        start = whitened.detach()
        if initial is None:
            initial = log_prob_and_score(start)
        if initial[2].sum() < 2:
            stretched = start if tails is None else tails.to_stretched(start)[0]
            self.raise_all_invalid(density, self.unwhiten(guide, stretched), initial[2], args, kwargs)
        return langevin_flow(
            log_prob_and_score,
            start,
            self.num_steps,
            run.step_size,
            metropolis=run.metropolis,
            initial=initial,
            tamed=not run.metropolis,
        )

    def match(self, x: Tensor, y: Tensor, scale_tril: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The direction that moves batch ``x`` towards batch ``y``'s law, and the distance."""
        if self.matching == "energy":
            return energy_distance_direction(x, y)
        projections = random_projections(x.shape[1], self.num_projections, dtype=x.dtype, device=x.device)
        if scale_tril is not None:
            # The latents' own axes: z_j = m_j + <L_j, w>, so projecting w on the unit row
            # L_j / |L_j| matches each latent's marginal directly.
            axes = scale_tril / scale_tril.norm(dim=-1, keepdim=True)
            projections = torch.cat([projections, axes.T], dim=1)
        return sliced_wasserstein_direction(x, y, projections)

    def particle_loss(self, run: CTFRun, guide: Any, args: tuple, kwargs: dict) -> Tensor:
        """A scalar whose gradient is minus the distillation update of the guide's
        parameters (and minus the mean log joint's gradient for model parameters), and
        whose value is the distance between the sampler's batch and the flow's."""
        density = run.density
        particles, whitened = self.draw(run, guide, args, kwargs)
        whitened, scale_tril = self.whitening(guide, particles, whitened)
        coordinates = whitened.detach()
        initial = None
        tails = self.tail_free_coordinates(guide)
        if tails is not None:
            # The flow's own start evaluation, made here to test the posterior's tails; the
            # flow reuses it whether or not a coordinate stays tail-free.
            log_p, score, valid = density.log_prob_and_score(self.unwhiten(guide, coordinates), args, kwargs)
            if scale_tril is not None:
                score = score @ scale_tril
            initial = (log_p, score, valid)
            tails = tails.restricted(far_log_density_slope(coordinates, score, valid) < HEAVY_TAIL_SLOPE)
        if tails is not None:
            coordinates, log_derivative = tails.from_stretched(coordinates)
            initial = (
                log_p + log_derivative.sum(-1),
                tails.pull_back_score(score, coordinates, log_derivative),
                valid,
            )
        flowed = self.flow(run, guide, coordinates, scale_tril, args, kwargs, tails, initial)
        direction, distance = self.match(coordinates, flowed.particles[flowed.valid], scale_tril)
        if tails is not None:
            direction = tails.push_direction(direction, log_derivative)

        model_log_p = None
        if density.has_model_params:
            arrived = flowed.particles[flowed.valid]
            if tails is not None:
                arrived = tails.to_stretched(arrived)[0]
            model_log_p = density(self.unwhiten(guide, arrived), args, kwargs)
        self._record(run, flowed, distance)
        if self.adapt_step_size and not density.subsampled and torch.is_grad_enabled():
            gap = run.diagnostics["acceptance"] - self.resolved_target_accept
            run.step_size = run.step_size * math.exp(ADAPTATION_RATE * gap)
        return self.surrogate(whitened, direction, distance, model_log_p)

    def local_particle_loss(self, run: LocalRun, guide: Any, args: tuple, kwargs: dict) -> Tensor:
        """The surrogate for a guide of local latents: ``num_particles`` draws of every
        row's latents flow ``num_steps`` Metropolis-adjusted Langevin steps, each row's
        chain on its own conditional posterior (in the coordinates its encoder whitens,
        with its own accept/reject: the rows are independent given the minibatch), and each
        row's draws are matched to its flowed draws by the sliced Wasserstein direction.
        Its value is the mean over the rows of the sliced squared Wasserstein distance."""
        batch = guide.minibatch(args, kwargs)
        if len(batch) != 1:
            raise NotImplementedError(f"{self.name} trains the local latents of one data plate; the model has {sorted(batch)}")
        if guide.global_layout is not None:
            raise NotImplementedError(
                f"{self.name} does not train global latents beside local ones yet (the model's "
                f"{list(guide.structure.global_sites)}); use pyro_stein.AmortizedSVGD() as the loss, or engine='asvgd'."
            )
        ((plate, rows),) = batch.items()
        draws, whitened, scale_tril = guide.rsample_local(plate, rows, self.num_particles)
        num, width, dim = whitened.shape
        loc = (draws - (scale_tril @ whitened.unsqueeze(-1)).squeeze(-1)).detach()[0]
        density = run.density
        if run.step_size is None:
            run.step_size = float(self.step_size) if self.step_size is not None else dim ** (-1.0 / 3.0)

        def unwhiten(w: Tensor) -> Tensor:
            return loc + (scale_tril @ w.reshape(num, width, dim).unsqueeze(-1)).squeeze(-1)

        def log_prob_and_score(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            row_log_p, scores = density.log_prob_and_scores({plate: unwhiten(w)}, batch, args, kwargs, per_row=plate)
            white = (scores[plate].unsqueeze(-2) @ scale_tril).squeeze(-2).reshape(-1, dim)
            log_p = row_log_p.reshape(-1)
            return log_p, white, torch.isfinite(log_p) & torch.isfinite(white).all(-1)

        start = whitened.detach().reshape(-1, dim)
        initial = log_prob_and_score(start)
        if not bool(initial[2].all()):
            raise FloatingPointError(
                f"The log density of the local latents of plate {plate!r} is not finite at "
                f"{int((~initial[2]).sum())} of {len(start)} particles: lower the learning rate, or check the model's "
                "likelihood at the rows of this minibatch."
            )
        metropolis = True if self.metropolis is None else self.metropolis
        flowed = langevin_flow(
            log_prob_and_score, start, self.num_steps, run.step_size, metropolis=metropolis, initial=initial,
            tamed=not metropolis,
        )
        projections = random_projections(dim, self.num_projections, dtype=start.dtype, device=start.device)
        direction, distance = sliced_wasserstein_direction(
            start.reshape(num, width, dim).transpose(0, 1), flowed.particles.reshape(num, width, dim).transpose(0, 1),
            projections,
        )
        model_log_p = None
        if density.has_model_params:
            model_log_p, _ = density.log_prob_and_scores(
                {plate: unwhiten(flowed.particles)}, batch, args, kwargs, retain_graph=True
            )
        figures = torch.stack([distance.mean(), flowed.acceptance, flowed.moved]).tolist()
        run.diagnostics = {**dict(zip(("distance", "acceptance", "moved"), figures)), "step_size": float(run.step_size)}
        if self.adapt_step_size and torch.is_grad_enabled():
            gap = run.diagnostics["acceptance"] - self.resolved_target_accept
            run.step_size = run.step_size * math.exp(ADAPTATION_RATE * gap)
        return self.surrogate(
            whitened.reshape(-1, dim), direction.transpose(0, 1).reshape(-1, dim), distance.mean(), model_log_p
        )

    def _record(self, run: CTFRun, flowed: LangevinRun, distance: Tensor) -> None:
        invalid_fraction = 1.0 - flowed.valid.float().mean().item()
        self.warn_invalid(run, invalid_fraction)
        figures = torch.stack([distance.detach(), flowed.acceptance, flowed.moved]).tolist()
        run.diagnostics = dict(zip(("distance", "acceptance", "moved"), figures))
        run.diagnostics["step_size"] = float(run.step_size)
        run.diagnostics["invalid_fraction"] = invalid_fraction
