"""``AutoAmortizedSampler``: an implicit autoguide for local latents, one encoder per data plate.

For a latent ``z_i`` per datapoint (a variational autoencoder's code, a group's effect in
a hierarchical model) the guide draws

    z_i = m(h_i) + L(h_i) (xi + r(h_i, xi)),    h_i = f(x_i),    xi ~ N(0, I),

from the datapoint's own observations ``x_i`` (the observed sites in its plate, found
from the model's trace): ``f`` an encoder network (or the user's module), ``m, L`` a
location and a lower-triangular scale read off its features, ``r`` a residual network
of the features and the noise, zero at initialisation, that bends the Gaussian into
skewed or multimodal shapes.  The draws are mapped to each site's support by
``biject_to``.  One network serves every datapoint, so a trained guide draws posterior
samples for data it never saw: ``Predictive(model, guide=guide, num_samples=S)(new_data)``.

Train it with [`AmortizedSVGD`][pyro_stein.AmortizedSVGD]: each datapoint's particles move
along the Stein direction of its own conditional posterior.

References:
    Y. Feng, D. Wang and Q. Liu. "Learning to Draw Samples with Amortized Stein
    Variational Gradient Descent." UAI 2017.
    Y. Pu, Z. Gan, R. Henao, C. Li, S. Han and L. Carin. "VAE Learning via Stein
    Variational Gradient Descent." NeurIPS 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.nn.module import to_pyro_module_
from torch import Tensor, nn
from torch.distributions import biject_to

from ..glue.autoguide import LocalLatentGuide
from ..glue.layout import LatentLayout
from ..glue.local import DataPlate, Rows
from ..ops.nn import mlp
from .neural_sampler import AutoNeuralSampler

__all__ = ["AutoAmortizedSampler", "PlateEncoder"]


class PlateEncoder(nn.Module):
    """The sampler of one data plate's local latents, ``z = m(h) + L(h)(xi + r(h, xi))``
    with ``h = f(x)`` (see the module docstring).

    Args:
        body: ``f``, from a plate's inputs ``(B, features)`` to ``(B, width)``.
        width: ``f``'s output width.
        latent_size: coordinates of ``z`` per row.
        hidden: the residual network's hidden width (``0``: no residual network).
        activation: its activation.
        init_scale: ``L`` at initialisation (times the identity).
        input_loc: the inputs are standardised with this location first ...
        input_scale: ... and this scale.
        skip_inputs: the width of a linear path from the standardised inputs to ``m``
            (``0``: none; inputs that are row indices have none).
        global_size: the global latents' coordinates that the draws are conditioned on
            (``0``: none): they enter the features, ``h = act(f(x) + A theta)``, and ``m``
            linearly.
    """

    def __init__(
        self,
        body: nn.Module,
        width: int,
        latent_size: int,
        *,
        hidden: int,
        activation: type[nn.Module],
        init_scale: float,
        input_loc: Tensor,
        input_scale: Tensor,
        skip_inputs: int = 0,
        global_size: int = 0,
    ) -> None:
        super().__init__()
        self.body = body
        self.global_features = nn.Linear(global_size, width) if global_size else None
        self.global_skip = nn.Linear(global_size, latent_size, bias=False) if global_size else None
        self.activation = activation()
        self.latent_size = latent_size
        self.loc_head = nn.Linear(width, latent_size)
        self.scale_head = nn.Linear(width, latent_size * (latent_size + 1) // 2)
        # Heads at zero: every datapoint starts at the same N(0, init_scale^2 I) in
        # unconstrained space, and the features' gradients grow them from there.
        # A linear path from the standardised inputs to m: a posterior mean linear in the
        # data (any linear-Gaussian model) is then exact without the body learning it, and
        # data far from the training minibatches are not mapped by the body's saturation.
        self.loc_skip = nn.Linear(skip_inputs, latent_size, bias=False) if skip_inputs else None
        for head in (self.loc_head, self.scale_head, self.loc_skip, self.global_skip):
            if head is None:
                continue
            nn.init.zeros_(head.weight)
            if head.bias is not None:
                nn.init.zeros_(head.bias)
        self.residual = mlp([width + latent_size, hidden, latent_size], activation, zero_output=True) if hidden else None
        self.log_init_scale = float(torch.log(torch.tensor(float(init_scale))))
        self.register_buffer("input_loc", input_loc)
        self.register_buffer("input_scale", input_scale)
        rows, cols = torch.tril_indices(latent_size, latent_size)
        self.register_buffer("_rows", rows)
        self.register_buffer("_cols", cols)

    def standardised(self, inputs: Tensor) -> Tensor:
        """The inputs standardised by the first minibatch's moments (indices as they are)."""
        return (inputs - self.input_loc) / self.input_scale if inputs.is_floating_point() else inputs

    def loc_and_scale(self, inputs: Tensor, features: Tensor, global_latents: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``m`` ``(..., B, d)`` and ``L(h)`` ``(..., B, d, d)``, lower triangular with a
        positive diagonal, from standardised inputs ``(B, F)``, their features
        ``(..., B, width)`` and the global latents ``(K, D)`` if any."""
        d = self.latent_size
        entries = self.scale_head(features)
        scale = features.new_zeros(*features.shape[:-1], d, d)
        scale[..., self._rows, self._cols] = entries * d**-0.5
        diagonal = (entries[..., (self._rows == self._cols).nonzero().squeeze(-1)] + self.log_init_scale).exp()
        scale = scale.tril(-1) + torch.diag_embed(diagonal)
        loc = self.loc_head(features)
        if self.loc_skip is not None:
            loc = loc + self.loc_skip(inputs)
        if global_latents is not None and self.global_skip is not None:
            loc = loc + self.global_skip(global_latents).unsqueeze(-2)
        return loc, scale

    def features(self, inputs: Tensor, global_latents: Tensor | None = None) -> Tensor:
        """``h``: ``(B, width)``, or ``(K, B, width)`` given global latents ``(K, D)``."""
        features = self.body(inputs)
        if global_latents is None or self.global_features is None:
            return features
        return self.activation(features + self.global_features(global_latents).unsqueeze(-2))

    def whitened(self, features: Tensor, noise: Tensor) -> Tensor:
        """``xi + r(h, xi)`` for noise ``(..., B, d)``."""
        if self.residual is None:
            return noise
        return noise + self.residual(torch.cat([features.expand(*noise.shape[:-1], -1), noise], -1))

    def forward(
        self, inputs: Tensor, noise: Tensor, global_latents: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draws ``z`` ``(..., B, d)`` from noise of that shape (given the global latents
        ``(K, D)`` of each of the ``K`` leading draws, if any), their whitened coordinates
        ``L^{-1}(z - m)`` with ``m, L`` held fixed (so that they depend on every trained
        parameter through ``z`` alone, as a preconditioner's do), and ``L``, detached
        (``(B, d, d)``, or ``(K, B, d, d)`` given global latents)."""
        inputs = self.standardised(inputs)
        features = self.features(inputs, global_latents)
        loc, scale = self.loc_and_scale(inputs, features, global_latents)
        latents = loc + (scale @ self.whitened(features, noise).unsqueeze(-1)).squeeze(-1)
        loc, scale = loc.detach(), scale.detach()
        whitened = torch.linalg.solve_triangular(scale, (latents - loc).unsqueeze(-1), upper=False).squeeze(-1)
        return latents, whitened, scale


class AutoAmortizedSampler(LocalLatentGuide):
    """Implicit autoguide for local latents: one encoder per data plate draws each
    datapoint's latents from its observations (see the module docstring).

    A data plate is a plate holding both latent and observed sites; every latent inside it
    is local.  It may be subsampled (``pyro.plate("data", N, subsample_size=B)``): a step
    then costs the same whatever ``N``.  The model's own parameters (a ``pyro.module``
    decoder) are trained beside the guide by the engine (amortized maximum likelihood).
    Global latents beside the local ones (a hierarchical model's population parameters)
    have a sampler of their own, and each datapoint's encoder is conditioned on them: the
    two draw the joint posterior, one global draw per particle ([`AmortizedSVGD`][pyro_stein.AmortizedSVGD]
    only).

    Args:
        model: a Pyro model with local latent sites.
        local_plates: the plates whose latents are local; default every plate holding a
            latent site and an observed site.
        encoder: ``{plate: module}``, a network from the plate's observations (``(B, F)``,
            each row's observed values flattened and concatenated in the order of the
            model) to features ``(B, width)``, in place of the default; for a plate without
            observed sites it receives the row indices ``(B,)`` (an ``nn.Embedding``, say).
        hidden_dims: widths of the default encoder body's hidden layers; its output is the
            last.  Default ``(128, 128)``.
        activation: the networks' activation.
        init_scale: every local latent starts at ``N(0, init_scale^2)`` in unconstrained space.
        global_init_scale: the global latents' sampler (an
            [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler] of the model with its local
            sites held fixed) starts at the sites' initial values with this isotropic
            scale in unconstrained space (a Laplace start would need the local latents'
            posterior); its preconditioner is re-centred as the engine trains it.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import SVI, Predictive
        >>> from pyro_stein import AmortizedSVGD, AutoAmortizedSampler
        >>> def model(x):
        ...     with pyro.plate("data", len(x), subsample_size=min(32, len(x))) as rows:
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 0.5), obs=x[rows])
        >>> x = 1.2 * torch.randn(500)
        >>> guide = AutoAmortizedSampler(model, hidden_dims=(32, 32))
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss=AmortizedSVGD(num_particles=16))
        >>> for _ in range(500):
        ...     ksd = svi.step(x)
        >>> new = torch.tensor([2.0, -1.0])  # datapoints the guide never saw
        >>> z = Predictive(model, guide=guide, num_samples=1000, return_sites=["z"])(new)["z"]
        >>> z.shape
        torch.Size([1000, 2])
        >>> bool(((z.mean(0) - 0.8 * new).abs() < 0.2).all())  # the exact posterior is N(0.8 x, 0.2)
        True

    References:
        Y. Feng, D. Wang and Q. Liu. "Learning to Draw Samples with Amortized Stein
        Variational Gradient Descent." UAI 2017.
    """

    def __init__(
        self,
        model: Callable,
        *,
        local_plates: Sequence[str] | None = None,
        encoder: dict[str, nn.Module] | None = None,
        hidden_dims: Sequence[int] = (128, 128),
        activation: type[nn.Module] = nn.SiLU,
        init_scale: float = 1.0,
        global_init_scale: float = 0.1,
    ) -> None:
        if not (isinstance(init_scale, (int, float)) and init_scale > 0):
            raise ValueError(f"init_scale must be a positive number, got {init_scale!r}")
        if not (isinstance(global_init_scale, (int, float)) and global_init_scale > 0):
            raise ValueError(f"global_init_scale must be a positive number, got {global_init_scale!r}")
        self.global_init_scale = float(global_init_scale)
        hidden_dims = tuple(int(h) for h in hidden_dims)
        if not hidden_dims or any(h < 1 for h in hidden_dims):
            raise ValueError(f"hidden_dims must be one or more positive integers, got {hidden_dims!r}")
        if encoder is not None and not (
            isinstance(encoder, dict) and all(isinstance(m, nn.Module) for m in encoder.values())
        ):
            raise TypeError("encoder must be a dict {plate name: torch.nn.Module}")
        self.user_encoders = dict(encoder or {})
        self.hidden_dims = hidden_dims
        self.activation = activation
        self.init_scale = float(init_scale)
        super().__init__(
            model, local_plates=None if local_plates is None else tuple(local_plates), encoded_plates=tuple(self.user_encoders)
        )

    # ------------------------------------------------------------------ set-up
    def setup_sampler(self, args: tuple, kwargs: dict) -> None:
        """Build one encoder per data plate, its input standardisation taken from the first minibatch."""
        structure = self.structure
        unknown = set(self.user_encoders) - set(structure.plates)
        if unknown:
            raise ValueError(f"encoder names plates {sorted(unknown)} that are not data plates of the model ({sorted(structure.plates)})")
        batch = structure.minibatch(self.model, args, kwargs)
        global_size = LatentLayout(self.global_model(), *args, **kwargs).latent_dim if structure.global_sites else 0
        encoders = {}
        for name, plate in structure.plates.items():
            inputs = self._inputs(plate, batch[name])
            options = {"dtype": structure.dtype, "device": structure.device}
            if inputs.is_floating_point():
                loc = inputs.mean(0)
                spread = inputs.std(0) if len(inputs) > 1 else torch.ones_like(loc)
                # A feature constant in this minibatch (a pixel always off) must not blow up where it varies.
                scale = spread.clamp_min(0.1 * float(spread.mean()) if spread.numel() else 1.0).clamp_min(1e-6)
            else:
                loc, scale = torch.zeros((), **options), torch.ones((), **options)
            if name in self.user_encoders:
                body = self.user_encoders[name]
            else:
                body = mlp([inputs.shape[-1], *self.hidden_dims], self.activation, output_activation=self.activation)
            body = body.to(**options) if name not in self.user_encoders else body
            with torch.no_grad():
                width = body((inputs - loc) / scale if inputs.is_floating_point() else inputs).shape[-1]
            encoders[name] = PlateEncoder(
                body, width, plate.latent_size, hidden=self.hidden_dims[-1], activation=self.activation,
                init_scale=self.init_scale, input_loc=loc, input_scale=scale,
                skip_inputs=inputs.shape[-1] if inputs.is_floating_point() else 0,
                global_size=global_size,
            ).to(**options)
        modules = nn.ModuleDict(encoders)
        to_pyro_module_(modules)  # their parameters then go through pyro.param, as SVI needs
        self.encoders = modules
        if structure.global_sites:
            # Assigned before it is set up, so that its parameters are named (and trained) as this guide's.
            self.global_sampler = AutoNeuralSampler(self.global_model(), init_scale=self.global_init_scale)
            self.global_sampler.setup(*args, **kwargs)

    @staticmethod
    def _inputs(plate: DataPlate, rows: Rows) -> Tensor:
        return rows.observations if plate.observed else rows.indices

    # ------------------------------------------------------------------ sampling
    def encode(self, plate: DataPlate, rows: Rows, noise: Tensor, global_latent: Tensor | None = None) -> Tensor:
        """Unconstrained local latents ``(B, latent_size)`` of ``rows`` from noise of that
        shape, given the global latents ``(1, D)`` if any."""
        draws = noise if global_latent is None else noise.unsqueeze(0)  # one global draw: a leading draw dim
        latents = self.encoders[plate.name](self._inputs(plate, rows), draws, global_latent)[0]
        return latents.reshape(noise.shape)

    def draw_globals(self, args: tuple, kwargs: dict) -> Tensor | None:
        """One draw of the global latents, as the model's sample sites (by the global
        sampler, an `AutoNeuralSampler`), and as an unconstrained vector ``(1, D)``."""
        if not self.structure.global_sites:
            return None
        values = self.global_sampler(*args, **kwargs)
        return self.global_sampler.layout.pack({name: value.unsqueeze(0) for name, value in values.items()})

    def rsample_global(self, num_particles: int) -> tuple[Tensor, Tensor, Tensor] | None:
        """``num_particles`` reparameterized draws of the global latents: ``(theta (K, D),
        whitened (K, D), L (D, D))`` in the global sampler's preconditioned coordinates
        ``w = L^{-1}(theta - m)``; ``None`` without global latents."""
        if not self.structure.global_sites:
            return None
        theta, whitened = self.global_sampler.rsample_latent_batch(num_particles, return_whitened=True)
        return theta, whitened, self.global_sampler.preconditioner[1]

    @property
    def global_layout(self) -> LatentLayout | None:
        """The layout of the global latents (those outside the data plates), ``None`` without them."""
        if self.structure is None or not self.structure.global_sites:
            return None
        return self.global_sampler.layout

    def recenter_globals(self) -> None:
        """Re-centre the global sampler's preconditioner (see `AutoNeuralSampler.recenter`);
        nothing without global latents."""
        if self.structure is not None and self.structure.global_sites:
            self.global_sampler.recenter()

    def rsample_local(
        self, plate: str, rows: Rows, num_particles: int, global_latents: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``num_particles`` reparameterized draws of every row's local latents.

        Args:
            plate: the data plate.
            rows: its rows (from `minibatch()`).
            num_particles: draws per row.
            global_latents: ``(K, D)``, the global latents of each draw (from
                `rsample_global()`), where the model has them.

        Returns:
            ``(z, w, L)``: unconstrained draws ``(K, B, d)``, their whitened coordinates
            ``L^{-1}(z - m)`` ``(K, B, d)``, differentiable in the guide's parameters, and
            each row's scale ``L`` ``(B, d, d)`` (``(K, B, d, d)`` given global latents), detached.
        """
        data_plate = self.structure.plates[plate]
        noise = torch.randn(
            num_particles, len(rows.indices), data_plate.latent_size, dtype=self.structure.dtype, device=self.structure.device
        )
        with self.parameters_in_pyro():
            return self.encoders[plate](self._inputs(data_plate, rows), noise, global_latents)

    @property
    def config(self) -> dict[str, object]:
        """The guide's options (what a checkpoint records of it)."""
        return {
            "local_plates": self.local_plates,
            "encoder": {name: type(module).__name__ for name, module in self.user_encoders.items()},
            "hidden_dims": self.hidden_dims,
            "activation": self.activation.__name__,
            "init_scale": self.init_scale,
            "global_init_scale": self.global_init_scale,
        }

    @torch.no_grad()
    def sample_posterior(self, num_samples: int, *args: Any, every_row: bool = True, **kwargs: Any) -> dict[str, Tensor]:
        """Posterior draws of every local site (and global site, jointly) for the model
        called with ``args`` and ``kwargs``.

        Args:
            num_samples: draws per row.
            *args: the model's positional arguments (the data whose rows to draw for).
            **kwargs: its keyword arguments.
            every_row: draw for every row of the data plate, through consecutive
                minibatches of its subsample size (one data plate); ``False``: for the
                rows of one minibatch, as the model draws them.

        Returns:
            ``{site: (num_samples, *site_shape)}`` in constrained space, the data plate's
            dimension as long as the rows drawn for.
        """
        self.setup(*args, **kwargs)
        if every_row:
            batches = list(self.structure.every_row(self.model, args, kwargs))
        else:
            batches = [self.minibatch(args, kwargs)]
        draws: dict[str, list[Tensor]] = {}
        global_draws = self.rsample_global(num_samples)
        theta = None if global_draws is None else global_draws[0]
        for batch in batches:
            for name, plate in self.structure.plates.items():
                latents, _, _ = self.rsample_local(name, batch[name], num_samples, theta)
                parts = plate.split_rows(latents)
                for site in plate.sites:
                    value = site.rows_to_value(parts[site.name], site.batch_rank)
                    draws.setdefault(site.name, []).append(biject_to(site.support)(value))
        sites = {site.name: site for plate in self.structure.plates.values() for site in plate.sites}
        result = {name: torch.cat(parts, 1 + sites[name].row_index) for name, parts in draws.items()}
        if theta is not None:
            result.update(self.global_sampler.layout.unpack(theta))
        return result
