"""Bijections for supports that torch's ``biject_to`` registry lacks.

Importing `pyro_stein` registers them (as Pyro registers its own), so every
autoguide, not only [`AutoNeuralSampler`][pyro_stein.AutoNeuralSampler], can handle such sites.
"""

from __future__ import annotations

import torch
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import Transform

__all__ = ["mixture_support_transform"]


@biject_to.register(constraints.MixtureSameFamilyConstraint)
@transform_to.register(constraints.MixtureSameFamilyConstraint)
def mixture_support_transform(constraint: constraints.MixtureSameFamilyConstraint) -> Transform:
    """A ``MixtureSameFamily`` supported where its components are: their common support.

    Raises:
        NotImplementedError: when the components have different bounds (the mixture's
            support is then a union, which no single bijection covers).
    """
    base = constraint.base_constraint
    for value in vars(base).values():
        if isinstance(value, torch.Tensor) and value.numel() > 1 and not (value == value.flatten()[0]).all():
            raise NotImplementedError(
                f"The components of this MixtureSameFamily have different supports ({base}); "
                "give them one common support to use it as a latent site."
            )
    return biject_to(base)
