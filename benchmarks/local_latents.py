"""Local latents: exact per-datapoint posteriors for new data, and a step's cost against
the number of datapoints.

* ``accuracy``: factor analysis with known loadings and noise (5 features, 2 factors, 2000
  rows, the plate subsampled to 128 rows a step), whose posterior of each datapoint's
  factors is Gaussian and exact.  ``AutoAmortizedSampler`` trained by ``AmortizedSVGD``
  (16 particles a row, 1500 steps, learning rate 0.005) and by ``CTFDistillation`` (64
  particles a row, 800 steps, learning rate 0.01), with the recipe of
  ``benchmarks/local_models.py``; then, for 50 datapoints it never saw, 8000 draws each:
  the largest error of a posterior mean (in exact sds) and the range of sd ratios.  The
  issue's targets: 0.1 sd and 10%.
* ``step``: time per step (16 particles a row, 128 rows a step) at ``--rows-small`` and
  ``--rows-large`` datapoints, median of ``--steps`` steps after 10 warm-up steps; the
  ratio should be about 1 (the cost does not grow with the data).

Usage::

    python benchmarks/local_latents.py [--engines asvgd ctf] [--seeds 0 1 2] [--threads 2] [--steps 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from local_models import FactorAnalysis, train
from pyro.infer import SVI

from pyro_stein import AmortizedSVGD, AutoAmortizedSampler, CTFDistillation

#: ``{name: (engine, particles a row, steps, learning rate)}``.
ENGINES = {"asvgd": (AmortizedSVGD, 16, 1500, 0.005), "ctf": (CTFDistillation, 64, 800, 0.01)}


def accuracy(engine: str, seed: int) -> dict[str, float]:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    fa = FactorAnalysis(seed=seed)
    guide = AutoAmortizedSampler(fa.model, hidden_dims=(64, 64))
    started = time.perf_counter()
    loss, particles, steps, lr = ENGINES[engine]
    train(fa.model, guide, fa.data(2000), steps, lr=lr, particles=particles, engine=loss)
    seconds = time.perf_counter() - started
    new = fa.data(50)
    sd = fa.posterior_cov.diagonal().sqrt()
    draws = guide.sample_posterior(8000, new, batch_size=50)["z"]
    error = ((draws.mean(0) - fa.posterior_mean(new)) / sd).abs()
    ratio = draws.std(0) / sd
    return {"seconds": seconds, "max_mean_error": float(error.max()), "median_mean_error": float(error.median()),
            "sd_ratio_min": float(ratio.min()), "sd_ratio_max": float(ratio.max())}


def step_time(rows: int, steps: int) -> float:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    fa = FactorAnalysis(seed=0)
    data = fa.data(rows)
    guide = AutoAmortizedSampler(fa.model, hidden_dims=(64, 64))
    svi = SVI(fa.model, guide, pyro.optim.Adam({"lr": 0.005}), loss=AmortizedSVGD(num_particles=16))
    times = []
    for step in range(10 + steps):
        started = time.perf_counter()
        svi.step(data)
        if step >= 10:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=sorted(ENGINES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rows-small", type=int, default=1000)
    parser.add_argument("--rows-large", type=int, default=100_000)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    print("| engine | seed | train s | max mean error (sd) | median mean error | sd ratios |")
    print("|---|---:|---:|---:|---:|---|")
    for engine, seed in ((engine, seed) for engine in options.engines for seed in options.seeds):
        figures = accuracy(engine, seed)
        verdict = "PASS" if figures["max_mean_error"] <= 0.1 and 0.9 <= figures["sd_ratio_min"] and figures["sd_ratio_max"] <= 1.1 else "FAIL"
        print(f"| {engine} | {seed} | {figures['seconds']:.1f} | {figures['max_mean_error']:.3f} | {figures['median_mean_error']:.3f} | "
              f"{figures['sd_ratio_min']:.3f}-{figures['sd_ratio_max']:.3f} {verdict} |")
    small, large = step_time(options.rows_small, options.steps), step_time(options.rows_large, options.steps)
    print(f"\nstep: {1e3 * small:.1f} ms at {options.rows_small} rows, {1e3 * large:.1f} ms at {options.rows_large} rows: "
          f"ratio {large / small:.2f}")


if __name__ == "__main__":
    main()
