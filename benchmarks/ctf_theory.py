"""Theory check: the discretized flow's error against K and h, beside Theorem 2's rate.

Chen et al. (2018), Theorem 2: for the K-step Euler discretization of the Langevin flow
``dz = 1/2 grad log p(z) dt + dW`` with step h, the sample-path average
``rho_bar_T = 1/K sum_k delta_{z_k}`` estimates the flow's time-``T = hK`` marginal
``rho_T`` with mean squared error, for a 1-Lipschitz test function ``psi``,

    MSE(rho_bar_T, rho_T; psi) = E( 1/K sum_k psi(z_k) - E_{rho_T} psi )^2
                               = O( 1/(hK) + h^2 + exp(-2ChK) ).

Here the target is ``p = N(0, sigma^2)``, the flow is an Ornstein-Uhlenbeck process with
closed-form marginal ``rho_T = N(m0 e^{-T/(2 sigma^2)}, sigma^2 + (s0^2 - sigma^2) e^{-T/sigma^2})``
from ``rho_0 = N(m0, s0^2)``, and the discretized chain is Gaussian (an AR(1) process).
The test function is ``psi(z) = cos(z)``: 1-Lipschitz, and unlike ``psi(z) = z`` it sees
the discretization's O(h) error in the variance (the chain's mean has none here).  Its
MSE is exact (pairwise Gaussian moments, for every (h, K) of a grid, K up to 3000) and is
checked by Monte Carlo with :func:`pyro_stein.ops.langevin.langevin_flow` itself
(unadjusted, 20000 chains).  The rate's three constants are fitted by non-negative least
squares on the relative error over the grid; ``C = 1/(2 sigma^2)`` is the flow's
contraction rate.  Remark 3's consequence, the MSE at the best h falling as ``K^(-2/3)``,
is measured as a log-log slope.

Usage::

    python benchmarks/ctf_theory.py --out benchmarks/results/ctf_theory
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from pyro_stein.ops.langevin import langevin_flow

SIGMA, M0, S0 = 1.0, 3.0, 0.5
FIT_FROM_TIME = 10.0
STEP_SIZES = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
MAX_STEPS = 3000
MONTE_CARLO = ((0.05, 100), (0.1, 400), (0.4, 100), (0.8, 1000))


def _chain_moments(h: float, max_steps: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Means and variances of ``z_1..z_K`` for the AR(1) chain
    ``z_k = a z_{k-1} + sqrt(h) xi_k``, ``a = 1 - h / (2 sigma^2)``, and ``a``."""
    a = 1.0 - h / (2 * SIGMA**2)
    k = np.arange(1, max_steps + 1)
    means = M0 * a**k
    if abs(1 - a * a) > 1e-15:
        variances = a ** (2 * k) * S0**2 + h * (1 - a ** (2 * k)) / (1 - a * a)
    else:
        variances = S0**2 + h * k
    return means, variances, a


def _expected_cos(mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    return np.exp(-variance / 2) * np.cos(mean)


def flow_marginal(time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the continuous flow's marginal rho_T."""
    mean = M0 * np.exp(-time / (2 * SIGMA**2))
    variance = SIGMA**2 + (S0**2 - SIGMA**2) * np.exp(-time / SIGMA**2)
    return mean, variance


def exact_mse(h: float, max_steps: int = MAX_STEPS) -> np.ndarray:
    """``MSE(K)`` for ``K = 1..max_steps`` at step ``h``, for ``psi = cos``.

    The chain is Gaussian with ``Cov(z_j, z_k) = a^{k-j} Var z_j`` (``j <= k``), and for
    jointly Gaussian ``x, y``: ``E cos x cos y = (E cos(x - y) + E cos(x + y)) / 2`` with
    ``E cos u = exp(-Var u / 2) cos(E u)``; so ``E (1/K sum cos z_k)^2`` is a sum over pairs,
    accumulated for every prefix K by 2-D cumulative sums.
    """
    means, variances, a = _chain_moments(h, max_steps)
    j, k = np.meshgrid(np.arange(max_steps), np.arange(max_steps), indexing="ij")
    lag = np.abs(k - j)
    earlier = np.minimum(j, k)
    cov = a**lag * variances[earlier]
    var_i, var_j = variances[:, None], variances[None, :]
    mean_i, mean_j = means[:, None], means[None, :]
    pair = 0.5 * (
        np.exp(-(var_i + var_j - 2 * cov) / 2) * np.cos(mean_i - mean_j)
        + np.exp(-(var_i + var_j + 2 * cov) / 2) * np.cos(mean_i + mean_j)
    )
    del cov, lag, earlier, j, k
    second_moment = pair.cumsum(0).cumsum(1).diagonal().copy()
    first_moment = _expected_cos(means, variances).cumsum()
    steps = np.arange(1, max_steps + 1)
    target = _expected_cos(*flow_marginal(h * steps))
    return second_moment / steps**2 - 2 * target * first_moment / steps + target**2


def monte_carlo_mse(h: float, k: int, chains: int = 20000, seed: int = 0) -> float:
    generator = torch.Generator().manual_seed(seed)
    start = M0 + S0 * torch.randn(chains, 1, generator=generator, dtype=torch.float64)

    def log_prob_and_score(z):
        return -z.pow(2).sum(-1) / (2 * SIGMA**2), -z / SIGMA**2, torch.ones(len(z), dtype=torch.bool)

    run = langevin_flow(log_prob_and_score, start, k, h, metropolis=False, generator=generator, keep_path=True)
    path_average = run.path.cos().mean(0).squeeze(-1)
    target = float(_expected_cos(*flow_marginal(np.array(h * k))))
    return float((path_average - target).pow(2).mean())


def rate_terms(h: np.ndarray, k: np.ndarray) -> np.ndarray:
    contraction = 1 / (2 * SIGMA**2)
    return np.stack([1 / (h * k), h**2, np.exp(-2 * contraction * h * k)], axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/ctf_theory")
    parser.add_argument("--figure", default="docs/figures/ctf_theory.png")
    opts = parser.parse_args()

    ks = np.unique(np.round(np.logspace(0, math.log10(MAX_STEPS), 60)).astype(int))
    curves = {h: exact_mse(h)[ks - 1] for h in STEP_SIZES}

    # Fit the rate's constants on relative error over the whole grid.
    hh = np.concatenate([np.full(len(ks), h) for h in STEP_SIZES])
    kk = np.concatenate([ks for _ in STEP_SIZES]).astype(float)
    mse = np.concatenate([curves[h] for h in STEP_SIZES])
    terms = rate_terms(hh, kk)
    # The bound is about the regime past the start-up transient (T = hK of a few
    # relaxation times); there the three terms are fitted on relative error.
    past_transient = hh * kk >= FIT_FROM_TIME
    constants, _ = nnls(terms[past_transient] / mse[past_transient, None], np.ones(past_transient.sum()))
    bound = terms @ constants
    ratio = mse[past_transient] / bound[past_transient]

    checks = []
    for h, k in MONTE_CARLO:
        exact = float(exact_mse(h, k)[-1])
        estimate = monte_carlo_mse(h, k)
        checks.append({"h": h, "K": k, "exact": exact, "monte_carlo": estimate, "relative_difference": estimate / exact - 1})

    # Remark 3: the best h for each K, and the slope of that envelope.
    fine_h = np.logspace(-3, 0, 31)
    k_grid = np.array([30, 100, 300, 1000, 3000])
    fine = np.stack([exact_mse(h)[k_grid - 1] for h in fine_h])
    best = fine.min(0)
    late = k_grid >= 100
    slope = float(np.polyfit(np.log(k_grid[late]), np.log(best[late]), 1)[0])

    summary = {
        "target": f"N(0, {SIGMA}^2), start N({M0}, {S0}^2), psi(z) = cos(z)",
        "rate_constants": dict(zip(("c_1/(hK)", "c_h^2", "c_exp"), constants.tolist())),
        "fit_from_time_hK": FIT_FROM_TIME,
        "mse_over_fitted_rate_hK>=10": {"min": float(ratio.min()), "max": float(ratio.max()), "median": float(np.median(ratio))},
        "monte_carlo_checks": checks,
        "best_h_mse": dict(zip(k_grid.tolist(), best.tolist())),
        "best_h": dict(zip(k_grid.tolist(), fine_h[fine.argmin(0)].tolist())),
        "best_h_slope_K>=100": slope,
        "theorem_slope": -2 / 3,
    }
    print(json.dumps(summary, indent=1))
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(STEP_SIZES)))
    for color, h in zip(colors, STEP_SIZES):
        left.loglog(ks, curves[h], color=color, label=f"h = {h}")
        shown = h * ks >= FIT_FROM_TIME
        fitted = rate_terms(np.full(shown.sum(), h), ks[shown].astype(float)) @ constants
        left.loglog(ks[shown], fitted, color=color, ls=":", lw=1.5)
    for check in checks:
        left.plot(check["K"], check["monte_carlo"], "kx", ms=7)
    left.set_xlabel("K (flow steps)")
    left.set_ylabel("MSE of the path average vs rho_T")
    left.set_title("psi = cos: exact MSE (solid); c1/(hK) + c2 h^2 + c3 e^{-2ChK} fitted for hK >= 10 (dotted);\nMonte Carlo with langevin_flow (x)", fontsize=8)
    left.legend(fontsize=8)
    right.loglog(k_grid, best, "o-", label="MSE at the best h (exact)")
    anchor = best[late][0] * (k_grid[late][0] ** (2 / 3))
    right.loglog(k_grid, anchor * k_grid ** (-2 / 3), "k--", label="K^(-2/3) (Remark 3)")
    right.set_xlabel("K")
    right.set_title(f"best-h envelope: slope {slope:.3f} for K >= 100", fontsize=9)
    right.legend(fontsize=8)
    fig.tight_layout()
    figure = Path(opts.figure)
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {figure} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
