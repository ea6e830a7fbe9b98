"""The epoch loop that the generative case studies share: the paper's learning-rate
schedule, a progress bar, per-epoch figures and a checkpoint that a later run resumes from.

It trains any object with ``step(batch)`` (or ``step(batch, labels)``) returning a dict of
figures, a ``lr_factor`` attribute that scales its learning rates, and ``state_dict`` /
``load_state_dict``: [`SteinGAN`][pyro_stein.contrib.steingan.training.SteinGAN], the GAN
baseline ([`GAN`][pyro_stein.contrib.imaging.baselines.GAN]), ADE's trainer
([`ADETrainer`][pyro_stein.contrib.ade.model.ADETrainer]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...fitting.checkpoint import read_state, refuse_other_run, write_state
from ...ops.digest import describe

#: The kind of the checkpoints the case studies' training loop writes.
TRAINING_CHECKPOINT = "pyro_stein.contrib.imaging.train"

__all__ = ["learning_rate_factor", "train"]


def learning_rate_factor(epoch: int, epochs: int) -> float:
    """The paper's schedule: constant for the first half of the epochs, then linear decay
    (to ``1 / (epochs / 2)`` of the initial rate in the last epoch).

    Example:
        >>> tuple(learning_rate_factor(epoch, 4) for epoch in range(4))
        (1.0, 1.0, 1.0, 0.5)
    """
    half = epochs / 2
    return 1.0 - max(0.0, (epoch - half) / half) if epochs > 1 else 1.0


def train(
    gan: Any,
    data: Tensor,
    *,
    labels: Tensor | None = None,
    epochs: int,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[int, Any], dict[str, float]] | None = None,
    progress_label: str = "training",
    fingerprint: Mapping[str, Any] | None = None,
) -> dict[str, list[float]]:
    """Train for ``epochs`` passes over ``data`` (flat images ``(N, D)``), with the paper's
    learning-rate schedule, a tqdm bar, and a checkpoint that a later call resumes from.

    Args:
        gan: the model to train: a [`SteinGAN`][pyro_stein.contrib.steingan.training.SteinGAN]
            or any object with its `step`, `lr_factor`, `state_dict` and `load_state_dict`
            (the GAN baseline, ADE's trainer).
        data: the training images, flat.
        labels: their classes, for a class-conditional energy.
        epochs: passes over the data in total (a resumed run counts the ones it resumes).
        batch_size: images per step (and generator draws per step).
        seed: seeds the batch order and torch's generator (the generator's noise).
        progress: show a progress bar.
        checkpoint: a file: resumed from if it exists, written after every epoch.
        on_epoch: called after each epoch with ``(epoch, gan)``; the figures it returns
            join the history (the metrics of the case study).
        progress_label: the progress bar's label (the study's name: ``"SteinGAN"``, ``"ADE"``).
        fingerprint: what else the run depends on, ``{what: value}`` (the dataset's name,
            the model's options).  The checkpoint records it with the data's contents,
            ``epochs``, ``batch_size`` and ``seed``; resuming from a checkpoint of a run that
            differs in any of them is refused, naming the difference.

    Returns:
        ``{figure: [value per epoch]}``: the mean of each step figure over the epoch, and
        ``on_epoch``'s figures.

    Example:
        >>> from pyro_stein.contrib.imaging.baselines import GAN
        >>> from pyro_stein.contrib.imaging.generator import Generator
        >>> gan = GAN(Generator(16, noise_dim=4, hidden_dims=(8,)), 16, hidden_dims=(8,))
        >>> history = train(gan, torch.rand(40, 16), epochs=2, batch_size=20, progress=False)
        >>> history["epoch"], sorted(history)
        ([1, 2], ['discriminator_loss', 'epoch', 'generator_loss'])
    """
    from tqdm.auto import tqdm

    if epochs < 1 or batch_size < 2:
        raise ValueError(f"epochs must be >= 1 and batch_size >= 2, got {epochs} and {batch_size}")
    history: dict[str, list[float]] = {}
    start = 0
    path = None if checkpoint is None else Path(checkpoint)
    torch.manual_seed(seed)
    recorded = {} if path is None else {
        "data": describe(data),
        "labels": describe(labels),
        "epochs": describe(epochs),
        "batch_size": describe(batch_size),
        "seed": describe(seed),
        **{what: describe(value) for what, value in (fingerprint or {}).items()},
    }
    if path is not None and path.exists():
        state = read_state(path, TRAINING_CHECKPOINT)
        refuse_other_run(path, state.get("fingerprint"), recorded)
        try:
            gan.load_state_dict(state["gan"])
        except (RuntimeError, KeyError) as error:
            raise ValueError(
                f"checkpoint {path} was written by a different model and cannot resume this run "
                f"({str(error).splitlines()[0]}); write to another folder or delete the checkpoint"
            ) from error
        history, start = state["history"], state["epoch"]
        torch.set_rng_state(state["torch_rng"])
    bar = tqdm(total=epochs, initial=start, disable=not progress, desc=progress_label)
    for epoch in range(start, epochs):
        gan.lr_factor = learning_rate_factor(epoch, epochs)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        sums: dict[str, float] = {}
        steps = 0
        for first in range(0, len(data) - batch_size + 1, batch_size):
            batch = order[first : first + batch_size]
            figures = gan.step(data[batch]) if labels is None else gan.step(data[batch], labels[batch])
            for name, value in figures.items():
                if math.isfinite(value):
                    sums[name] = sums.get(name, 0.0) + value
            steps += 1
        for name, total in sums.items():
            history.setdefault(name, []).append(total / steps)
        history.setdefault("epoch", []).append(epoch + 1)
        if on_epoch is not None:
            for name, value in on_epoch(epoch + 1, gan).items():
                history.setdefault(name, []).append(value)
        bar.update(1)
        bar.set_postfix({name: f"{values[-1]:.3g}" for name, values in history.items() if name != "epoch"}, refresh=False)
        if path is not None:
            state = {
                "fingerprint": recorded,
                "gan": gan.state_dict(),
                "history": history,
                "epoch": epoch + 1,
                "torch_rng": torch.get_rng_state(),
            }
            write_state(path, state, TRAINING_CHECKPOINT)
    bar.close()
    return history
