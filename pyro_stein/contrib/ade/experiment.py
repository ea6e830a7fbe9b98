"""One ADE run on an image dataset, with its figures and metrics on disk: what
``python -m pyro_stein.contrib.ade`` runs. The data loaders, classifier metrics, training loop
and report files are the imaging toolkit's, `pyro_stein.contrib.imaging`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..imaging.data import load_dataset
from ..imaging.metrics import ClassifierMetrics
from ..imaging.reports import METRIC_DRAWS, final_figures, save_figures, to_json
from ..imaging.training import train
from .flows import bits_per_dim, dequantize
from .model import ADE, VARIANTS, ADETrainer

__all__ = ["run_experiment"]

#: Importance samples of the bits-per-dimension bound.
BOUND_SAMPLES = 100


def run_experiment(
    dataset: str | Path = "digits",
    variant: str = "av-ade",
    *,
    epochs: int = 100,
    out: str | Path = "ade_out",
    seed: int = 0,
    metrics_every: int = 10,
    progress: bool = True,
    levels: int | None = None,
    model_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one ADE variant and write ``samples.png``, ``curves.png``, ``checkpoint.pt`` and
    ``metrics.json`` to ``out`` (a run whose checkpoint is there resumes).

    ``model_options`` go to [`ADE`][pyro_stein.contrib.ade.model.ADE] (``adversarial_weight``,
    ``latent_dim``, ``batch_norm``, ...); the model's resolved options are recorded in
    ``metrics.json`` and in the checkpoint, and resuming with other options raises.

    Images are dequantized uniformly (``levels``: 17 for scikit-learn's digits, 256 for
    MNIST, by default from the dataset); a fresh dequantization of the training images is not
    drawn per epoch (one fixed draw, seeded).

    Returns:
        The contents of ``metrics.json``: the test split's bits per dimension from the
        importance-weighted bound (100 samples) and from the ELBO (``nan`` for the GAN), the
        classifier-Frechet distance, inception-style score, class entropy (class coverage),
        diversity and coverage of 2000 samples, the per-epoch history and the wall time.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset)
    levels = levels or (17 if str(dataset) == "digits" else 256)
    started = time.perf_counter()
    metrics = ClassifierMetrics.for_dataset(data, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    train_x = dequantize(data.train_images.reshape(len(data.train_images), -1), levels, generator)
    test_x = dequantize(data.test_images.reshape(len(data.test_images), -1), levels, generator)
    shape = (-1, *data.image_shape)
    torch.manual_seed(seed)
    trainer = ADETrainer(ADE(data.dim, variant, **(model_options or {})))

    def evaluate(epoch: int, current: ADETrainer) -> dict[str, float]:
        if epoch % metrics_every and epoch != epochs:
            return {}
        current.ade.eval()
        torch.manual_seed(seed + epoch)  # the bound's importance samples
        elbo, bound = current.ade.log_likelihood_bounds(test_x, BOUND_SAMPLES)
        draws = current.sample(METRIC_DRAWS, torch.Generator().manual_seed(seed)).clamp(0, 1)
        return {
            "metric_epoch": epoch,
            "test_bits_per_dim": float(bits_per_dim(bound, data.dim, levels).mean()),
            "test_bits_per_dim_elbo": float(bits_per_dim(elbo, data.dim, levels).mean()),
            **metrics(draws.reshape(shape)),
        }

    history = train(trainer, train_x, epochs=epochs, seed=seed, progress=progress,
                    checkpoint=out / "checkpoint.pt", on_epoch=evaluate, progress_label="ADE",
                    fingerprint={"dataset": data.name, "levels": levels,
                                 **{f"model option {k}": v for k, v in trainer.ade.config.items()}})
    final = final_figures(history)
    report = {
        "dataset": data.name,
        "variant": variant,
        "epochs": epochs,
        "seed": seed,
        "levels": levels,
        "model_options": trainer.ade.config,
        "seconds": time.perf_counter() - started,
        "classifier_test_accuracy": metrics.test_accuracy,
        "final": final,
        "history": history,
    }
    (out / "metrics.json").write_text(to_json(report))
    save_figures(trainer, history, out, shape, seed)
    return report

