"""The one multilayer-perceptron builder of the package (guides, energies, generators,
discriminators, classifiers and encoders all use it).  Pure PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["mlp"]


def mlp(
    widths: Sequence[int],
    activation: Callable[[], nn.Module] = nn.ReLU,
    *,
    batch_norm: bool = False,
    output_activation: Callable[[], nn.Module] | None = None,
    zero_output: bool = False,
) -> nn.Sequential:
    """``Linear(widths[0], widths[1]), [BatchNorm1d,] activation, ..., Linear(widths[-2], widths[-1])``.

    Args:
        widths: input width, hidden widths, output width (at least two entries).
        activation: builds the activation after each hidden layer (a class such as
            ``nn.ReLU`` or a function returning a module).
        batch_norm: a ``BatchNorm1d`` between each hidden layer and its activation.
        output_activation: builds an activation after the last layer (``None``: none).
        zero_output: start the last layer at zero (weights and bias), so that the network
            is the zero map at initialisation (a residual branch that starts as the identity).

    Returns:
        The ``nn.Sequential``; its layers are created in order, so a seeded build draws the
        same initial weights as the same layers written out by hand.

    Example:
        >>> import torch
        >>> from pyro_stein.ops.nn import mlp
        >>> net = mlp([3, 16, 2], nn.SiLU, zero_output=True)
        >>> net(torch.randn(5, 3)).abs().max().item()
        0.0
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValueError(f"widths must hold at least two positive integers, got {list(widths)!r}")
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(width_in, width_out))
        if i < len(widths) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(width_out))
            layers.append(activation())
    if zero_output:
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)
