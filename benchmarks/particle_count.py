"""How few particles per step still give a correct posterior: the figures behind the
engines' ``reliable_particles`` (the count below which they warn).

Two targets with exact posteriors:

* ``1d``: ``mu ~ Normal(0, 10)``, 50 observations ``y ~ Normal(mu, 1)`` (``y = 3 +
  randn(50)`` from seed 0); posterior sd ``1 / sqrt(50.01)``;
* ``5d``: ``z ~ MultivariateNormal(0, Sigma)``, no data, sds 0.5 to 2 and correlation 0.5.

For each engine, particle count and seed, ``fit`` runs with its defaults but
``num_particles`` (and ``--steps``); 20000 draws give each coordinate's sd ratio (sampler /
truth) and mean error (in true sds).  A count is *reliable* when every seed at it and at
every larger count has all sd ratios within [0.9, 1.1] and mean errors below 0.2.

Usage::

    python benchmarks/particle_count.py --steps 1000 --counts 2 4 8 16 32 64 --seeds 0 1 \\
        --jobs 2 --out benchmarks/results/particle_count.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from pathlib import Path

import torch

DRAWS = 20000


def target(name: str):
    import pyro
    import pyro.distributions as dist

    if name == "1d":
        y = 3 + torch.randn(50, generator=torch.Generator().manual_seed(0))

        def model(y):
            mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
            with pyro.plate("data", 50):
                pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

        precision = 50 + 1 / 100
        return model, (y,), "mu", torch.tensor([float(y.sum()) / precision]), torch.tensor([1 / math.sqrt(precision)])
    sds = torch.linspace(0.5, 2.0, 5)
    correlation = torch.full((5, 5), 0.5).fill_diagonal_(1.0)
    covariance = sds[:, None] * correlation * sds[None, :]

    def gaussian():
        pyro.sample("z", dist.MultivariateNormal(torch.zeros(5), covariance_matrix=covariance))

    return gaussian, (), "z", torch.zeros(5), sds


def one(job: tuple[str, str, int, int, int]) -> dict:
    engine_name, target_name, count, seed, steps = job
    torch.set_num_threads(1)
    import pyro_stein

    model, args, site, mean, sd = target(target_name)
    engine = {"asvgd": pyro_stein.AmortizedSVGD, "ctf": pyro_stein.CTFDistillation}[engine_name]
    started = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the warning this benchmark calibrates
        result = pyro_stein.fit(model, *args, engine=engine(num_particles=count), num_steps=steps, seed=seed, progress=False)
    seconds = time.perf_counter() - started
    draws = result.sample(DRAWS)[site].double().reshape(DRAWS, -1)
    ratios = (draws.std(0) / sd.double()).tolist()
    errors = ((draws.mean(0) - mean.double()).abs() / sd.double()).tolist()
    return {
        "engine": engine_name, "target": target_name, "num_particles": count, "seed": seed, "num_steps": steps,
        "sd_ratio_min": min(ratios), "sd_ratio_max": max(ratios), "mean_error_max": max(errors), "seconds": seconds,
    }


def reliable_count(rows: list[dict], engine: str) -> int | None:
    """The smallest count from which on every row of ``engine`` passes."""
    counts = sorted({r["num_particles"] for r in rows if r["engine"] == engine})
    passing = {
        c: all(
            0.9 <= r["sd_ratio_min"] and r["sd_ratio_max"] <= 1.1 and r["mean_error_max"] < 0.2
            for r in rows
            if r["engine"] == engine and r["num_particles"] == c
        )
        for c in counts
    }
    for index, count in enumerate(counts):
        if all(passing[c] for c in counts[index:]):
            return count
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--engines", nargs="+", default=["asvgd", "ctf"])
    parser.add_argument("--targets", nargs="+", default=["1d", "5d"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [
        (engine, name, count, seed, options.steps)
        for engine in options.engines
        for name in options.targets
        for count in options.counts
        for seed in options.seeds
    ]
    with multiprocessing.get_context("spawn").Pool(options.jobs, maxtasksperchild=1) as pool:
        rows = []
        for row in pool.imap(one, jobs):
            rows.append(row)
            print(
                f"{row['engine']:6} {row['target']:3} K={row['num_particles']:<4} seed {row['seed']}: sd ratio "
                f"{row['sd_ratio_min']:.3f}-{row['sd_ratio_max']:.3f}, mean error {row['mean_error_max']:.3f} sd "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
    for engine in options.engines:
        print(f"{engine}: smallest reliable count {reliable_count(rows, engine)}")
    if options.out is not None:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
