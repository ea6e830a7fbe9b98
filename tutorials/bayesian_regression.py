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
# # Bayesian linear regression with Amortized SVGD
#
# We fit a Bayesian linear regression to scikit-learn's diabetes data (442 patients, ten
# baseline measurements, one disease-progression score) with `pyro_stein.fit`, and check
# the posterior against a reference from Pyro's NUTS.
#
# Amortized SVGD trains a neural sampler `z = f(xi)` so that its draws move along the
# Stein variational gradient of the model's log joint. Once trained, any number of
# posterior draws costs one forward pass of the sampler.
#
# Run it as a script: `python tutorials/bayesian_regression.py`. Set
# `PYRO_STEIN_FAST=1` for a quick smoke run (fewer steps; the test suite does this).

# %%
import os
import time
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")  # headless: the figure is written to a file
import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from sklearn.datasets import load_diabetes

import pyro_stein

FAST = os.environ.get("PYRO_STEIN_FAST", "") not in ("", "0")
HERE = Path(__file__).resolve().parent
# Where figures go: beside the tutorial, unless PYRO_STEIN_FIGURES names another folder (the tests do).
FIGURES = Path(os.environ.get("PYRO_STEIN_FIGURES", HERE / "figures"))
REFERENCE = HERE / "data" / "diabetes_nuts.npz"
FIGURE = FIGURES / "bayesian_regression.png"
PPC_FIGURE = FIGURES / "bayesian_regression_ppc.png"

# %% [markdown]
# ## Data and model
#
# The ten predictors are standardized, so each coefficient is the change in the score per
# standard deviation of its predictor. Two of them, total cholesterol (`s1`) and LDL
# (`s2`), are correlated at 0.9, which makes their coefficients strongly (negatively)
# correlated a posteriori: a good test for a sampler.

# %%
data = load_diabetes()
x_np = (data.data - data.data.mean(0)) / data.data.std(0)
x = torch.tensor(x_np, dtype=torch.float32)
y = torch.tensor(data.target, dtype=torch.float32)
feature_names = list(data.feature_names)


def model(x, y=None):
    alpha = pyro.sample("alpha", dist.Normal(150.0, 100.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 100.0).expand([x.shape[1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(100.0))
    mean = alpha + x @ beta
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)


# %% [markdown]
# ## Fit
#
# `fit` trains an `AutoNeuralSampler` with `AmortizedSVGD`; its defaults (512 particles
# per step, RBF kernel in whitened coordinates, a Laplace start, Adam at three learning
# rates, each held until the sampler stops changing) need no tuning here. It picks its own
# number of steps (at most 2000) and says why it stopped (`result.convergence`);
# `progress=True` shows a bar with the figure it is waiting on.

# %%
start = time.perf_counter()
result = pyro_stein.fit(model, x, y, seed=0, num_steps=300 if FAST else None, progress=not FAST)
fit_seconds = time.perf_counter() - start
print(f"trained {result.num_steps} steps in {fit_seconds:.1f} s; "
      f"squared KSD over the last 100 steps: {np.mean(result.history['squared_ksd'][-100:]):.2e}")
print(result.convergence.message())

start = time.perf_counter()
draws = result.sample(4000)
draw_seconds = time.perf_counter() - start
print(f"4000 posterior draws in {1e3 * draw_seconds:.1f} ms")


def flatten(samples: dict) -> tuple[np.ndarray, list[str]]:
    """Stack draws as (num_draws, 12) with readable names."""
    columns = [samples["alpha"].reshape(-1, 1), samples["beta"], samples["sigma"].reshape(-1, 1)]
    names = ["alpha"] + [f"beta[{name}]" for name in feature_names] + ["sigma"]
    return np.concatenate([np.asarray(c, dtype=np.float64) for c in columns], axis=1), names


ours, names = flatten({k: v.numpy() for k, v in draws.items()})

# %% [markdown]
# ## Into ArviZ
#
# `pyro_stein.to_inference_data(result)` runs the model at every draw and returns an ArviZ
# `InferenceData` with the posterior, a posterior predictive replicate per draw, the
# log-likelihood of every patient, the observed scores, the predictors (`constant_data`) and
# `sample_stats`. Naming `beta`'s dimension after the predictors labels every table and plot.
# The draws are independent, so they form one chain: summarize them with
# `kind="stats"` (R-hat needs several chains, and ESS is simply about the number of draws;
# the [ArviZ page](../arviz.md) says which diagnostics apply). What checks the sampler
# itself is `ksd`, the kernelized Stein discrepancy of the draws against the model, in
# `sample_stats`: below about 0.05 means they agree.

# %%
idata = pyro_stein.to_inference_data(result, dims={"beta": ["predictor"]}, coords={"predictor": feature_names})
print(idata)
print(az.summary(idata, var_names=["alpha", "beta", "sigma"], kind="stats", hdi_prob=0.9).to_string())
print(f"KSD of the draws: {idata.sample_stats.attrs['ksd']:.3f}")

# %% [markdown]
# ## Reference: NUTS
#
# Pyro's NUTS takes minutes on this model, so its draws (4 chains x 1000 after 1000 warm-up
# steps) are computed once and cached in `tutorials/data/diabetes_nuts.npz`. Delete that file
# to recompute it.

# %%
def run_nuts() -> np.ndarray:
    from pyro.infer import MCMC, NUTS

    pyro.set_rng_seed(1)
    kernel = NUTS(model, target_accept_prob=0.9, full_mass=True, jit_compile=True, ignore_jit_warnings=True)
    mcmc = MCMC(kernel, num_samples=1000, warmup_steps=1000,
                num_chains=4, mp_context="spawn")
    start = time.perf_counter()
    mcmc.run(x, y)
    samples, _ = flatten({k: v.numpy() for k, v in mcmc.get_samples().items()})
    np.savez_compressed(REFERENCE, draws=samples, names=np.array(names),
                        seconds=time.perf_counter() - start)
    return samples


if not REFERENCE.exists():
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    print("no cached NUTS reference; running NUTS once (several minutes) ...")
    run_nuts()
cached = np.load(REFERENCE)
reference = cached["draws"]
print(f"NUTS reference: {reference.shape[0]} draws, computed in {float(cached['seconds']):.0f} s")
# The draws are stored chain after chain: check the chains agreed and mixed.
nuts_diagnostics = az.summary(az.convert_to_inference_data(reference.reshape(4, -1, reference.shape[1])),
                              kind="diagnostics")
print(f"NUTS diagnostics: R-hat <= {nuts_diagnostics['r_hat'].max():.3f}, "
      f"bulk ESS >= {nuts_diagnostics['ess_bulk'].min():.0f}, tail ESS >= {nuts_diagnostics['ess_tail'].min():.0f}")

# %% [markdown]
# ## Comparison
#
# For every parameter: the standardized mean error `|mean - ref_mean| / ref_sd` and the
# ratio of standard deviations; for strongly correlated pairs, the correlation error.

# %%
ref_mean, ref_sd = reference.mean(0), reference.std(0)
mean_error = np.abs(ours.mean(0) - ref_mean) / ref_sd
sd_ratio = ours.std(0) / ref_sd
print(f"{'parameter':<14}{'mean err/sd':>12}{'sd ratio':>10}")
for j, name in enumerate(names):
    print(f"{name:<14}{mean_error[j]:12.3f}{sd_ratio[j]:10.3f}")
ref_corr = np.corrcoef(reference.T)
our_corr = np.corrcoef(ours.T)
strong = [(i, j) for i in range(len(names)) for j in range(i) if abs(ref_corr[i, j]) > 0.5]
corr_error = max((abs(our_corr[i, j] - ref_corr[i, j]) for i, j in strong), default=0.0)
for i, j in strong:
    print(f"corr({names[i]}, {names[j]}): {our_corr[i, j]:+.3f} vs NUTS {ref_corr[i, j]:+.3f}")
print(f"\nworst standardized mean error {mean_error.max():.3f}, sd ratios in "
      f"[{sd_ratio.min():.3f}, {sd_ratio.max():.3f}], worst correlation error {corr_error:.3f}")
print(f"time: fit {fit_seconds:.1f} s vs NUTS {float(cached['seconds']):.0f} s")

# %% [markdown]
# ## Posterior predictive check and LOO
#
# The posterior predictive replicates should look like the observed scores; the left panel
# of the second figure overlays 100 replicated data sets on the data (`az.plot_ppc`).
# Leave-one-out cross-validation (PSIS-LOO, `az.loo`) needs only posterior draws and the
# pointwise log-likelihood, so it is as valid for independent draws as for MCMC. The cached
# NUTS draws go through the same `to_inference_data` (a dictionary of draws per site, by
# chain), so the two compare in one call: the expected log predictive densities should
# agree within their standard errors.

# %%
nuts_draws = {
    "alpha": reference[:, 0].reshape(4, -1),
    "beta": reference[:, 1:11].reshape(4, -1, 10),
    "sigma": reference[:, 11].reshape(4, -1),
}
nuts_idata = pyro_stein.to_inference_data(nuts_draws, model, x, y, dims={"beta": ["predictor"]},
                                          coords={"predictor": feature_names})
loo = az.loo(idata, pointwise=True)
nuts_loo = az.loo(nuts_idata, pointwise=True)
print(f"PSIS-LOO elpd: Amortized SVGD {loo.elpd_loo:.1f} (se {loo.se:.1f}), NUTS {nuts_loo.elpd_loo:.1f} "
      f"(se {nuts_loo.se:.1f}); Pareto k > 0.7 for {int((loo.pareto_k > 0.7).sum())} of {loo.n_data_points} patients")
print(az.compare({"Amortized SVGD": idata, "NUTS": nuts_idata})[["elpd_loo", "p_loo", "elpd_diff", "se", "dse"]].to_string())
print(f"KSD of the NUTS draws: {nuts_idata.sample_stats.attrs['ksd']:.3f}")

# %% [markdown]
# ## Figures
#
# Marginal posteriors of every parameter (NUTS in grey, Amortized SVGD in colour), and the
# joint posterior of the two most correlated coefficients:
#
# ![Posterior marginals against NUTS](figures/bayesian_regression.png)
#
# The posterior predictive check and the pointwise LOO diagnostics (Pareto k per patient):
#
# ![Posterior predictive check and Pareto k](figures/bayesian_regression_ppc.png)
#
# The check shows what no sampler can fix: the scores are skewed to the right and never
# below 25, while the linear Gaussian model predicts a symmetric spread with mass below
# zero. The sampler is faithful to this model (it agrees with NUTS above); the model is
# the thing to improve, for example by modelling the log of the score. Every Pareto k is
# below 0.7, so PSIS-LOO is reliable here.

# %%
fig, axes = plt.subplots(3, 5, figsize=(16, 9))
for j, ax in enumerate(axes.flat[: len(names)]):
    bins = np.linspace(*np.quantile(np.concatenate([ours[:, j], reference[:, j]]), [0.001, 0.999]), 40)
    ax.hist(reference[:, j], bins=bins, density=True, color="0.7", label="NUTS")
    ax.hist(ours[:, j], bins=bins, density=True, histtype="step", lw=2, color="C0", label="Amortized SVGD")
    ax.set_title(names[j], fontsize=10)
    ax.set_yticks([])
axes.flat[0].legend(fontsize=8)
i, j = max(strong, key=lambda p: abs(ref_corr[p]))
ax = axes.flat[len(names)]
ax.scatter(reference[:1000, j], reference[:1000, i], s=3, color="0.6", label="NUTS")
ax.scatter(ours[:1000, j], ours[:1000, i], s=3, color="C0", alpha=0.6, label="Amortized SVGD")
ax.set_xlabel(names[j])
ax.set_ylabel(names[i])
for ax in axes.flat[len(names) + 1:]:
    ax.axis("off")
fig.suptitle("Diabetes regression: Amortized SVGD (pyro_stein) vs NUTS")
fig.tight_layout()
FIGURE.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURE, dpi=90)

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
az.plot_ppc(idata, num_pp_samples=100, ax=axes[0], random_seed=0)
axes[0].set_title("posterior predictive check: disease progression")
az.plot_khat(loo, ax=axes[1])
axes[1].set_title("PSIS-LOO Pareto k per patient")
fig.tight_layout()
fig.savefig(PPC_FIGURE, dpi=90)
for path in (FIGURE, PPC_FIGURE):
    print(f"figure saved to {path}")
