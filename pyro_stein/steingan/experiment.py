"""One SteinGAN (or baseline) run on an image dataset, with its figures and metrics on disk;
what ``python -m pyro_stein.steingan`` and ``benchmarks/steingan_digits.py`` run."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..kernels import RBFKernel
from .baselines import GAN
from .data import ImageDataset, load_dataset
from .energies import AutoencoderEnergy, ClassConditionalEnergy, GaussianBernoulliRBM
from .metrics import ClassifierMetrics
from .training import Generator, SteinGAN, train

__all__ = [
    "ENERGIES",
    "METHODS",
    "add_run_arguments",
    "build",
    "final_figures",
    "report_run",
    "run_experiment",
    "save_figures",
]

ENERGIES = ("ae", "rbm")
METHODS = ("steingan", "no-repulsion", "gan")
#: Generated images on which the metrics are computed.
METRIC_DRAWS = 2000


def build(method: str, energy: str, data: ImageDataset, conditional: bool = False) -> Any:
    """The model of a run: SteinGAN with the ``energy`` (or its no-repulsion ablation), or the GAN.
    ``conditional``: the class-conditional joint energy ``p(x, y)`` (autoencoder energy plus a
    hinged classifier) and a generator that is told the class.

    The autoencoder energy follows the paper's settings (generator rate 1e-3, energy rate
    1e-4, the gamma balancing, RBF kernel on the encoder's features). The RBM is trained by
    plain amortized maximum likelihood (gamma 1, energy rate 3e-4) with an unbounded
    generator and the RBF kernel at 3x the median-heuristic bandwidth on the pixels. At
    energy rate 1e-3 the exact test log-likelihood rose to 30.4 by epoch 45 and then fell to
    17.1 as the energy outran its sampler (the draws' free energy grew to 840 against the
    data's 56); at 3e-4 it rose in every tenth of the run, 22.8 to 28.4 over 100 epochs.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if energy not in ENERGIES:
        raise ValueError(f"energy must be one of {ENERGIES}, got {energy!r}")
    dim = data.dim
    if conditional and (method == "gan" or energy != "ae"):
        raise ValueError("the class-conditional model is SteinGAN (or its ablation) with the ae energy")
    if conditional:
        return SteinGAN(
            ClassConditionalEnergy(dim, data.num_classes), Generator(dim, num_classes=data.num_classes),
            repulsion=method == "steingan",
        )
    if method == "gan":
        return GAN(Generator(dim), dim)
    repulsion = method == "steingan"
    if energy == "ae":
        return SteinGAN(AutoencoderEnergy(dim, code_dim=16), Generator(dim), repulsion=repulsion)
    rbm = GaussianBernoulliRBM(dim, num_hidden=10)
    rbm.fit_visible_to(data.train_images)
    return SteinGAN(
        rbm, Generator(dim, bounded=False), gamma=1.0, energy_lr=3e-4,
        kernel=RBFKernel(bandwidth_factor=3.0), repulsion=repulsion,
    )


def run_experiment(
    dataset: str | Path = "digits",
    energy: str = "ae",
    *,
    method: str = "steingan",
    epochs: int = 100,
    out: str | Path = "steingan_out",
    seed: int = 0,
    metrics_every: int = 10,
    progress: bool = True,
    conditional: bool = False,
) -> dict[str, Any]:
    """Train one model and write ``samples.png``, ``curves.png``, ``checkpoint.pt`` and
    ``metrics.json`` to ``out``; a run whose checkpoint is there resumes.

    Returns:
        The contents of ``metrics.json``: the final classifier-Frechet distance, inception-style
        score, class entropy and diversity of 2000 generated images against the test split,
        the RBM's exact test log-likelihood per image (``energy="rbm"``), for a
        class-conditional model the share of draws the classifier assigns to the class they
        were asked for (``conditional_accuracy``), the per-epoch
        history, the classifier's test accuracy and the wall time.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset)
    started = time.perf_counter()
    metrics = ClassifierMetrics.for_dataset(data, seed=seed)
    torch.manual_seed(seed)
    model = build(method, energy, data, conditional)
    flat_train = data.train_images.reshape(len(data.train_images), -1)
    flat_test = data.test_images.reshape(len(data.test_images), -1)
    shape = (-1, *data.image_shape)

    def evaluate(epoch: int, current: Any) -> dict[str, float]:
        figures: dict[str, float] = {}
        if isinstance(current, SteinGAN) and isinstance(current.energy, GaussianBernoulliRBM):
            with torch.no_grad():
                figures["rbm_test_log_likelihood"] = float(current.energy.log_prob(flat_test).mean())
        if epoch % metrics_every == 0 or epoch == epochs:
            draws = current.sample(METRIC_DRAWS, torch.Generator().manual_seed(seed)).clamp(0, 1)
            figures.update(metrics(draws.reshape(shape)))
            if conditional:
                asked = torch.arange(METRIC_DRAWS) % data.num_classes  # what sample() draws
                with torch.no_grad():
                    said = metrics.classifier(draws.reshape(shape)).argmax(-1)
                figures["conditional_accuracy"] = float((said == asked).float().mean())
            figures["metric_epoch"] = epoch
        return figures

    history = train(model, flat_train, labels=data.train_labels if conditional else None, epochs=epochs, seed=seed,
                    progress=progress, checkpoint=out / "checkpoint.pt", on_epoch=evaluate)
    seconds = time.perf_counter() - started
    final = final_figures(history)
    report = {
        "dataset": data.name,
        "energy": energy if method != "gan" else None,
        "method": method,
        "conditional": conditional,
        "epochs": epochs,
        "seed": seed,
        "seconds": seconds,
        "classifier_test_accuracy": metrics.test_accuracy,
        "final": final,
        "history": history,
    }
    (out / "metrics.json").write_text(to_json(report))
    save_figures(model, history, out, shape, seed)
    return report


def to_json(value: Any) -> str:
    """``value`` as JSON text with NaN and infinities as null (a GAN has no bits per
    dimension; a diverged run may have infinite figures), not the non-standard ``NaN`` and
    ``Infinity`` that ``json.dumps`` writes by default and strict parsers reject."""

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
    """Each figure's last value (the epoch counters left out)."""
    return {name: values[-1] for name, values in history.items() if name not in ("epoch", "metric_epoch") and values}


def add_run_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The options both case studies' command lines share: data, length, output, seed, progress."""
    parser.add_argument("--dataset", default="digits",
                        help="'digits' (scikit-learn's 8x8 digits) or a path to MNIST IDX files or an .npz")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default=out,
                        help=f"output folder, default {out}; a run whose checkpoint is there resumes, and "
                        "a checkpoint of another model or other options is an error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics-every", type=int, default=10, help="epochs between evaluations")
    parser.add_argument("--no-progress", action="store_true")


def report_run(run: Callable[[], dict[str, Any]]) -> int:
    """Run, print the final figures as JSON and return 0; a missing or malformed input file
    or a bad option prints ``error: ...`` to stderr and returns 2."""
    try:
        report = run()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(to_json({"seconds": round(report["seconds"], 1), **report["final"]}))
    return 0


def save_figures(model: Any, history: dict[str, list[float]], out: Path, shape: tuple[int, ...], seed: int) -> None:
    """`samples.png` (100 draws of `model.sample`) and `curves.png` (the history's figures by epoch)."""
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
