"""Amortized Stein variational gradient descent as a Pyro loss.

Each step draws ``N`` particles from the guide (one batched forward pass), evaluates the score of the model's log joint in unconstrained space for
the whole batch at once, forms the Stein variational direction ``phi`` in the guide's
whitened coordinates, and back-propagates it into the sampler's parameters:

    eta <- eta + lr * 1/N sum_i (d w_i / d eta)^T phi(w_i),    w_i = L^{-1}(z_i - m).

References:
    D. Wang and Q. Liu. "Learning to Draw Samples: With Application to Amortized MLE for
    Generative Adversarial Learning." arXiv:1611.01722, 2016.
    Y. Feng, D. Wang and Q. Liu. "Learning to Draw Samples with Amortized Stein Variational
    Gradient Descent." UAI 2017.
    D. Wang, Z. Tang, C. Bajaj and Q. Liu. "Stein Variational Gradient Descent with
    Matrix-Valued Kernels." NeurIPS 2019 (the preconditioned kernel
    ``K(x, y) = L L^T k(L^{-1} x, L^{-1} y)``).
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

from .kernels import RadialKernel, RBFKernel
from .model_density import BATCHING, PARTICLE_PLATE, UnconstrainedLogDensity
from .stein import kernel_gram, squared_ksd, stein_direction

__all__ = ["AmortizedSVGD", "DEFAULT_BANDWIDTH_FACTOR"]

#: The default kernel's bandwidth, as a multiple of Liu & Wang's median heuristic.  Wider
#: than theirs because every batch here is a fresh i.i.d. draw: the kernel then weights
#: the population direction rather than balancing a fixed particle set, and a local kernel
#: biases the fixed point where the sampler cannot represent the posterior exactly
#: (docs/defaults.md has the measurements).
DEFAULT_BANDWIDTH_FACTOR = 3.0

#: How hard particles where the log density is not finite are pulled back towards the valid
#: ones (a multiple of a mean-shift step).  At 1 a sampler next to a hard wall
#: (``pyro.factor(..., -inf)`` outside a region) kept about 20% of its draws beyond it; at
#: 10 none (docs/defaults.md).
INVALID_PULL = 10.0


class AmortizedSVGD(ELBO):
    """Amortized SVGD: train a sampler guide along the Stein variational direction.

    Use it as the ``loss`` of :class:`pyro.infer.SVI` with an
    :class:`~pyro_stein.AutoNeuralSampler` (any
    :class:`~pyro.infer.autoguide.AutoContinuous` guide with reparameterized samples also
    works, without preconditioning).  ``SVI.step`` returns the U-statistic estimate of the
    squared kernelized Stein discrepancy between the particle batch and the posterior,
    measured with the training kernel in whitened coordinates; it fluctuates around zero
    once the sampler has converged.  It is not an ELBO.  More per-step figures are in
    :attr:`diagnostics`.

    Particles where the log density or its gradient is NaN or infinite are taken out of
    the empirical measure (they exert no force and do not set the bandwidth) and are
    pulled back towards the valid particles, which moves the sampler's mass out of the
    region where the model is undefined; their fraction is reported in
    ``diagnostics["invalid_fraction"]`` and a warning is issued the first time it happens.

    If the model has parameters (``pyro.param`` / ``pyro.module``), they receive the
    gradient of the mean log joint over the valid particles, which estimates the gradient
    of the log evidence once the sampler matches the posterior (amortized MLE / empirical
    Bayes).

    Args:
        kernel: a radial kernel; default ``RBFKernel(bandwidth_factor=3.0)``: the median
            heuristic widened threefold, which lets each particle's direction average over
            more neighbours (see ``docs/defaults.md``).
        num_particles: particles per step, at least 2.
        leave_one_out: drop each particle's interaction with itself (see
            :func:`pyro_stein.stein.stein_direction`).
        precondition: compute the kernel and the direction in the guide's whitened
            coordinates (when the guide has a ``preconditioner``), i.e. use the
            matrix-valued kernel ``L L^T k(L^{-1} x, L^{-1} y)``.
        recenter_every: re-centre the guide's preconditioner on the sampler's own mean
            and covariance every this many steps (``0``: never), so that the kernel and
            the optimizer keep working in coordinates where the sampler is isotropic.
        batching: how to evaluate the model for all particles: ``"auto"`` (default)
            tries an outer particle plate, then ``torch.func.vmap``, checking each against
            one-particle evaluations on the first step, and falls back to a per-particle
            loop with a warning; or ``"plate"``, ``"vmap"``, ``"loop"`` (see
            :class:`~pyro_stein.model_density.UnconstrainedLogDensity`).

    Example:
        >>> import pyro
        >>> from pyro.infer import SVI
        >>> from pyro_stein import AmortizedSVGD, AutoNeuralSampler
        >>> guide = AutoNeuralSampler(model)                      # doctest: +SKIP
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}),
        ...           loss=AmortizedSVGD(num_particles=128))      # doctest: +SKIP
        >>> for step in range(2000):
        ...     ksd2 = svi.step(data)                             # doctest: +SKIP
    """

    def __init__(
        self,
        kernel: RadialKernel | None = None,
        num_particles: int = 512,
        *,
        leave_one_out: bool = True,
        precondition: bool = True,
        recenter_every: int = 50,
        batching: str = "auto",
    ) -> None:
        if not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(
                f"num_particles must be an integer >= 2 (the Stein direction needs at "
                f"least two particles to interact), got {num_particles!r}"
            )
        if kernel is not None and not isinstance(kernel, RadialKernel):
            raise TypeError(f"kernel must be a pyro_stein.kernels.RadialKernel, got {type(kernel).__name__}")
        if recenter_every < 0:
            raise ValueError(f"recenter_every must be >= 0, got {recenter_every!r}")
        super().__init__(num_particles=num_particles, vectorize_particles=True)
        self.kernel = kernel if kernel is not None else RBFKernel(bandwidth_factor=DEFAULT_BANDWIDTH_FACTOR)
        self.leave_one_out = leave_one_out
        self.precondition = precondition
        self.recenter_every = recenter_every
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
        self.batching = batching
        self.num_steps = 0
        self.diagnostics: dict[str, float] = {}
        self._density: UnconstrainedLogDensity | None = None
        self._density_key: tuple[int, int] | None = None
        self._warned_invalid = False

    # ------------------------------------------------------------------ set-up
    def setup(self, model: Callable, guide: AutoContinuous, *args: Any, **kwargs: Any) -> UnconstrainedLogDensity:
        """Set up the guide and the model's batched log density (done by the first step).

        Returns:
            The :class:`~pyro_stein.model_density.UnconstrainedLogDensity` used for scores.
        """
        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                "AmortizedSVGD trains guides that produce one unconstrained latent vector, "
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
        return {"num_steps": self.num_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_steps = int(state["num_steps"])

    # ------------------------------------------------------------------ a step
    def _particles(self, guide: AutoContinuous, num_plates: int, args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None]:
        """The particle batch and, where the guide computes them, its whitened coordinates."""
        if hasattr(guide, "rsample_latent_batch"):
            return guide.rsample_latent_batch(self.num_particles, return_whitened=True)
        with pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-(num_plates + 1)):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        latent = guide_trace.nodes[f"_{guide._pyro_name}_latent"]["value"]
        return latent.reshape(self.num_particles, guide.latent_dim), None

    def _whitening(
        self, guide: AutoContinuous, particles: Tensor, whitened: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """The coordinates the kernel works in, and the scale ``L`` that maps them back."""
        preconditioner = getattr(guide, "preconditioner", None) if self.precondition else None
        if preconditioner is None:
            return particles, None
        loc, scale_tril = preconditioner
        if whitened is None:
            whitened = torch.linalg.solve_triangular(scale_tril, (particles - loc).T, upper=False).T
        return whitened, scale_tril

    def differentiable_loss(self, model: Callable, guide: AutoContinuous, *args: Any, **kwargs: Any) -> Tensor:
        """A scalar whose gradient is minus the amortized SVGD update of the guide's
        parameters (and minus the mean log joint's gradient for model parameters), and
        whose value is the squared-KSD estimate.  For PyTorch-style training loops, which
        then also own re-centring: call ``guide.recenter()`` every ``recenter_every`` steps
        (:meth:`loss_and_grads`, which ``SVI`` uses, does it)."""
        density = self.setup(model, guide, *args, **kwargs)
        particles, whitened = self._particles(guide, density.max_plate_nesting, args, kwargs)
        if torch.is_grad_enabled() and not particles.requires_grad:
            raise ValueError(
                "The guide's latent draws do not depend on any trainable parameter "
                "(no reparameterized sample); AmortizedSVGD cannot train it."
            )
        if not torch.isfinite(particles).all():
            raise FloatingPointError(
                "The sampler produced non-finite particles; the learning rate is probably too "
                "large for this model."
            )

        log_p, scores, valid = self._scores(density, particles, args, kwargs)

        whitened, scale_tril = self._whitening(guide, particles, whitened)
        white_scores = scores if scale_tril is None else scores @ scale_tril
        gram = kernel_gram(whitened.detach(), self.kernel, valid)
        direction = stein_direction(
            white_scores, gram, leave_one_out=self.leave_one_out, invalid_pull=INVALID_PULL
        )
        sq_ksd = squared_ksd(white_scores, gram)

        surrogate = -(whitened * direction).sum() / self.num_particles
        if density.has_model_params:
            surrogate = surrogate - log_p[valid].mean()
        self._record(valid, direction, gram.profile.bandwidth, sq_ksd)
        # Value: the monitored discrepancy.  Gradient: the Stein update.
        return surrogate + (sq_ksd - surrogate).detach()

    def _scores(
        self, density: UnconstrainedLogDensity, particles: Tensor, args: tuple, kwargs: dict
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Log density, score and validity (both finite) of each particle."""
        log_p, scores, valid = density.log_prob_and_score(
            particles, args, kwargs, retain_graph=density.has_model_params
        )
        if valid.sum() < 2:
            self._raise_all_invalid(density, particles, valid, args, kwargs)
        return log_p, scores, valid

    def _record(self, valid: Tensor, direction: Tensor, bandwidth: Tensor, sq_ksd: Tensor) -> None:
        invalid_fraction = 1.0 - valid.float().mean().item()
        if invalid_fraction > 0 and not self._warned_invalid:
            self._warned_invalid = True
            warnings.warn(
                f"{invalid_fraction:.0%} of the particles at step {self.num_steps} have a "
                "non-finite log density or gradient; they exert no force and are pulled back "
                "towards the others (see diagnostics['invalid_fraction']). If the model "
                "restricts a latent with a hard wall (a log density of -inf outside a "
                "region), Stein methods are biased next to the wall: give the site a "
                "constrained support instead (a positive or interval distribution, or "
                "ImproperUniform with that support).",
                RuntimeWarning,
                stacklevel=5,  # _record < differentiable_loss < loss_and_grads < SVI.step < caller
            )
        # One transfer for all figures (they may live on an accelerator).
        figures = torch.stack([sq_ksd.detach(), direction[valid].pow(2).sum(-1).mean(), bandwidth]).tolist()
        self.diagnostics = dict(zip(("squared_ksd", "stein_force", "bandwidth"), figures))
        self.diagnostics["invalid_fraction"] = invalid_fraction

    @staticmethod
    def _raise_all_invalid(density, z, valid, args, kwargs) -> None:
        bad = (~valid).nonzero()[0, 0]
        culprits = density.non_finite_sites(z[bad].detach(), args, kwargs)
        raise FloatingPointError(
            f"{int((~valid).sum())} of {len(valid)} particles have a non-finite log density "
            f"or gradient; non-finite terms at one of them: {culprits or ['(the gradient)']}. "
            "The sampler has left the region where the model is defined; lower the "
            "learning rate or check the model."
        )

    def loss_and_grads(self, model: Callable, guide: AutoContinuous, *args: Any, **kwargs: Any) -> float:
        """One amortized SVGD step's gradients (into ``.grad`` of the guide's parameters).

        Returns:
            The squared-KSD estimate (see the class docstring).
        """
        # Re-centre before drawing, so that this step's gradient and the optimizer's update
        # refer to the same coordinates.
        if self._recenter_due() and hasattr(guide, "recenter"):
            guide.recenter()
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        self.num_steps += 1
        return self.diagnostics["squared_ksd"]

    def _recenter_due(self) -> bool:
        every = self.recenter_every
        return self.precondition and every > 0 and self.num_steps > 0 and self.num_steps % every == 0

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("AmortizedSVGD works on particle batches, not ELBO trace pairs")

    def loss(self, model: Callable, guide: AutoContinuous, *args: Any, **kwargs: Any) -> float:
        """The squared-KSD estimate for a fresh particle batch, without a step."""
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()
