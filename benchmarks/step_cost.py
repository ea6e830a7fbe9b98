"""Cost per step of pyro_stein's Amortized SVGD and Pyro's SVGD against hand-written floors.

For each model, in one process and with the same number of particles:

* ``asvgd``      pyro_stein: ``SVI(model, AutoNeuralSampler(model), Adam, AmortizedSVGD(N))``.
* ``asvgd floor`` the same algorithm written by hand in plain PyTorch: the same sampler
  architecture, a hand-written batched log density (with its log-Jacobian), the same
  kernel and Stein direction, one fused ``torch.optim.Adam``.  No engine can do less work.
* ``svgd``        Pyro's ``pyro.infer.SVGD`` with its ``RBFSteinKernel``.
* ``svgd floor``  plain SVGD written by hand: particles as one tensor, hand-written log
  density, an O(N^2) RBF Stein direction, ``torch.optim.Adam``.
* ``log p + grad`` just the hand-written log density and its gradient at N particles.
* ``the model's log p + grad`` the model's own batched log density and score as the engine
  evaluates them (Pyro's tracing, the model's code as written); its ratio is against the
  hand-written one, so what separates the engine from its floor splits into the model's
  share and the engine's.

Ratios are engine / floor.  ``--compile-density on|off`` overrides the engine's automatic
choice of compiling the model's density (``AmortizedSVGD(compile_density=...)``).
``--whole-fit`` instead times default ``pyro_stein.fit(model, *args)`` calls on each model,
with the density's compile decision left automatic and with it off, in the same process
(the compile's seconds included).  Run::

    python benchmarks/step_cost.py --particles 512 --steps 40
    python benchmarks/step_cost.py --whole-fit --models diabetes,breast_cancer
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVGD, SVI, RBFSteinKernel
from sklearn.datasets import load_breast_cancer, load_diabetes
from torch import nn

import pyro_stein
from pyro_stein import AmortizedSVGD, AutoNeuralSampler
from pyro_stein.ops.kernels import RBFKernel
from pyro_stein.ops.stein import kernel_gram, stein_direction


# ----------------------------------------------------------------------------- models
def diabetes():
    x, y = load_diabetes(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)

    def model(x, y):
        alpha = pyro.sample("alpha", dist.Normal(150.0, 100.0))
        beta = pyro.sample("beta", dist.Normal(0.0, 1000.0).expand([x.shape[1]]).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(100.0))
        mu = alpha + (x * beta).sum(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    def log_density(z: torch.Tensor) -> torch.Tensor:
        # z = [alpha, beta (10), log sigma]; the layout of the guide's latent vector.
        alpha, beta, log_sigma = z[:, 0], z[:, 1:-1], z[:, -1]
        sigma = log_sigma.exp()
        lp = dist.Normal(150.0, 100.0).log_prob(alpha)
        lp = lp + dist.Normal(0.0, 1000.0).log_prob(beta).sum(-1)
        lp = lp + dist.HalfNormal(100.0).log_prob(sigma) + log_sigma
        mu = alpha.unsqueeze(-1) + beta @ x.T
        return lp + dist.Normal(mu, sigma.unsqueeze(-1)).log_prob(y).sum(-1)

    return "diabetes linear regression (D=12, n=442)", model, (x, y), log_density, 12


def breast_cancer():
    x, y = load_breast_cancer(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)

    def model(x, y):
        alpha = pyro.sample("alpha", dist.Normal(0.0, 5.0))
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        logits = alpha + (x * beta).sum(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)

    def log_density(z: torch.Tensor) -> torch.Tensor:
        alpha, beta = z[:, 0], z[:, 1:]
        lp = dist.Normal(0.0, 5.0).log_prob(alpha) + dist.Normal(0.0, 1.0).log_prob(beta).sum(-1)
        logits = alpha.unsqueeze(-1) + beta @ x.T
        return lp + dist.Bernoulli(logits=logits).log_prob(y).sum(-1)

    return "breast-cancer logistic regression (D=31, n=569)", model, (x, y), log_density, 31


def _synthetic_large(one_draw: bool):
    gen = torch.Generator().manual_seed(0)
    n, d = 20000, 20
    x = torch.randn(n, d, generator=gen)
    y = x @ torch.randn(d, generator=gen) + 0.5 * torch.randn(n, generator=gen)

    def model(x, y):
        beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        # `x @ beta` is written for one draw (batched by vmap); the broadcasting form runs
        # under the particle plate but materialises an (N, n, d) product.
        mean = x @ beta if one_draw else (x * beta).sum(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(mean, sigma), obs=y)

    def log_density(z: torch.Tensor) -> torch.Tensor:
        beta, log_sigma = z[:, :-1], z[:, -1]
        sigma = log_sigma.exp()
        lp = dist.Normal(0.0, 1.0).log_prob(beta).sum(-1)
        lp = lp + dist.LogNormal(0.0, 1.0).log_prob(sigma) + log_sigma
        return lp + dist.Normal(beta @ x.T, sigma.unsqueeze(-1)).log_prob(y).sum(-1)

    idiom = "x @ beta" if one_draw else "(x * beta).sum(-1)"
    return f"synthetic regression (D=21, n=20000), {idiom}", model, (x, y), log_density, 21


def synthetic_large():
    return _synthetic_large(one_draw=True)


def synthetic_large_broadcast():
    return _synthetic_large(one_draw=False)


# ----------------------------------------------------------------------------- floors
class HandSampler(nn.Module):
    """AutoNeuralSampler's architecture in plain PyTorch."""

    def __init__(self, dim: int, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        super().__init__()
        width = min(256, max(32, 2 * dim))
        self.net = nn.Sequential(nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.offdiag = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.register_buffer("m", loc.clone())
        self.register_buffer("L", scale_tril.clone())

    def forward(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xi = torch.randn(n, self.loc.shape[0])
        tril = self.offdiag.tril(-1) + torch.diag_embed(self.log_diag.exp())
        w = self.loc + (xi + self.net(xi)) @ tril.T
        return w, self.m + w @ self.L.T


def asvgd_floor_step(sampler, optimizer, log_density, num_particles, kernel):
    w, z = sampler(num_particles)
    zd = z.detach().requires_grad_(True)
    (score,) = torch.autograd.grad(log_density(zd).sum(), zd)
    gram = kernel_gram(w.detach(), kernel)
    phi = stein_direction(score @ sampler.L, gram)
    optimizer.zero_grad()
    (-(w * phi).sum() / num_particles).backward()
    optimizer.step()


def svgd_floor_step(particles, optimizer, log_density, kernel):
    z = particles.detach().requires_grad_(True)
    (score,) = torch.autograd.grad(log_density(z).sum(), z)
    phi = stein_direction(score, kernel_gram(z.detach(), kernel), leave_one_out=False)
    optimizer.zero_grad()
    particles.grad = -phi
    optimizer.step()


def time_per_step(step: Callable[[], None], steps: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(max(1, steps // 5)):
            step()
        samples.append((time.perf_counter() - start) / max(1, steps // 5))
    return 1e3 * statistics.median(samples)


def runs_compiled(density) -> bool:
    """Whether the engine's density evaluates some batch size through its compiled graph."""
    return density.compiled is not None and any(f is not None for f in density.compiled.compiled.values())


def bench(spec, num_particles: int, steps: int, compile_density: bool | None = None) -> list[tuple[str, float, float | None]]:
    name, model, args, log_density, dim = spec
    rows: list[tuple[str, float, float | None]] = []

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNeuralSampler(model)
    engine = AmortizedSVGD(num_particles=num_particles, compile_density=compile_density)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=engine)
    svi.step(*args)
    assert guide.latent_dim == dim
    ours = time_per_step(lambda: svi.step(*args), steps)
    density = svi.loss_and_grads.__self__.run_of(guide).density
    batching = density.batching

    def model_density():
        # The model's own batched log density and score, as the engine evaluates them: what
        # is left of a step beyond this is the engine's and the sampler's cost.
        density.log_prob_and_score(guide.sample_latent_batch(num_particles).detach(), args)

    model_ms = time_per_step(model_density, steps)

    torch.manual_seed(0)
    sampler = HandSampler(dim, *guide.preconditioner)
    adam = torch.optim.Adam(sampler.parameters(), lr=1e-3, foreach=True)
    kernel = RBFKernel()
    floor = time_per_step(lambda: asvgd_floor_step(sampler, adam, log_density, num_particles, kernel), steps)

    def bare():
        z = guide.sample_latent_batch(num_particles).requires_grad_(True)
        torch.autograd.grad(log_density(z).sum(), z)

    bare_ms = time_per_step(bare, steps)

    pyro.clear_param_store()
    svgd = SVGD(model, RBFSteinKernel(), pyro.optim.Adam({"lr": 1e-3}), num_particles, max_plate_nesting=1)
    try:
        svgd.step(*args)
    except Exception as error:  # Pyro's SVGD needs models vectorized by hand
        theirs = None
        svgd_error = type(error).__name__
    else:
        theirs = time_per_step(lambda: svgd.step(*args), steps)

    particles = nn.Parameter(guide.sample_latent_batch(num_particles))
    adam2 = torch.optim.Adam([particles], lr=1e-3)
    svgd_floor = time_per_step(lambda: svgd_floor_step(particles, adam2, log_density, kernel), steps)

    how = f"batching={batching}{', compiled' if runs_compiled(density) else ''}"
    rows.append((f"pyro_stein AmortizedSVGD ({how})", ours, ours / floor))
    rows.append(("  hand-written ASVGD step (floor)", floor, None))
    if theirs is None:
        rows.append((f"pyro.infer.SVGD (fails: {svgd_error})", math.nan, None))
    else:
        rows.append(("pyro.infer.SVGD", theirs, theirs / svgd_floor))
    rows.append(("  hand-written SVGD step (floor)", svgd_floor, None))
    rows.append(("log p + grad at N particles", bare_ms, None))
    rows.append((f"the model's log p + grad at N particles ({how})", model_ms, model_ms / bare_ms))
    return [(name, *row) for row in rows]


def whole_fits(spec) -> list[tuple[str, str, float, int, bool]]:
    """Default fits of the model with the density's compile decision automatic, then off."""
    name, model, args, _, _ = spec
    rows = []
    # Untimed, eager: the process's one-off costs (the first optimizer's torch._dynamo
    # import, the allocator's first pages) would otherwise fall on the first timed fit.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 20 steps are not meant to be reliable
        pyro_stein.fit(model, *args, engine=AmortizedSVGD(compile_density=False), num_steps=20, seed=0, progress=False)
    for label, policy in (("automatic", None), ("off", False)):
        started = time.perf_counter()
        result = pyro_stein.fit(model, *args, engine=AmortizedSVGD(compile_density=policy), seed=0, progress=False)
        seconds = time.perf_counter() - started
        density = result.engine.run_of(result.guide).density
        rows.append((name, f"{label} ({'compiled' if runs_compiled(density) else 'eager'})", seconds, result.num_steps, result.reliable))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--particles", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--models", default="diabetes,breast_cancer,synthetic_large,synthetic_large_broadcast")
    parser.add_argument("--compile-density", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--whole-fit", action="store_true", help="time default fit() calls instead")
    opts = parser.parse_args()
    specs = {
        "diabetes": diabetes,
        "breast_cancer": breast_cancer,
        "synthetic_large": synthetic_large,
        "synthetic_large_broadcast": synthetic_large_broadcast,
    }
    if opts.whole_fit:
        print(f"torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} threads\n")
        print("| model | compile_density | fit s | steps | reliable |\n|---|---|---:|---:|---|")
        for key in opts.models.split(","):
            for model_name, label, seconds, steps, reliable in whole_fits(specs[key]()):
                print(f"| {model_name} | {label} | {seconds:.1f} | {steps} | {reliable} |", flush=True)
        return
    compile_density = {"auto": None, "on": True, "off": False}[opts.compile_density]
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} threads, "
          f"N={opts.particles} particles, {opts.steps} timed steps, compile_density={opts.compile_density}\n")
    print("| model | method | ms/step | ratio to its floor |\n|---|---|---:|---:|")
    for key in opts.models.split(","):
        for model_name, method, ms, ratio in bench(specs[key](), opts.particles, opts.steps, compile_density):
            ratio_s = "" if ratio is None else f"{ratio:.2f}x"
            print(f"| {model_name} | {method} | {ms:.2f} | {ratio_s} |", flush=True)


if __name__ == "__main__":
    main()
