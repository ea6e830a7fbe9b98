"""What a generative case study's run leaves on disk and reports: ``metrics.json`` in strict
JSON (`to_json`), the final figures of a history (`final_figures`), the sample grid and the
curves (`save_figures`), and how many draws the metrics take (`METRIC_DRAWS`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

__all__ = ["METRIC_DRAWS", "final_figures", "save_figures", "to_json"]

#: Generated images on which the metrics are computed.
METRIC_DRAWS = 2000


def to_json(value: Any) -> str:
    """``value`` as JSON text with NaN and infinities as null (a GAN has no bits per
    dimension; a diverged run may have infinite figures), not the non-standard ``NaN`` and
    ``Infinity`` that ``json.dumps`` writes by default and strict parsers reject.

    Example:
        >>> print(to_json({"bits": float("nan"), "epochs": [1, 2]}))
        {
         "bits": null,
         "epochs": [
          1,
          2
         ]
        }
    """

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(inner) for inner in item]
        return item

    return json.dumps(finite(value), indent=1, allow_nan=False)


def final_figures(history: dict[str, list[float]]) -> dict[str, float]:
    """Each figure's last value (the epoch counters left out).

    Example:
        >>> final_figures({"epoch": [1, 2], "metric_epoch": [2], "elbo": [-3.0, -2.5], "quality": []})
        {'elbo': -2.5}
    """
    return {name: values[-1] for name, values in history.items() if name not in ("epoch", "metric_epoch") and values}


def save_figures(model: Any, history: dict[str, list[float]], out: Path, shape: tuple[int, ...], seed: int) -> None:
    """`samples.png` (100 draws of `model.sample`) and `curves.png` (the history's figures by epoch).

    Example:
        >>> import tempfile
        >>> from pyro_stein.contrib.imaging.baselines import GAN
        >>> from pyro_stein.contrib.imaging.generator import Generator
        >>> gan = GAN(Generator(64, hidden_dims=(16,)), 64, hidden_dims=(16,))
        >>> history = {"epoch": [1, 2], "generator_loss": [0.7, 0.6], "metric_epoch": [2], "classifier_frechet": [80.0]}
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     save_figures(gan, history, Path(folder), (-1, 1, 8, 8), seed=0)
        ...     sorted(path.name for path in Path(folder).iterdir())
        ['curves.png', 'samples.png']
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = model.sample(100, torch.Generator().manual_seed(seed + 1)).clamp(0, 1).reshape(shape)
    fig, axes = plt.subplots(10, 10, figsize=(6, 6))
    for ax, image in zip(axes.flat, images):
        ax.imshow(image[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    fig.tight_layout(pad=0.1)
    fig.savefig(out / "samples.png", dpi=80)
    plt.close(fig)

    per_epoch = ("data_energy", "draws_energy", "discriminator_loss", "generator_loss", "elbo", "quality", "discriminator")
    panels = [name for name in per_epoch if name in history]
    panels += [name for name in ("classifier_frechet", "rbm_test_log_likelihood", "test_bits_per_dim") if name in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, name in zip(axes if len(panels) > 1 else [axes], panels):
        values = history[name]
        epochs = history["metric_epoch"] if name in ("classifier_frechet", "test_bits_per_dim") else history["epoch"][-len(values):]
        ax.plot(epochs, values, marker="." if len(values) < 30 else None)
        ax.set_xlabel("epoch")
        ax.set_title(name.replace("_", " "))
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=80)
    plt.close(fig)
