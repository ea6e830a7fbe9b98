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
# # Eight schools: a hierarchical model, its funnel, and two parametrizations
#
# The eight-schools data (Rubin, 1981) are the estimated effects `y` of a coaching programme
# on test scores in eight schools, with their standard errors `sigma`. The hierarchical model
# lets each school have its own effect `theta_j ~ Normal(mu, tau)`; the population spread `tau`
# is barely identified by eight noisy numbers, and that makes the posterior a funnel: when
# `tau` is small, every `theta_j` is squeezed against `mu`.
#
# We fit the model written two ways (centered and non-centered), with both engines of
# pyro_stein, and compare them with NUTS on the non-centered model (the gold standard, cached
# in `tutorials/data/eight_schools_nuts.npz`).
#
# Run it as a script: `python tutorials/eight_schools.py`; `PYRO_STEIN_FAST=1` makes a quick
# smoke run (the test suite does this).

# %%
import os
import time
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files
import matplotlib.pyplot as plt
import numpy as np
import pyro
import pyro.distributions as dist
import torch

import pyro_stein

FAST = os.environ.get("PYRO_STEIN_FAST", "") not in ("", "0")
HERE = Path(__file__).resolve().parent
# Where figures go: beside the tutorial, unless PYRO_STEIN_FIGURES names another folder (the tests do).
FIGURES = Path(os.environ.get("PYRO_STEIN_FIGURES", HERE / "figures"))
REFERENCE = HERE / "data" / "eight_schools_nuts.npz"
FIGURE = FIGURES / "eight_schools.png"

# %% [markdown]
# ## Data and the two models
#
# The centered model samples `theta` directly. The non-centered one samples standardized
# effects `theta_tilde ~ Normal(0, 1)` and computes `theta = mu + tau * theta_tilde` as a
# deterministic site: the same posterior, but the funnel is gone from the coordinates the
# sampler works in.

# %%
schools = ["Choate", "Deerfield", "Phillips Andover", "Phillips Exeter", "Hotchkiss", "Lawrenceville",
           "St. Paul's", "Mt. Hermon"]
y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def centered(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(sigma)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def noncentered(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(sigma)):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_tilde)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


# %% [markdown]
# ## Reference: NUTS
#
# NUTS on the non-centered model (4 chains of 2000 draws after 1000 warm-up steps) is the
# reference. NUTS on the centered model is run too, for its divergences: the funnel's neck
# is where Hamiltonian Monte Carlo fails, and it tells you so. Both are cached; delete the
# file to recompute (15 minutes here: 272 s non-centered, 653 s centered, in its funnel's neck).

# %%
def run_nuts() -> None:
    from pyro.infer import MCMC, NUTS

    cache = {}
    for name, model in (("noncentered", noncentered), ("centered", centered)):
        pyro.set_rng_seed(1)
        kernel = NUTS(model, target_accept_prob=0.95, jit_compile=True, ignore_jit_warnings=True)
        mcmc = MCMC(kernel, num_samples=2000, warmup_steps=1000, num_chains=4, mp_context="spawn")
        start = time.perf_counter()
        mcmc.run(sigma, y)
        cache[f"{name}_seconds"] = time.perf_counter() - start
        cache[f"{name}_divergences"] = sum(len(d) for d in mcmc.diagnostics()["divergences"].values())
        for site, value in mcmc.get_samples(group_by_chain=True).items():
            cache[f"{name}_{site}"] = value.numpy()
    np.savez_compressed(REFERENCE, **cache)


if not REFERENCE.exists():
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    print("no cached NUTS reference; running NUTS once (about 15 minutes) ...")
    run_nuts()
cached = np.load(REFERENCE)
print(f"NUTS, non-centered: {cached['noncentered_mu'].size} draws in {float(cached['noncentered_seconds']):.0f} s, "
      f"{int(cached['noncentered_divergences'])} divergent transitions")
print(f"NUTS, centered:     {cached['centered_mu'].size} draws in {float(cached['centered_seconds']):.0f} s, "
      f"{int(cached['centered_divergences'])} divergent transitions")
# The reference in the same ArviZ layout, chains kept: the draws per site, by chain.
reference = pyro_stein.to_inference_data(
    {site: cached[f"noncentered_{site}"] for site in ("mu", "tau", "theta_tilde")}, noncentered, sigma, y,
    coords={"school": schools},
)
print(az.summary(reference, var_names=["mu", "tau", "theta"], kind="diagnostics").to_string())

# %% [markdown]
# Centered NUTS reports divergences: its trajectories cannot follow the funnel's neck, so its
# draws under-represent small `tau` and it says so. pyro_stein's engines have no such alarm;
# what they have is `ksd`, the kernelized Stein discrepancy of their draws against the
# model, and here a reference to compare with.
#
# ## Four fits
#
# Both engines on both parametrizations, with `fit`'s defaults (each picks its own number
# of steps, at most 2000; at most 150 in fast mode). `to_inference_data` names `theta`'s dimension after the `school` plate, and
# labels it with the schools' names.

# %%
NUM_STEPS = 150 if FAST else None
fits = {}
for engine in ("asvgd", "ctf"):
    for name, model in (("centered", centered), ("non-centered", noncentered)):
        result = pyro_stein.fit(model, sigma, y, engine=engine, seed=0, num_steps=NUM_STEPS, progress=not FAST)
        label = f"{'Amortized SVGD' if engine == 'asvgd' else 'CTF'}, {name}"
        fits[label] = (result, pyro_stein.to_inference_data(result, coords={"school": schools}))
        print(f"{label}: {result.num_steps} steps in {result.seconds:.1f} s")

# %% [markdown]
# ## Against NUTS
#
# Per fit: the worst standardized mean error and the range of sd ratios over `mu`, `tau`
# and the eight `theta`, the sd ratio of `tau` alone, the posterior probability of the neck
# (`tau < 1`, where NUTS puts a fifth of its draws), and `ksd`.

# %%
def stacked(idata) -> np.ndarray:
    post = idata.posterior
    columns = [post["mu"].values.reshape(-1, 1), post["tau"].values.reshape(-1, 1),
               post["theta"].values.reshape(-1, len(schools))]
    return np.concatenate(columns, axis=1).astype(np.float64)


names = ["mu", "tau"] + [f"theta[{school}]" for school in schools]
ref = stacked(reference)
ref_neck = float((ref[:, 1] < 1).mean())
print(f"{'fit':<30}{'mean err':>9}{'sd ratios':>16}{'tau sd':>8}{'P(tau<1)':>10}{'ksd':>7}")
print(f"{'NUTS, non-centered':<30}{'':>9}{'':>16}{'':>8}{ref_neck:10.3f}{reference.sample_stats.attrs['ksd']:7.3f}")
rows = {}
for label, (_, idata) in fits.items():
    ours = stacked(idata)
    comparison = pyro_stein.compare_draws(ours, ref, names=names)
    low, high = comparison.sd_ratio_range
    rows[label] = ours
    print(f"{label:<30}{comparison.worst_mean_error:9.3f}{f'[{low:.2f}, {high:.2f}]':>16}"
          f"{comparison.sd_ratio[1]:8.2f}{float((ours[:, 1] < 1).mean()):10.3f}{idata.sample_stats.attrs['ksd']:7.3f}")

# %% [markdown]
# ## What the funnel does to each engine
#
# In the centered model the samplers work on `(mu, log tau, theta)`, where the posterior is
# a funnel: the spread of `theta` shrinks with `tau`, and the density grows without bound
# down the neck (which is also why `fit` warns that it found no mode to start from). In the
# full run whose output ends this page (seed 0, `fit`'s own budget):
#
# * **Centered, both engines: the checks catch the funnel and `fit` refits.** The centred
#   fits fail the stationarity check (they miss the neck), so `fit` fits again with `theta`
#   non-centred (the lines above say so) and returns that fit, whose guide still emits
#   `theta`: worst standardized mean errors 0.021 (Amortized SVGD) and 0.060 (CTF),
#   `P(tau < 1)` 0.210 and 0.216 against NUTS's 0.199. `noncentre=False` returns the
#   centred fit itself, flagged (docs/reliability.md).
# * **Non-centered, both engines agree with NUTS**: worst standardized mean errors 0.048
#   (Amortized SVGD) and 0.038 (CTF), sd ratios within [0.91, 1.01] and [0.93, 1.05],
#   `P(tau < 1)` 0.205 and 0.204. CTF's two fits (non-centered, and its centred refit) ran
#   `fit`'s fixed schedule to 2000 steps (the sampler was still changing at step 540);
#   Amortized SVGD's converged after 890 steps (non-centered) and 770 (its centred refit).
#
# `ksd` is not a pass/fail test on its own: the centred fits (their non-centred refits)
# score 1.07 (Amortized SVGD) and 1.00 (CTF), on the centred model's funnel coordinates, and
# CTF's non-centered fit 0.056, although all agree with NUTS about as closely as Amortized
# SVGD's non-centered fit (0.022). Treat values well above 0.05 as "look closer", and compare
# parametrizations and engines on it. The remedy is the one HMC users know: write the
# model non-centered. The first figure plots `theta` of Choate against `log tau` for each
# fit over the NUTS draws, the second compares the marginals as a forest plot:
#
# ![Funnels](figures/eight_schools.png)
#
# ![Forest plot](figures/eight_schools_forest.png)

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharex=True, sharey=True)
for ax, (label, ours) in zip(axes, rows.items()):
    ax.scatter(ref[:3000, 2], np.log(ref[:3000, 1]), s=2, color="0.7", label="NUTS")
    ax.scatter(ours[:3000, 2], np.log(ours[:3000, 1]), s=2, color="C0", alpha=0.5, label="pyro_stein")
    ax.set_title(label)
    ax.set_xlabel(f"theta[{schools[0]}]")
axes[0].set_ylabel("log tau")
axes[0].legend(loc="lower left", markerscale=4)
axes[0].set_xlim(-25, 45)
axes[0].set_ylim(-5, 4)
fig.tight_layout()
FIGURE.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURE, dpi=90)
print(f"figure saved to {FIGURE}")

forest = az.plot_forest(
    [reference] + [idata for _, idata in fits.values()],
    model_names=["NUTS"] + list(fits),
    var_names=["mu", "tau", "theta"],
    combined=True,
    hdi_prob=0.9,
    figsize=(9, 10),
)
forest_figure = FIGURE.with_name("eight_schools_forest.png")
forest[0].figure.savefig(forest_figure, dpi=90, bbox_inches="tight")
print(f"figure saved to {forest_figure}")
