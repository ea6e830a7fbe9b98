"""Variational autoencoders on binarized images: the same Pyro model and decoder trained four
ways, judged by the same importance-sampling test log-likelihood.

* ``vae``: Pyro's ``Trace_ELBO`` with a Gaussian encoder guide (Kingma & Welling 2014);
* ``renyi``: Pyro's ``RenyiELBO(alpha=0)`` with 16 particles, same encoder.  Pyro weighs
  each particle by the log joint of the whole minibatch, so this is the importance-weighted
  bound of one 128-image datapoint, not of each image;
* ``iwae``: the importance-weighted bound of each image (Burda, Grosse & Salakhutdinov 2016),
  16 samples an image, same encoder, written out in PyTorch (`iwae_loss`);
* ``stein_vae``: an [`AutoAmortizedSampler`][pyro_stein.AutoAmortizedSampler] trained by
  [`AmortizedSVGD`][pyro_stein.AmortizedSVGD], 16 particles an image (Feng, Wang & Liu 2017;
  Pu et al. 2017);
* ``macvae``: the same sampler trained by [`CTFDistillation`][pyro_stein.CTFDistillation], each
  image's particles flowing by Metropolis-adjusted Langevin steps (Chen et al. 2018).

The decoder (``z -> 128 -> 128 -> pixels`` logits of independent Bernoullis), the prior
``N(0, I)``, the minibatch (128 images), the optimizer (Adam, learning rate 1e-3) and the
number of steps are the same for all four; the decoder is trained by each method's own
gradient (the ELBO's, or the mean log joint at the sampler's particles: amortized maximum
likelihood).  Test log-likelihoods come from
[`importance_log_likelihood()`][pyro_stein.diagnostics.marginal_likelihood.importance_log_likelihood]:
per test image, a Student-t proposal fitted to 200 of the method's guide draws and 1000
importance samples, the same estimator for every method.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...diagnostics.marginal_likelihood import importance_log_likelihood
from ...engines import AmortizedSVGD, CTFDistillation
from ...guides import AutoAmortizedSampler
from ...ops.nn import mlp
from ..imaging.data import load_dataset

__all__ = ["METHODS", "GaussianEncoder", "binarize", "encoder_guide", "iwae_loss", "run_experiment", "vae_model"]

METHODS = ("vae", "renyi", "iwae", "stein_vae", "macvae")
#: Particles per image: the bounds' samples, Amortized SVGD's and CTF's particles.
PARTICLES = {"renyi": 16, "iwae": 16, "stein_vae": 16, "macvae": 32}
HIDDEN = (128, 128)
BATCH_SIZE = 128


def binarize(images: Tensor) -> Tensor:
    """``(N, 1, H, W)`` images in ``[0, 1]`` as ``(N, H W)`` pixels, 1 above one half (fixed,
    so that every run sees the same data)."""
    return (images.reshape(len(images), -1) > 0.5).to(torch.get_default_dtype())


def vae_model(decoder: nn.Module, latent_dim: int) -> Callable[..., None]:
    """The Pyro model ``z ~ N(0, I)``, ``x | z ~ Bernoulli(logits=decoder(z))``, its images
    in a subsampled plate ``"images"`` (``batch_size`` a step)."""

    def model(x: Tensor, batch_size: int = BATCH_SIZE) -> None:
        pyro.module("decoder", decoder)
        with pyro.plate("images", len(x), subsample_size=min(batch_size, len(x))) as rows:
            z = pyro.sample("z", dist.Normal(x.new_zeros(latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x[rows])

    return model


class GaussianEncoder(nn.Module):
    """``q(z | x) = N(m(x), diag(s(x)^2))``, the baselines' encoder."""

    def __init__(self, pixels: int, latent_dim: int) -> None:
        super().__init__()
        self.body = mlp([pixels, *HIDDEN], nn.SiLU, output_activation=nn.SiLU)
        self.loc = nn.Linear(HIDDEN[-1], latent_dim)
        self.log_scale = nn.Linear(HIDDEN[-1], latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x)
        return self.loc(features), self.log_scale(features).exp()


def encoder_guide(encoder: GaussianEncoder, latent_dim: int) -> Callable[..., None]:
    """The baselines' guide: ``encoder`` in the model's plate, on the same rows."""

    def guide(x: Tensor, batch_size: int = BATCH_SIZE) -> None:
        pyro.module("encoder", encoder)
        with pyro.plate("images", len(x), subsample_size=min(batch_size, len(x))) as rows:
            loc, scale = encoder(x[rows])
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return guide


def iwae_loss(encoder: GaussianEncoder, decoder: nn.Module, x: Tensor, num_samples: int) -> Tensor:
    """Minus the importance-weighted bound of each image of ``x`` ``(B, pixels)``, averaged:
    ``-1/B sum_b log 1/K sum_k p(x_b, z_k) / q(z_k | x_b)``, ``z_k ~ q(. | x_b)`` reparameterized.

    Example:
        >>> import torch
        >>> from pyro_stein.ops.nn import mlp
        >>> encoder, decoder = GaussianEncoder(4, 2), mlp([2, 4])
        >>> loss = iwae_loss(encoder, decoder, torch.ones(3, 4), num_samples=5)
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """
    loc, scale = encoder(x)
    posterior = dist.Normal(loc, scale)
    z = posterior.rsample((num_samples,))
    log_weights = (
        dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        + dist.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1)
        - posterior.log_prob(z).sum(-1)
    )
    return -(torch.logsumexp(log_weights, 0) - math.log(num_samples)).mean()


def _build(method: str, pixels: int, latent_dim: int) -> tuple[Callable, Any, Any, nn.Module]:
    decoder = mlp([latent_dim, *HIDDEN, pixels], nn.SiLU)
    model = vae_model(decoder, latent_dim)
    if method in ("vae", "renyi", "iwae"):
        encoder = GaussianEncoder(pixels, latent_dim)
        guide = encoder_guide(encoder, latent_dim)
        if method == "iwae":
            loss = (encoder, decoder)
        else:
            loss = Trace_ELBO() if method == "vae" else RenyiELBO(alpha=0.0, num_particles=PARTICLES["renyi"])
    else:
        guide = AutoAmortizedSampler(model)
        engine = AmortizedSVGD if method == "stein_vae" else CTFDistillation
        loss = engine(num_particles=PARTICLES[method])
    return model, guide, loss, decoder


def run_experiment(
    dataset: str = "digits",
    method: str = "stein_vae",
    *,
    epochs: int = 200,
    latent_dim: int = 8,
    out: str | Path | None = None,
    seed: int = 0,
    test_images: int | None = None,
    importance_samples: int = 1000,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one method and measure it.

    Args:
        dataset: ``"digits"`` or a path to MNIST IDX files or an ``.npz``.
        method: one of `METHODS`.
        epochs: passes over the training images (of ``BATCH_SIZE`` images a step).
        latent_dim: dimensions of ``z``.
        out: a folder for ``metrics.json`` and ``samples.png`` (``None``: write nothing).
        seed: seeds Pyro, PyTorch and NumPy.
        test_images: evaluate on the first this many test images (default all).
        importance_samples: importance samples per test image.
        progress: show a progress bar.

    Returns:
        ``{"seconds": training seconds, "final": {figure: value}, "reconstructions": ...}``:
        the final figures are the mean test log-likelihood per image (nats), its standard
        error over the images, the mean effective sample fraction of the importance weights,
        the training seconds, and the steps.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if latent_dim < 1 or epochs < 1:
        raise ValueError(f"latent_dim and epochs must be positive, got {latent_dim!r} and {epochs!r}")
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    data = load_dataset(dataset)
    train_x, test_x = binarize(data.train_images), binarize(data.test_images)
    if test_images is not None:
        test_x = test_x[:test_images]
    model, guide, loss, decoder = _build(method, train_x.shape[1], latent_dim)
    steps = epochs * math.ceil(len(train_x) / BATCH_SIZE)
    started = time.perf_counter()
    if method == "iwae":
        encoder, _ = loss
        optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
        for _ in tqdm(range(steps), disable=not progress, desc=method):
            rows = torch.randperm(len(train_x))[:BATCH_SIZE]
            optimizer.zero_grad()
            iwae_loss(encoder, decoder, train_x[rows], PARTICLES["iwae"]).backward()
            optimizer.step()
    else:
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=loss)
        for _ in tqdm(range(steps), disable=not progress, desc=method):
            svi.step(train_x)
    seconds = time.perf_counter() - started
    estimate = importance_log_likelihood(model, guide, test_x, num_samples=importance_samples, batch_size=len(test_x))
    log_likelihood = estimate.log_likelihood
    final = {
        "method": method,
        "test_log_likelihood": float(log_likelihood.mean()),
        "test_log_likelihood_se": float(log_likelihood.std() / len(log_likelihood) ** 0.5),
        "effective_sample_fraction": float(estimate.effective_sample_fraction.mean()),
        "train_seconds": seconds,
        "steps": steps,
    }
    with torch.no_grad():
        shown = test_x[:8]
        draws = pyro.infer.Predictive(model, guide=guide, num_samples=1, return_sites=["z"])(shown, batch_size=len(shown))
        reconstructions = torch.sigmoid(decoder(draws["z"][0]))
        samples = torch.sigmoid(decoder(torch.randn(8, latent_dim)))
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(final, indent=1))
        _save_figure(folder / "samples.png", shown, reconstructions, samples, data.image_shape, method)
    return {"seconds": seconds, "final": final, "reconstructions": reconstructions, "samples": samples}


def _save_figure(path: Path, shown: Tensor, reconstructions: Tensor, samples: Tensor, shape: tuple, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = shape[1], shape[2]
    rows = [("test images", shown), ("reconstructions", reconstructions), ("samples of the model", samples)]
    figure, axes = plt.subplots(3, 8, figsize=(8, 3.4))
    for row, (label, images) in enumerate(rows):
        for column in range(8):
            axis = axes[row, column]
            axis.imshow(np.asarray(images[column].reshape(height, width)), cmap="gray_r", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
