# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A variational autoencoder in a dozen lines, trained by `fit`
#
# A VAE is a Pyro model with one latent per image: a code `z_i ~ N(0, I)` and pixels drawn
# from a decoder network, `x_i | z_i ~ Bernoulli(logits=decoder(z_i))`. Written with a
# subsampled plate, as Pyro's own VAE examples are, `pyro_stein.fit` recognises the codes as
# *local* latents and trains an amortized sampler for them (an encoder that draws each image's
# code from the image, `AutoAmortizedSampler`) along the Stein variational gradient, and the
# decoder beside it: a Stein VAE (Feng, Wang & Liu 2017; Pu et al. 2017).
#
# The data: scikit-learn's 8x8 handwritten digits, binarized, 1347 for training and 450 for
# testing (shipped with scikit-learn; nothing is downloaded). Run it as a script:
# `python tutorials/vae_digits.py`; `PYRO_STEIN_FAST=1` makes a quick smoke run.

# %%
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files
import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from sklearn.datasets import load_digits
from torch import nn

import pyro_stein
from pyro_stein.diagnostics import importance_log_likelihood

FAST = os.environ.get("PYRO_STEIN_FAST", "") not in ("", "0")
HERE = Path(__file__).resolve().parent
FIGURES = Path(os.environ.get("PYRO_STEIN_FIGURES", HERE / "figures"))
FIGURE = FIGURES / "vae_digits.png"
NUM_STEPS = 100 if FAST else 2000

images = torch.tensor(load_digits().images.reshape(-1, 64) > 8, dtype=torch.float32)  # pixels 0-16, cut at half
generator = torch.Generator().manual_seed(0)
order = torch.randperm(len(images), generator=generator)
x_train, x_test = images[order[450:]], images[order[:450]]

# %% [markdown]
# ## The model

# %%
LATENT = 8
decoder = nn.Sequential(nn.Linear(LATENT, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 64))


def model(x, batch_size=128):
    pyro.module("decoder", decoder)
    with pyro.plate("images", len(x), subsample_size=min(batch_size, len(x))) as rows:
        z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x[rows])


# %% [markdown]
# ## Training: one call
#
# `fit` chooses the guide and the particle count (16 per image) by itself; the decoder's
# fitted weights end up in the module (and in Pyro's parameter store), as after `SVI`.

# %%
pyro.set_rng_seed(0)
started = time.perf_counter()
result = pyro_stein.fit(model, x_train, num_steps=NUM_STEPS, seed=0, progress=not FAST)
print(f"Stein VAE: {type(result.guide).__name__}, {result.engine.num_particles} particles an image, "
      f"{result.num_steps} steps in {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## How good is it? Test log-likelihood
#
# `importance_log_likelihood` estimates each test image's `log p(x)` by importance
# sampling, from a Student-t proposal fitted to the guide's draws of that image (the sampler
# has no density of its own, so the proposal gets one). The same estimator judges Pyro's
# standard VAE: a Gaussian encoder trained by `Trace_ELBO` for the same number of steps, with
# the same decoder architecture, minibatch and learning-rate schedule.

# %%
SAMPLES = 200 if FAST else 2000
with result.param_scope():
    stein = importance_log_likelihood(model, result.guide, x_test, num_samples=SAMPLES, batch_size=len(x_test))
print(f"Stein VAE: test log-likelihood {stein.log_likelihood.mean():.2f} nats/image "
      f"(effective sample fraction {stein.effective_sample_fraction.mean():.2f})")

stein_decoder = [p.detach().clone() for p in decoder.parameters()]
for layer in decoder:  # a fresh decoder, same architecture, for the baseline
    if isinstance(layer, nn.Linear):
        layer.reset_parameters()


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU())
        self.loc, self.log_scale = nn.Linear(128, LATENT), nn.Linear(128, LATENT)

    def forward(self, x):
        h = self.body(x)
        return self.loc(h), self.log_scale(h).exp()


encoder = Encoder()


def guide(x, batch_size=128):
    pyro.module("encoder", encoder)
    with pyro.plate("images", len(x), subsample_size=min(batch_size, len(x))) as rows:
        loc, scale = encoder(x[rows])
        pyro.sample("z", dist.Normal(loc, scale).to_event(1))


pyro.clear_param_store()
pyro.set_rng_seed(0)
optim = pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 1e-2, "betas": (0.9, 0.9)},
                                  "gamma": 0.1 ** (1 / NUM_STEPS)})
svi = SVI(model, guide, optim, loss=Trace_ELBO())
started = time.perf_counter()
for _ in range(NUM_STEPS):
    svi.step(x_train)
    optim.step()
print(f"Trace_ELBO VAE: {NUM_STEPS} steps in {time.perf_counter() - started:.0f} s")
plain = importance_log_likelihood(model, guide, x_test, num_samples=SAMPLES, batch_size=len(x_test))
print(f"Trace_ELBO VAE: test log-likelihood {plain.log_likelihood.mean():.2f} nats/image "
      f"(effective sample fraction {plain.effective_sample_fraction.mean():.2f})")
difference = stein.log_likelihood - plain.log_likelihood
print(f"Stein VAE minus Trace_ELBO VAE: {difference.mean():.2f} nats/image "
      f"(standard error {difference.std() / len(difference) ** 0.5:.2f} over the test images)")

# %% [markdown]
# Over three seeds, and beside Pyro's `RenyiELBO`, a per-image importance-weighted bound and
# MacVAE (CTF distillation), the comparison is in the [VAE case study](../local_latents.md)
# (`python benchmarks/vae_digits.py`).
#
# ## Reconstructions and samples
#
# Test images, a posterior draw of each one's code decoded, and images decoded from codes
# drawn from the prior, with the Stein VAE's decoder:
#
# ![VAE reconstructions and samples](figures/vae_digits.png)

# %%
with torch.no_grad():
    for parameter, value in zip(decoder.parameters(), stein_decoder):
        parameter.copy_(value)
    shown = x_test[:10]
    with result.param_scope():
        codes = Predictive(model, guide=result.guide, num_samples=1, return_sites=["z"])(shown, batch_size=10)["z"][0]
    rows = [shown, torch.sigmoid(decoder(codes)), torch.sigmoid(decoder(torch.randn(10, LATENT)))]
figure, axes = plt.subplots(3, 10, figsize=(10, 3.3))
for row, (label, pictures) in enumerate(zip(["test image", "reconstruction", "sample"], rows)):
    for column in range(10):
        axes[row, column].imshow(pictures[column].reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[row, column].set_xticks([])
        axes[row, column].set_yticks([])
    axes[row, 0].set_ylabel(label, rotation=0, ha="right", fontsize=8)
figure.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
figure.savefig(FIGURE, dpi=100)
print(f"figure saved to {FIGURE}")
