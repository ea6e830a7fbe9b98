"""Checks the tutorial's NUTS reference for ``sigma`` against its exact marginal posterior.

The diabetes regression of ``tutorials/bayesian_regression.py`` is conjugate given ``sigma``:
with ``theta = (alpha, beta)`` a priori ``N(mu0, 100^2 I)``, the data are marginally
``y ~ N(X mu0, sigma^2 I + 100^2 X X')``, so ``p(sigma | y)`` is known up to a constant on a
grid.  Prints its mean and sd, the NUTS draws' (cached in ``tutorials/data``), and the
posterior coupling between ``log sigma`` and the coefficients' Mahalanobis distance that
``docs/defaults.md`` discusses::

    python benchmarks/diabetes_exact_sigma.py
"""

from pathlib import Path

import numpy as np
from scipy.stats import halfnorm
from sklearn.datasets import load_diabetes

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    data = load_diabetes()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    y = data.target.astype(np.float64)
    design = np.hstack([np.ones((len(y), 1)), x])
    prior_mean = np.r_[150.0, np.zeros(x.shape[1])]
    prior_sd = 100.0
    # y - X mu0 ~ N(0, sigma^2 I + s0^2 X X'): diagonalise X X' once.
    eigvals, eigvecs = np.linalg.eigh(design @ design.T)
    projected = eigvecs.T @ (y - design @ prior_mean)
    grid = np.linspace(40.0, 70.0, 30001)
    variances = grid[:, None] ** 2 + prior_sd**2 * np.clip(eigvals, 0.0, None)[None, :]
    log_post = -0.5 * (np.log(variances) + projected**2 / variances).sum(1) + halfnorm(scale=100.0).logpdf(grid)
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum()
    mean = (weights * grid).sum()
    sd = np.sqrt((weights * (grid - mean) ** 2).sum())

    draws = np.load(ROOT / "tutorials" / "data" / "diabetes_nuts.npz")["draws"]
    sigma, theta = draws[:, -1], draws[:, :-1]
    print(f"exact:  sigma mean {mean:.3f}, sd {sd:.3f}")
    print(f"NUTS:   sigma mean {sigma.mean():.3f}, sd {sigma.std():.3f}  "
          f"(mean error {(sigma.mean() - mean) / sd:+.3f} sd, sd ratio {sigma.std() / sd:.3f}, "
          f"{len(sigma)} draws)")
    centred = theta - theta.mean(0)
    distance = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(np.cov(theta.T)), centred)
    print(f"NUTS:   corr(log sigma, Mahalanobis distance of (alpha, beta)) = "
          f"{np.corrcoef(np.log(sigma), distance)[0, 1]:.3f}")


if __name__ == "__main__":
    main()
