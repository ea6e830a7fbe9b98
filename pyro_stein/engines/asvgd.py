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

from typing import Any

import torch
from torch import Tensor

from ..glue.local import GLOBAL
from ..ops.dimensions import HIGH_DIMENSION
from ..ops.grouped_stein import grouped_kernel_gram, grouped_squared_ksd, grouped_stein_direction
from ..ops.kernels import RadialKernel, RBFKernel
from ..ops.stein import kernel_gram, moment_direction, squared_ksd, stein_direction
from .base import LocalRun, ParticleEngine, ParticleRun

__all__ = ["AmortizedSVGD", "DEFAULT_BANDWIDTH_FACTOR", "LOCAL_DRAWS_PER_GLOBAL"]

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

#: With global latents beside local ones: draws of every row's local latents per global
#: draw, among which each row's Stein direction is taken (see
#: `AmortizedSVGD.local_particle_loss`).
LOCAL_DRAWS_PER_GLOBAL = 8


class AmortizedSVGD(ParticleEngine):
    """Amortized SVGD: train a sampler guide along the Stein variational direction.

    Use it as the ``loss`` of `pyro.infer.SVI` with an
    [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler] (any
    `AutoContinuous` guide with reparameterized samples also
    works, without preconditioning).  ``SVI.step`` returns the U-statistic estimate of the
    squared kernelized Stein discrepancy between the particle batch and the posterior,
    measured with the training kernel in whitened coordinates; it fluctuates around zero
    once the sampler has converged.  It is not an ELBO.  More per-step figures are in
    `diagnostics`.

    Particles where the log density or its gradient is NaN or infinite are taken out of
    the empirical measure (they exert no force and do not set the bandwidth) and are
    pulled back towards the valid particles, which moves the sampler's mass out of the
    region where the model is undefined; their fraction is reported in
    ``diagnostics["invalid_fraction"]`` and a warning is issued the first time it happens in a run.

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
            [`stein_direction()`][pyro_stein.ops.stein.stein_direction]).
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
            [`pyro_stein.glue.batching`][pyro_stein.glue.batching]).
        moment_kernel: add the Stein direction of the coordinate-wise linear kernel
            ([`moment_direction()`][pyro_stein.ops.stein.moment_direction]) to the radial
            kernel's.  ``None`` (default): from 100 latent dimensions on
            (`pyro_stein.ops.dimensions.HIGH_DIMENSION`), where the radial
            kernel's signal about each coordinate's scale is drowned by the noise of the
            other coordinates and a 2000-D Gaussian's exact start drifted to sd ratios of
            0.79 to 1.11 in 200 steps.  The monitored discrepancy stays the radial kernel's.
        control_variates: minibatch noise reduction on a subsampled plate, as in
            [`ParticleEngine`][pyro_stein.engines.base.ParticleEngine].
        compile_density: compile the model's batched log density, as in
            [`ParticleEngine`][pyro_stein.engines.base.ParticleEngine] (default: where it
            is costly enough to repay the seconds of compiling).
        unstretch_tails: where the guide has learned heavy tails (a tail weight of at least
            `pyro_stein.ops.tails.HEAVY_TAIL_WEIGHT`), compute the kernel and the direction
            in whitened coordinates with the guide's tail stretch undone
            ([`TailFreeCoordinates`][pyro_stein.ops.tails.TailFreeCoordinates]), for the
            posterior pulled back through that map.  A radial kernel exerts almost no force
            on a heavy tail's isolated far draws; a default fit of a standard Cauchy gave a
            98% quantile of ``|z|`` of 25 to 26 without (truth 31.8), 30.6 to 31.8 with.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import SVI
        >>> from pyro_stein import AmortizedSVGD, AutoNeuralSampler
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> y = torch.randn(20) + 3.0
        >>> guide = AutoNeuralSampler(model)
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), loss=AmortizedSVGD(num_particles=128))
        >>> for step in range(100):
        ...     squared_ksd = svi.step(y)
        >>> abs(guide.sample_posterior(4000)["mu"].mean().item() - y.mean().item()) < 0.1
        True
    """

    name = "AmortizedSVGD"
    # Measured at 1000 steps on a 1-D conjugate normal and a correlated 5-D Gaussian, 2-3 seeds:
    # sd ratios within 0.98-1.03 from 16 particles on (benchmarks/results/particle_count.json).
    reliable_particles = 16
    measured_spreads = {2: "0.9 to 500 times", 4: "1.09 to 1.43 times", 8: "1.02 to 1.10 times"}

    def __init__(
        self,
        kernel: RadialKernel | None = None,
        num_particles: int = 512,
        *,
        leave_one_out: bool = True,
        precondition: bool = True,
        recenter_every: int = 50,
        batching: str = "auto",
        moment_kernel: bool | None = None,
        unstretch_tails: bool = True,
        control_variates: bool = True,
        compile_density: bool | None = None,
    ) -> None:
        if moment_kernel is not None and not isinstance(moment_kernel, bool):
            raise TypeError(f"moment_kernel must be True, False or None (automatic), got {moment_kernel!r}")
        if kernel is not None and not isinstance(kernel, RadialKernel):
            raise TypeError(f"kernel must be a pyro_stein.ops.kernels.RadialKernel, got {type(kernel).__name__}")
        super().__init__(
            num_particles,
            precondition=precondition,
            recenter_every=recenter_every,
            batching=batching,
            unstretch_tails=unstretch_tails,
            control_variates=control_variates,
            compile_density=compile_density,
        )
        self.kernel = kernel if kernel is not None else RBFKernel(bandwidth_factor=DEFAULT_BANDWIDTH_FACTOR)
        self.leave_one_out = leave_one_out
        self.moment_kernel = moment_kernel

    def particle_loss(self, run: ParticleRun, guide: Any, args: tuple, kwargs: dict) -> Tensor:
        """A scalar whose gradient is minus the amortized SVGD update of the guide's
        parameters (and minus the mean log joint's gradient for model parameters), and
        whose value is the squared-KSD estimate."""
        density = run.density
        particles, whitened = self.draw(run, guide, args, kwargs)
        log_p, scores, valid = density.log_prob_and_score(
            particles, args, kwargs, retain_graph=density.has_model_params
        )
        if valid.sum() < 2:
            self.raise_all_invalid(density, particles, valid, args, kwargs)

        whitened, scale_tril = self.whitening(guide, particles, whitened)
        white_scores = scores if scale_tril is None else scores @ scale_tril
        coordinates, coordinate_scores = whitened.detach(), white_scores
        tails = self.tail_free_coordinates(guide)
        if tails is not None:
            coordinates, log_derivative = tails.from_stretched(coordinates)
            coordinate_scores = tails.pull_back_score(white_scores, coordinates, log_derivative)
        gram = kernel_gram(coordinates, self.kernel, valid)
        direction = stein_direction(
            coordinate_scores, gram, leave_one_out=self.leave_one_out, invalid_pull=INVALID_PULL
        )
        if self.uses_moment_kernel(whitened.shape[-1]):
            # The linear kernel is not translation invariant: it is taken about the batch's
            # mean, which may lie far from the coordinates' origin (a guide without a
            # preconditioner, or one whose Laplace start failed).
            direction = direction + moment_direction(
                gram.centered, coordinate_scores, valid, leave_one_out=self.leave_one_out
            )
        sq_ksd = squared_ksd(coordinate_scores, gram)
        self._record(run, valid, direction, gram.profile.bandwidth, sq_ksd)
        if tails is not None:
            direction = tails.push_direction(direction, log_derivative)
        # Value: the monitored discrepancy.  Gradient: the Stein update.
        return self.surrogate(whitened, direction, sq_ksd, log_p[valid] if density.has_model_params else None)

    def local_particle_loss(self, run: LocalRun, guide: Any, args: tuple, kwargs: dict) -> Tensor:
        """The surrogate for a guide of local latents: ``num_particles`` draws of every
        row's latents, each row's moved along the Stein direction of its own conditional
        posterior among its own particles (in the coordinates its encoder whitens), and the
        model's parameters along the gradient of the mean log joint.

        With global latents, ``num_particles`` global draws, and for each of them
        `LOCAL_DRAWS_PER_GLOBAL` draws of every row's latents given it: the local draws move
        along the Stein direction of the row's conditional posterior given that global
        draw, among the draws that share it (a kernel on the local latents alone, across
        global draws, would constrain only their mixture over the global draws, and a
        hierarchical model's groups then followed their population mean twice as closely as
        they should), and the global draws along the Stein direction among themselves, with
        the score averaged over their local draws (Fisher's identity: the score of the
        global latents' marginal posterior).  Its value is the mean over the rows of their
        squared-KSD estimates."""
        batch = guide.minibatch(args, kwargs)
        global_draws = guide.rsample_global(self.num_particles)
        if global_draws is None:
            groups, per_group, conditioning = 1, self.num_particles, None
        else:
            groups, per_group = self.num_particles, LOCAL_DRAWS_PER_GLOBAL
            # Detached: the global sampler is moved by the global direction alone.
            conditioning = global_draws[0].detach().repeat_interleave(per_group, 0)
        draws = {
            plate: guide.rsample_local(plate, rows, groups * per_group, conditioning) for plate, rows in batch.items()
        }
        density = run.density
        log_p, scores = density.log_prob_and_scores(
            {plate: draw[0] for plate, draw in draws.items()}, batch, args, kwargs,
            retain_graph=density.has_model_params, global_latents=conditioning,
        )
        for plate, score in scores.items():
            if not (bool(torch.isfinite(score).all()) and bool(torch.isfinite(log_p).all())):
                where = "global latents" if plate == GLOBAL else f"local latents of plate {plate!r}"
                raise FloatingPointError(
                    f"The log density or the score of the {where} is not finite at some of the "
                    f"{groups * per_group} particles: lower the learning rate, or check the model's likelihood at the "
                    "rows of this minibatch."
                )
        surrogate = log_p.new_zeros(())
        figures = []
        if global_draws is not None:
            _, global_whitened, global_scale = global_draws
            global_scores = scores[GLOBAL].reshape(groups, per_group, -1).mean(1) @ global_scale
            gram = kernel_gram(global_whitened.detach(), self.kernel)
            direction = stein_direction(global_scores, gram, leave_one_out=self.leave_one_out, invalid_pull=INVALID_PULL)
            surrogate = surrogate + self.surrogate(global_whitened, direction, None)
        for plate, (_, whitened, scale_tril) in draws.items():
            num, width, dim = whitened.shape
            # Each row's score in its whitened coordinates, L^T s; then one group per row and
            # global draw: (B * groups, per_group, d).
            white_scores = (scores[plate].unsqueeze(-2) @ scale_tril).squeeze(-2)

            def grouped(values: Tensor, width: int = width, dim: int = dim) -> Tensor:
                return values.reshape(groups, per_group, width, dim).permute(2, 0, 1, 3).reshape(-1, per_group, dim)

            gram = grouped_kernel_gram(grouped(whitened.detach()), self.kernel)
            direction = grouped_stein_direction(grouped(white_scores), gram, leave_one_out=self.leave_one_out)
            figures.append(
                torch.stack([
                    grouped_squared_ksd(grouped(white_scores), gram).mean(),
                    direction.pow(2).sum(-1).mean(),
                    gram.profile.bandwidth.mean(),
                ])
            )
            direction = direction.reshape(width, groups, per_group, dim).permute(1, 2, 0, 3).reshape(num, width, dim)
            surrogate = surrogate + self.surrogate(whitened.reshape(-1, dim), direction.reshape(-1, dim), None)
        if density.has_model_params:
            surrogate = surrogate - log_p.mean()
        squared_ksd, stein_force, bandwidth = torch.stack(figures).mean(0).tolist()
        run.diagnostics = {"squared_ksd": squared_ksd, "stein_force": stein_force, "bandwidth": bandwidth}
        return surrogate + (surrogate.new_tensor(squared_ksd) - surrogate).detach()

    def uses_moment_kernel(self, dim: int) -> bool:
        """Whether the direction for a ``dim``-dimensional latent adds the coordinate-wise
        moment kernel (``moment_kernel``; automatic: from ``HIGH_DIMENSION`` on)."""
        return dim >= HIGH_DIMENSION if self.moment_kernel is None else self.moment_kernel

    def _record(self, run: ParticleRun, valid: Tensor, direction: Tensor, bandwidth: Tensor, sq_ksd: Tensor) -> None:
        invalid_fraction = 1.0 - valid.float().mean().item()
        self.warn_invalid(run, invalid_fraction)
        # One transfer for all figures (they may live on an accelerator).
        figures = torch.stack([sq_ksd.detach(), direction[valid].pow(2).sum(-1).mean(), bandwidth]).tolist()
        run.diagnostics = dict(zip(("squared_ksd", "stein_force", "bandwidth"), figures))
        run.diagnostics["invalid_fraction"] = invalid_fraction
