"""Accuracy of ``pyro_stein.fit`` on targets with known posteriors.

For each target: the worst standardized mean error ``|mean - true mean| / true sd``, the
range of marginal sd ratios, the range of sd ratios along the target's principal axes
(``eig``, stricter than marginals), the worst correlation error, and the wall time, from
20000 draws of the trained sampler.  The settings that ``docs/defaults.md`` discusses are
options, so each of its measurements can be repeated::

    python benchmarks/accuracy.py                                   # defaults, Laplace start
    python benchmarks/accuracy.py --start isotropic                 # no Laplace start
    python benchmarks/accuracy.py --bandwidth-factor 1 --targets diabetes
    python benchmarks/accuracy.py --engine ctf                      # CTFDistillation's defaults

Targets: Gaussians (strong correlation; scales 1e-3..1e2 in float64; 50-D with condition
number 1e3), Gamma-Poisson and Beta-Binomial (skewed, exact), a 1-D two-component mixture
(reports the mass left of zero, 0.3 exactly), the diabetes regression of the tutorial
against its cached NUTS draws (``sigma_err``: the standardized error of sigma's mean), and
a linear regression on 1000 points fitted with minibatches of 100 against its exact
full-data posterior.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import pyro_stein
from pyro_stein import AmortizedSVGD, AutoNeuralSampler, CTFDistillation, RBFKernel
from pyro_stein.engines.asvgd import DEFAULT_BANDWIDTH_FACTOR

NUM_DRAWS = 20000
ROOT = Path(__file__).resolve().parents[1]


def _correlated(dim, rho, scales, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    corr = rho * torch.ones(dim, dim) + (1 - rho) * torch.eye(dim)
    cov = (scales[:, None] * corr * scales[None, :]).to(dtype)
    mean = (3 * torch.randn(dim, generator=gen) * scales).to(dtype)
    return mean, cov


def gaussian(dim, rho, scales, dtype=torch.float32):
    def make():
        mean, cov = _correlated(dim, rho, scales, dtype)

        def model():
            pyro.sample("x", dist.MultivariateNormal(mean, cov))

        return model, (), (lambda d: d["x"]), mean.double(), cov.double(), {}

    return make


def gamma_poisson():
    counts = torch.tensor([0.0, 1.0, 0.0, 2.0])

    def model():
        lam = pyro.sample("lam", dist.Gamma(2.0, 1.0))
        with pyro.plate("data", len(counts)):
            pyro.sample("counts", dist.Poisson(lam), obs=counts)

    post = dist.Gamma(2.0 + counts.sum(), 1.0 + len(counts))
    return model, (), (lambda d: d["lam"][:, None]), post.mean.double()[None], post.variance.double()[None, None], {}


def beta_binomial():
    def model():
        p = pyro.sample("p", dist.Beta(1.0, 1.0))
        pyro.sample("k", dist.Binomial(10.0, p), obs=torch.tensor(9.0))

    post = dist.Beta(10.0, 2.0)
    return model, (), (lambda d: d["p"][:, None]), post.mean.double()[None], post.variance.double()[None, None], {}


def bimodal():
    mixture = dist.MixtureSameFamily(
        dist.Categorical(torch.tensor([0.3, 0.7])), dist.Normal(torch.tensor([-3.0, 3.0]), torch.tensor([1.0, 0.7]))
    )

    def model():
        pyro.sample("x", mixture)

    exact = mixture.sample((400000,)).double()
    extras = {"left_mass": lambda x: float((x < 0).double().mean())}
    return model, (), (lambda d: d["x"][:, None]), exact.mean()[None], exact.var()[None, None], extras


def diabetes():
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor((data.data - data.data.mean(0)) / data.data.std(0), dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32)

    def model(x, y):
        alpha = pyro.sample("alpha", dist.Normal(150.0, 100.0))
        beta = pyro.sample("beta", dist.Normal(0.0, 100.0).expand([x.shape[1]]).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(100.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(alpha + x @ beta, sigma), obs=y)

    reference = torch.tensor(np.load(ROOT / "tutorials" / "data" / "diabetes_nuts.npz")["draws"])
    extract = lambda d: torch.cat([d["alpha"][:, None], d["beta"], d["sigma"][:, None]], -1)  # noqa: E731
    extras = {"sigma_err": None}  # filled in from the standardized errors
    return model, (x, y), extract, reference.mean(0), torch.cov(reference.T), extras


def subsampled_regression():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 3, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + torch.randn(1000, generator=gen)

    def model(x, y):
        beta = pyro.sample("beta", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        with pyro.plate("data", len(y), subsample_size=100) as idx:
            pyro.sample("y", dist.Normal(x[idx] @ beta, 1.0), obs=y[idx])

    precision = torch.eye(3) / 100.0 + x.T @ x
    cov = torch.linalg.inv(precision)
    return model, (x, y), (lambda d: d["beta"]), (cov @ (x.T @ y)).double(), cov.double(), {}


TARGETS = {
    "gauss_corr99_d5": gaussian(5, 0.99, torch.ones(5)),
    "gauss_scales_1e-3_1e2_f64": gaussian(5, 0.5, torch.logspace(-3, 2, 5), torch.float64),
    "gauss_cond1e3_d50": gaussian(50, 0.5, torch.logspace(0, 1.5, 50)),
    "gamma_poisson": gamma_poisson,
    "beta_binomial": beta_binomial,
    "bimodal_1d": bimodal,
    "diabetes": diabetes,
    "subsampled_regression": subsampled_regression,
}


def score(draws: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> dict[str, float]:
    draws = draws.double()
    sd = cov.diagonal().sqrt()
    errors = (draws.mean(0) - mean) / sd
    ratios = draws.std(0) / sd
    evals, evecs = torch.linalg.eigh(cov)
    whiten = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    axes = torch.linalg.eigvalsh(whiten @ torch.atleast_2d(torch.cov(draws.T)) @ whiten).sqrt()
    out = {
        "mean_err": errors.abs().max().item(),
        "sd_lo": ratios.min().item(),
        "sd_hi": ratios.max().item(),
        "eig_lo": axes.min().item(),
        "eig_hi": axes.max().item(),
        "last_err": errors[-1].item(),
    }
    if draws.shape[1] > 1:
        out["corr_err"] = (torch.corrcoef(draws.T) - cov / sd.outer(sd)).abs().max().item()
    return out


def run(name: str, opts: argparse.Namespace) -> dict[str, float]:
    model, args, extract, mean, cov, extras = TARGETS[name]()
    guide = AutoNeuralSampler(model, init_scale="laplace" if opts.start == "laplace" else 1.0)
    if opts.engine == "ctf":
        engine = CTFDistillation(num_particles=opts.particles, recenter_every=opts.recenter_every)
    else:
        engine = AmortizedSVGD(
            num_particles=opts.particles,
            kernel=RBFKernel(bandwidth_factor=opts.bandwidth_factor),
            leave_one_out=not opts.keep_self_interaction,
            recenter_every=opts.recenter_every,
        )
    optim = None
    if opts.beta2 is not None:
        decay = 0.1 ** (1 / opts.steps)
        optim = pyro.optim.ExponentialLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": 1e-2, "betas": (0.9, opts.beta2)}, "gamma": decay}
        )
    start = time.perf_counter()
    result = pyro_stein.fit(
        model, *args, guide=guide, engine=engine, optim=optim, num_steps=opts.steps,
        seed=opts.seed, progress=False, average_last=opts.average_last, stop_when_converged=not opts.fixed_budget,
    )
    seconds = time.perf_counter() - start
    draws = extract(result.sample(NUM_DRAWS))
    out = score(draws, mean, cov)
    if "left_mass" in extras:
        out["left_mass"] = extras["left_mass"](draws)
    if "sigma_err" in extras:
        out["sigma_err"] = out["last_err"]
    out.pop("last_err")
    out["seconds"] = seconds
    out["steps"] = result.num_steps
    if result.convergence is not None:
        out["stopped"] = result.convergence.stopped
        out["change"] = result.convergence.change
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--engine", choices=["asvgd", "ctf"], default="asvgd",
                        help="asvgd (the options below apply) or ctf (CTFDistillation with its defaults)")
    parser.add_argument("--start", choices=["laplace", "isotropic"], default="laplace")
    parser.add_argument("--particles", type=int, default=512)
    parser.add_argument("--bandwidth-factor", type=float, default=DEFAULT_BANDWIDTH_FACTOR)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--average-last", type=float, default=0.5)
    parser.add_argument("--beta2", type=float, default=None, help="Adam's beta2 (default: fit's)")
    parser.add_argument("--keep-self-interaction", action="store_true", help="V-statistic Stein direction")
    parser.add_argument("--recenter-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed-budget", action="store_true",
                        help="fit(..., stop_when_converged=False): all --steps, the learning rate decayed over them")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    print(f"engine={opts.engine} start={opts.start} particles={opts.particles} bandwidth_factor={opts.bandwidth_factor} "
          f"steps={opts.steps} average_last={opts.average_last} beta2={opts.beta2 or 'default'} "
          f"leave_one_out={not opts.keep_self_interaction} recenter_every={opts.recenter_every} seed={opts.seed} "
          f"fixed_budget={opts.fixed_budget}\n")
    columns = ["mean_err", "sd_lo", "sd_hi", "eig_lo", "eig_hi", "corr_err", "left_mass", "sigma_err", "seconds", "steps",
               "stopped", "change"]
    print("| target | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name in opts.targets.split(","):
        row = run(name, opts)
        cells = [(f"{row[c]}" if c in ("steps", "stopped") else f"{row[c]:.3f}") if c in row else "" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
