"""``AutoNeuralSampler``: an implicit autoguide, ``z = f_eta(xi)`` with ``xi ~ N(0, I)``.

The sampler produces one unconstrained latent vector per draw, laid out like every
`AutoContinuous` guide, and Pyro's autoguide machinery maps it
to the model's sites through ``biject_to`` inside the model's plates.  So ``Predictive``,
``poutine`` handlers and anything else that runs a guide just work.

Parameterisation::

    z = m + L (a + B (u + r(u))),    u = T_lambda(xi)

* ``m, L`` (buffers): a fixed *preconditioner*, the location and Cholesky scale of the
  posterior as currently known: the Laplace approximation at first, then the sampler's own
  mean and covariance whenever the engine re-centres it.  Scales that differ by orders of
  magnitude and strong correlations live here, not in the trained parameters.
* ``a, B`` (trained): an affine map in whitened coordinates, starting at ``0, I``.
* ``r`` (trained): a residual multilayer perceptron, zero at initialisation, that bends the
  Gaussian into skewed or multimodal shapes.
* ``T_lambda`` (trained): a coordinate-wise tail stretch ``xi exp(lambda xi^2 / 4)``
  (`pyro_stein.ops.tails`), the identity at ``lambda = 0``, which gives coordinate ``i``
  polynomial tails of index ``2 / lambda_i``.  A network that is asymptotically linear
  keeps Gaussian tails whatever its weights, so without it a Cauchy or Student-t
  posterior is out of reach.  ``lambda`` starts at 0.0067 (tail index 300, Gaussian for
  every practical purpose).

Because the trained parameters act in whitened units, an optimizer step of a given size
means the same thing for a latent with posterior scale 1e-3 as for one with scale 1e2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import Tensor, nn

from ..glue.autoguide import LatentVectorGuide
from ..glue.density import UnconstrainedLogDensity
from ..glue.initialization import init_to_median
from ..ops.caller import warn
from ..ops.dimensions import HIGH_DIMENSION
from ..ops.laplace import laplace_approximation, laplace_scale_tril, negative_hessian, refine_mode
from ..ops.nn import mlp
from ..ops.tails import HEAVY_TAIL_WEIGHT, TailFreeCoordinates, tail_stretch

__all__ = ["AutoNeuralSampler", "ImplicitLatent"]

_NUM_INIT_ATTEMPTS = 100
#: ``lambda = softplus(_TAIL_RATE * tail_parameter)``: an optimizer step of a given size moves
#: ``lambda`` ``_TAIL_RATE`` times as far as it would without the factor, so that a Cauchy's
#: ``lambda = 2`` is reached from the Gaussian start within a default budget.
_TAIL_RATE = 20.0
#: ``softplus(-5) = 0.0067``: tail index 300 at the start.
_INITIAL_TAIL_PARAMETER = -5.0 / _TAIL_RATE


class ImplicitLatent(dist.TorchDistribution):
    """The distribution of ``transform(xi)``, ``xi ~ N(0, I_D)``: samples but no density.

    Args:
        transform: maps noise of shape ``(..., D)`` to latents of shape ``(..., D)``.
        latent_dim: ``D``.
        dtype, device: of the noise.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        transform: Callable[[Tensor], Tensor],
        latent_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        batch_shape: torch.Size = torch.Size(),
    ) -> None:
        self.transform = transform
        self.dtype = dtype
        self.device = device
        super().__init__(batch_shape, torch.Size([latent_dim]), validate_args=False)

    def expand(self, batch_shape, _instance=None) -> ImplicitLatent:
        return ImplicitLatent(
            self.transform, self.event_shape[0], self.dtype, self.device, torch.Size(batch_shape)
        )

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        return self.transform(torch.randn(shape, dtype=self.dtype, device=self.device))

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            "AutoNeuralSampler is an implicit distribution: it draws samples but has no "
            "density, so density-based losses such as Trace_ELBO cannot train it. Use "
            "loss=pyro_stein.AmortizedSVGD() or loss=pyro_stein.CTFDistillation()."
        )


class _ResidualMLP(PyroModule):
    """``r(xi)``: a multilayer perceptron whose last layer starts at zero."""

    def __init__(self, dim: int, hidden_dims: Sequence[int], activation: type[nn.Module]) -> None:
        super().__init__()
        layers = mlp([dim, *hidden_dims, dim], activation, zero_output=True)
        to_pyro_module_(layers)  # its parameters then go through pyro.param, as SVI needs
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class AutoNeuralSampler(LatentVectorGuide):
    """Implicit autoguide for amortized Stein variational gradient descent.

    Draws are ``z = m + L (a + B (u + r(u)))``, ``u = T(xi)``, with ``xi ~ N(0, I)``, mapped to every
    latent site through ``biject_to`` (see the module docstring).  The guide has no
    density; train it with [`AmortizedSVGD`][pyro_stein.AmortizedSVGD] or
    [`CTFDistillation`][pyro_stein.CTFDistillation].  After training, any number
    of posterior draws cost one forward pass: `sample_posterior()`, or
    ``pyro.infer.Predictive(model, guide=guide, num_samples=S)``.

    Initialisation (on the first call, like every autoguide): the latent sites start at
    ``init_loc_fn``'s values; where the log density is not finite there, uniform draws on
    ``(-2, 2)`` in unconstrained space are tried, as Stan does.  With
    ``init_scale="laplace"`` (default) the sampler then starts at the Laplace
    approximation: L-BFGS to the mode of the unconstrained log density and the exact
    Hessian there.  For a subsampled plate the search runs on one fixed minibatch, then
    quasi-Newton steps on the full data (one pass over its rows each,
    `pyro_stein.ops.laplace.refine_mode`) move it to the full data's mode.  If the mode search
    fails (a funnel has no mode), it starts at the initial point with scale 0.1.

    Args:
        model: a Pyro model with continuous latent sites.
        init_loc_fn: per-site initial values, as in Pyro's autoguides.
        init_scale: ``"laplace"`` or a positive float (isotropic initial scale in
            unconstrained space).
        hidden_dims: widths of the residual network's hidden layers; default two layers of
            ``max(32, 2 D)`` units below 100 latent dimensions, and no network
            from 100 on (`pyro_stein.ops.dimensions.HIGH_DIMENSION`),
            where the Stein direction cannot train one (its weights random-walk under the
            direction's noise).  ``()`` drops the network; with
            ``heavy_tails=False`` as well the sampler is a Gaussian.
        heavy_tails: train a tail stretch per coordinate (see the module docstring), so
            the sampler can hold polynomial tails such as a Cauchy's.
        activation: the hidden layers' activation.
        num_summary_samples: draws used by `median()` and `quantiles()`.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import SVI, Predictive
        >>> from pyro_stein import AmortizedSVGD, AutoNeuralSampler
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> y = torch.randn(20) + 3.0
        >>> guide = AutoNeuralSampler(model)
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss=AmortizedSVGD())
        >>> for _ in range(100):
        ...     ksd = svi.step(y)
        >>> draws = Predictive(model, guide=guide, num_samples=1000)(y)
        >>> draws["y"].shape  # posterior predictive replicates of the data
        torch.Size([1000, 20])

    References:
        D. Wang and Q. Liu. "Learning to Draw Samples: With Application to Amortized MLE for
        Generative Adversarial Learning." arXiv:1611.01722, 2016.
        Y. Feng, D. Wang and Q. Liu. "Learning to Draw Samples with Amortized Stein
        Variational Gradient Descent." UAI 2017.
    """

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = init_to_median,
        init_scale: str | float = "laplace",
        hidden_dims: Sequence[int] | None = None,
        activation: type[nn.Module] = nn.SiLU,
        heavy_tails: bool = True,
        num_summary_samples: int = 4000,
    ) -> None:
        if init_scale != "laplace" and not (isinstance(init_scale, (int, float)) and init_scale > 0):
            raise ValueError(f"init_scale must be 'laplace' or a positive number, got {init_scale!r}")
        if hidden_dims is not None and any(int(h) < 1 for h in hidden_dims):
            raise ValueError(f"hidden_dims must be positive integers, got {hidden_dims!r}")
        self.init_loc_fn = init_loc_fn
        self.init_scale = init_scale
        self.hidden_dims = None if hidden_dims is None else tuple(int(h) for h in hidden_dims)
        self.activation = activation
        self.heavy_tails = bool(heavy_tails)
        self.num_summary_samples = int(num_summary_samples)
        self.init_report: dict[str, object] = {}
        super().__init__(model, init_loc_fn=init_loc_fn)

    @property
    def config(self) -> dict[str, object]:
        """The guide's options (what a checkpoint records of it)."""
        return {
            "init_loc_fn": self.init_loc_fn,
            "init_scale": self.init_scale,
            "hidden_dims": self.hidden_dims,
            "activation": self.activation.__name__,
            "heavy_tails": self.heavy_tails,
            "num_summary_samples": self.num_summary_samples,
        }

    # ------------------------------------------------------------------ set-up
    def setup_sampler(self, args: tuple, kwargs: dict) -> None:
        """Start the sampler: a feasible point, the Laplace preconditioner, the network."""
        # A float64 model trains in float64, flat (ImproperUniform) sites included.
        self._dtype = self.layout.dtype
        self._device = self.layout.device
        density = UnconstrainedLogDensity(self.density_model, self.layout, frozen_subsample=True)
        with poutine.block():  # initialisation runs the model; none of it is a step
            start = self._feasible_start(density, args, kwargs)
            loc, scale_tril = self._initial_preconditioner(density, start, args, kwargs)
        #: How the model was found to batch over particles ("plate", "vmap" or "loop");
        #: the engine reuses it rather than probe the model again.
        self.batching = density.batching
        self.register_buffer("precond_loc", loc)
        self.register_buffer("precond_scale_tril", scale_tril)
        self._build_network()

    def _feasible_start(self, density: UnconstrainedLogDensity, args: tuple, kwargs: dict) -> Tensor:
        start = self.layout.init_loc().detach().to(self._dtype)
        if density.log_prob_and_score(start.unsqueeze(0), args, kwargs)[2].all():
            return start
        culprits = density.non_finite_sites(start, args, kwargs)
        candidates = (2 * torch.rand(_NUM_INIT_ATTEMPTS, self.latent_dim, dtype=self._dtype, device=self._device) - 1) * 2.0
        finite = density.log_prob_and_score(candidates, args, kwargs)[2]
        if not finite.any():
            raise ValueError(
                "The model's log density is not finite at the initial value, nor at "
                f"{_NUM_INIT_ATTEMPTS} random points in (-2, 2) of unconstrained space. "
                f"Non-finite terms at the initial value: {culprits or ['(the gradient)']}. "
                "Check those sites' distributions and observed data, or pass init_loc_fn."
            )
        warn(
            f"The log density is not finite at init_loc_fn's values (terms: {culprits}); "
            "starting from a random point in (-2, 2) of unconstrained space instead.",
            RuntimeWarning,
        )
        return candidates[finite.nonzero()[0, 0]]

    def _initial_preconditioner(
        self, density: UnconstrainedLogDensity, start: Tensor, args: tuple, kwargs: dict
    ) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.latent_dim, dtype=self._dtype, device=self._device)
        if self.init_scale != "laplace":
            self.init_report = {"preconditioner": "isotropic", "scale": float(self.init_scale)}
            return start, float(self.init_scale) * eye

        def log_density(z: Tensor) -> Tensor:
            return density(z, args, kwargs)

        laplace = laplace_approximation(log_density, start)
        if laplace is None:
            self.init_report = {"preconditioner": "isotropic", "scale": 0.1, "mode_found": False}
            warn(
                "No mode of the log density was found from the initial point (the density "
                "may grow without bound, as in a funnel); the sampler starts there with "
                "scale 0.1 and adapts its scale during training.",
                RuntimeWarning,
            )
            return start, 0.1 * eye
        mode, precision = laplace
        report: dict[str, object] = {}
        if density.full_data_pass_applies:
            # The minibatch's mode is sqrt(rows / subsample) posterior sds off the full
            # data's (10 on a 100k-row regression with 1000-row minibatches): far enough
            # that the fit spent its first 400 steps travelling.
            mode, decrement = refine_mode(
                lambda z: density.full_log_prob_and_score(z, args, kwargs), mode, precision
            )
            precision = negative_hessian(log_density, mode)
            report["full_data_decrement"] = decrement
        scale_tril, status = laplace_scale_tril(precision, fallback_scale=0.1)
        self.init_report = {"preconditioner": status, "mode_found": True, **report}
        return mode, scale_tril

    def _build_network(self) -> None:
        dim = self.latent_dim
        hidden = self.hidden_dims
        if hidden is None:
            # From HIGH_DIMENSION on, the Stein direction's signal about each network weight
            # is drowned by its Monte Carlo noise: the weights random-walk (Adam moves each
            # by about its learning rate), and a 2000-D Gaussian's sampler, started exact,
            # had sd ratios of 0.92 to 1.11 after 200 steps with the network, 0.98 to 1.02 without.
            width = max(32, 2 * dim)
            hidden = (width, width) if dim < HIGH_DIMENSION else ()
        options = {"dtype": self._dtype, "device": self._device}
        self.loc = nn.Parameter(torch.zeros(dim, **options))
        # B's off-diagonal is scale_offdiag / sqrt(D).  Adam moves every entry by about its
        # learning rate whatever the gradient's size, so the Monte Carlo noise of the
        # Stein direction would add about D lr^2 to each variance of B B^T per step: in
        # 2000 dimensions an exact start drifted to sd ratios of up to 1.9 within 20 steps.
        # The factor makes the added variance independent of D.
        self._offdiag_factor = dim**-0.5
        # Lower triangle below the diagonal, and the diagonal's log: scale steps are
        # multiplicative, so a factor of ten costs the same whatever the scale.
        self.scale_offdiag = nn.Parameter(torch.zeros(dim, dim, **options))
        self.log_scale_diag = nn.Parameter(torch.zeros(dim, **options))
        self.residual = _ResidualMLP(dim, hidden, self.activation).to(**options) if hidden else None
        # softplus keeps lambda >= 0, where the stretch is increasing (invertible).
        self.tail_parameter = (
            nn.Parameter(torch.full((dim,), _INITIAL_TAIL_PARAMETER, **options)) if self.heavy_tails else None
        )

    # ------------------------------------------------------------------ sampling
    def _scale_tril(self) -> Tensor:
        return self._offdiag_factor * self.scale_offdiag.tril(-1) + torch.diag_embed(self.log_scale_diag.exp())

    @property
    def tail_weight(self) -> Tensor | None:
        """``lambda``, shape ``(D,)``: coordinate ``i`` of the whitened base has tails of
        index ``2 / lambda_i`` (``None`` with ``heavy_tails=False``)."""
        return None if self.tail_parameter is None else nn.functional.softplus(_TAIL_RATE * self.tail_parameter)

    @torch.no_grad()
    def tail_free_coordinates(self) -> TailFreeCoordinates | None:
        """Whitened coordinates in which the tail stretch of the heavy-tailed coordinates
        (weight at least ``HEAVY_TAIL_WEIGHT``) is undone, at the current parameters, or
        ``None`` when there are none (see `pyro_stein.ops.tails.TailFreeCoordinates`).

        The engines compute their directions there: in whitened coordinates a Cauchy-like
        coordinate's far draws are isolated, so a kernel exerts almost no force on them; in
        these coordinates they are as close together as a Gaussian's.
        """
        weight = self.tail_weight
        if weight is None:
            return None
        heavy = weight >= HEAVY_TAIL_WEIGHT
        if not bool(heavy.any()):
            return None
        return TailFreeCoordinates(
            self.loc.detach().clone(), self.log_scale_diag.detach().exp(), torch.where(heavy, weight, 0.0)
        )

    def _whitened(self, noise: Tensor, *, stretch_tails: bool = True) -> Tensor:
        # The stretch acts on the noise, before the network: an asymptotically linear
        # network keeps its polynomial tails, where stretching the network's output would
        # amplify the network's own large values exponentially.
        if self.tail_parameter is not None and stretch_tails:
            noise = tail_stretch(noise, self.tail_weight)
        base = noise if self.residual is None else noise + self.residual(noise)
        return self.loc + base @ self._scale_tril().T

    def _transform_noise(self, noise: Tensor) -> Tensor:
        return self._unwhiten(self._whitened(noise))

    def _unwhiten(self, whitened: Tensor) -> Tensor:
        return self.precond_loc + whitened @ self.precond_scale_tril.T

    def get_posterior(self, *args, **kwargs) -> ImplicitLatent:
        """The implicit distribution of the unconstrained latent vector."""
        return ImplicitLatent(self._transform_noise, self.latent_dim, self._dtype, self._device)

    @property
    def preconditioner(self) -> tuple[Tensor, Tensor]:
        """``(m, L)``: whitened coordinates are ``L^{-1} (z - m)``."""
        return self.precond_loc, self.precond_scale_tril

    def rsample_latent_batch(self, num_samples: int, *, return_whitened: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``num_samples`` reparameterized latent vectors ``(num_samples, D)``, differentiable
        in the guide's parameters, which are read through ``pyro.param`` so that
        ``SVI`` (and any ``poutine.trace(param_only=True)``) sees them.

        This is what [`AmortizedSVGD`][pyro_stein.AmortizedSVGD] trains; it skips building the
        per-site values that a full guide run would.

        Args:
            num_samples: number of draws.
            return_whitened: also return the draws' whitened coordinates
                ``L^{-1}(z - m)`` (see `preconditioner`), computed on the way rather
                than by a triangular solve.

        Returns:
            ``z`` of shape ``(num_samples, D)``, or ``(z, w)`` with ``return_whitened``.
        """
        if not self.is_set_up:
            raise RuntimeError("the guide is not set up yet: call it (or train it) first")
        noise = torch.randn(num_samples, self.latent_dim, dtype=self._dtype, device=self._device)
        with self.parameters_in_pyro():
            whitened = self._whitened(noise)
        latent = self._unwhiten(whitened)
        return (latent, whitened) if return_whitened else latent

    @torch.no_grad()
    def sample_latent_batch(self, num_samples: int) -> Tensor:
        """``num_samples`` unconstrained latent vectors, shape ``(num_samples, D)``."""
        return self.rsample_latent_batch(num_samples)

    @torch.no_grad()
    def recenter(self, num_samples: int | None = None) -> None:
        """Move the preconditioner to the sampler's current mean and covariance.

        The moments are those of the draws with the tail stretch left out (the bulk), since
        a heavy-tailed sampler has no covariance to estimate.  The trained parameters are
        re-expressed in the new whitened coordinates, so the distribution of draws does not
        change; only the coordinates in which the engine's kernel and the optimizer work do.

        Args:
            num_samples: draws used for the estimate; default ``max(2000, 20 D)``.
        """
        num = num_samples or max(2000, 20 * self.latent_dim)
        noise = torch.randn(num, self.latent_dim, dtype=self._dtype, device=self._device)
        z = self._unwhiten(self._whitened(noise, stretch_tails=False))
        mean = z.mean(0)
        centered = z - mean
        cov = centered.T @ centered / (num - 1)
        # Shrink lightly towards the diagonal so a finite-sample estimate stays well posed.
        cov = 0.99 * cov + 0.01 * torch.diag(torch.diagonal(cov))
        new_precond, info = torch.linalg.cholesky_ex(cov)
        if info != 0 or not torch.isfinite(new_precond).all():
            return
        # Old whitened w maps to new whitened change @ w + shift.
        change = torch.linalg.solve_triangular(new_precond, self.precond_scale_tril, upper=False)
        shift = torch.linalg.solve_triangular(
            new_precond, (self.precond_loc - mean).unsqueeze(-1), upper=False
        ).squeeze(-1)
        scale_tril = change @ self._scale_tril()  # still lower triangular, positive diagonal
        self.loc.data.copy_(change @ self.loc + shift)
        self.scale_offdiag.data.copy_(scale_tril.tril(-1) / self._offdiag_factor)
        self.log_scale_diag.data.copy_(scale_tril.diagonal().log())
        self.precond_loc.copy_(mean)
        self.precond_scale_tril.copy_(new_precond)

    @torch.no_grad()
    def sample_posterior(self, num_samples: int) -> dict[str, Tensor]:
        """Posterior draws of every latent site in constrained space.

        Returns:
            ``{site: tensor of shape (num_samples, *site_shape)}``, the site shape being the
            one the model uses (no plate padding).
        """
        return self.layout.unpack(self.sample_latent_batch(num_samples))

    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | Tensor, *args, **kwargs) -> dict[str, Tensor]:
        """Posterior quantiles of every latent site, estimated from
        ``num_summary_samples`` draws.

        Quantiles are taken coordinate-wise in unconstrained space and mapped through
        ``biject_to``, as Pyro's ``AutoContinuous.quantiles`` does; for element-wise
        constraints (positive, interval, ...) they are the marginal quantiles.

        Returns:
            ``{site: tensor of shape (len(quantiles), *site_shape)}``.
        """
        q = torch.as_tensor(quantiles, dtype=self._dtype, device=self._device)
        if q.dim() != 1 or ((q < 0) | (q > 1)).any():
            raise ValueError(f"quantiles must be a list of numbers in [0, 1], got {quantiles!r}")
        latent = self.sample_latent_batch(self.num_summary_samples)
        result = self.layout.unpack(torch.quantile(latent, q, dim=0), restore=False)
        # A non-centred model's original sites are functions of several latents: their
        # quantiles are those of their own draws, not the function at the latents' quantiles.
        for name, value in self.layout.unpack(latent).items():
            if name not in result:
                result[name] = torch.quantile(value, q, dim=0)
        return result

    @torch.no_grad()
    def median(self, *args, **kwargs) -> dict[str, Tensor]:
        """Posterior median of every latent site (see `quantiles()`)."""
        return {name: value[0] for name, value in self.quantiles([0.5]).items()}

