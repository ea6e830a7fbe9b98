"""What a sampler guide offers, as protocols: the engines, `fit` and the diagnostics ask
for these capabilities by type, not by probing attributes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from ..glue.layout import LatentLayout
from ..glue.local import LocalStructure, Rows
from ..ops.tails import TailFreeCoordinates

__all__ = ["LatentSampler", "LocalParticleSampler", "ParticleSampler", "PreconditionedSampler", "TailStretchedSampler"]


@runtime_checkable
class LatentSampler(Protocol):
    """Draws batches of unconstrained latent vectors laid out as `layout`."""

    latent_dim: int
    layout: LatentLayout

    def sample_latent_batch(self, num_samples: int) -> Tensor:
        """``(num_samples, D)`` draws, without gradients."""
        ...


@runtime_checkable
class ParticleSampler(LatentSampler, Protocol):
    """A `LatentSampler` whose draws are differentiable in its parameters: what the
    particle engines train.  ``batching`` says how the model was found to evaluate a
    batch of particles (``"plate"``, ``"vmap"`` or ``"loop"``), so the engines need not
    probe it again."""

    batching: str

    def rsample_latent_batch(
        self, num_samples: int, *, return_whitened: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``(num_samples, D)`` reparameterized draws (and their whitened coordinates)."""
        ...


@runtime_checkable
class PreconditionedSampler(ParticleSampler, Protocol):
    """A `ParticleSampler` with a preconditioner ``(m, L)``: its whitened coordinates are
    ``L^{-1}(z - m)``, in which the engines work, and `recenter()` moves ``(m, L)`` to
    the sampler's own mean and covariance without changing its draws."""

    @property
    def preconditioner(self) -> tuple[Tensor, Tensor]: ...

    def recenter(self, num_samples: int | None = None) -> None: ...


@runtime_checkable
class TailStretchedSampler(PreconditionedSampler, Protocol):
    """A `PreconditionedSampler` that stretches its noise's tails
    ([`pyro_stein.ops.tails`][pyro_stein.ops.tails]) and can say, at its current
    parameters, in which whitened coordinates the stretch is undone."""

    def tail_free_coordinates(self) -> TailFreeCoordinates | None:
        """The map for the coordinates whose tails are heavy (the others left as they
        are), detached; ``None`` when no coordinate's are."""
        ...


@runtime_checkable
class LocalParticleSampler(Protocol):
    """Draws the local latents of a model's data plates (`structure`), ``K`` particles
    per row of a minibatch, differentiable in its parameters: what the engines train on a
    model with local latents."""

    structure: LocalStructure

    @property
    def global_layout(self) -> LatentLayout | None:
        """The layout of the global latents (outside the data plates), or ``None``."""
        ...

    def minibatch(self, args: tuple, kwargs: dict) -> dict[str, Rows]:
        """The rows the model evaluates next, and their observations, per data plate."""
        ...

    def rsample_local(
        self, plate: str, rows: Rows, num_particles: int, global_latents: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(z (K, B, d), whitened (K, B, d), scale)`` with ``z = m + scale @ whitened``,
        ``scale`` ``(B, d, d)`` or, given global latents ``(K, D)``, ``(K, B, d, d)``."""
        ...

    def rsample_global(self, num_particles: int) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(theta (K, D), whitened (K, D), L (D, D))`` of the global latents, or ``None``."""
        ...

    def recenter_globals(self) -> None:
        """Re-centre the global latents' preconditioner (if any) on their current draws."""
        ...
