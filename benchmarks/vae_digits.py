"""Variational autoencoders on scikit-learn's binarized 8x8 digits: Pyro's ``Trace_ELBO`` VAE,
Pyro's ``RenyiELBO(alpha=0)``, the per-image importance-weighted bound (IWAE), Stein VAE
(Amortized SVGD) and MacVAE (CTF distillation), same model, decoder, minibatches, optimizer
and steps (``pyro_stein.contrib.vae``); three seeds each, every run in its own process (one
thread), two at a time.

Printed: per method, the test log-likelihood per image (nats; importance sampling from a
Student-t fitted to the method's guide, ``--importance-samples`` per image, the same
estimator for all), mean and spread over the seeds, the effective sample fraction of the
importance weights, and training seconds.  ``--out`` gets each run's ``metrics.json`` and
``samples.png`` and the table as ``table.md``.

Usage::

    python benchmarks/vae_digits.py [--epochs 200] [--seeds 0 1 2] [--jobs 2] [--out benchmarks/results/vae_digits]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = ("vae", "renyi", "iwae", "stein_vae", "macvae")


def run(method: str, seed: int, options: argparse.Namespace) -> dict:
    out = Path(options.out) / f"{method}_seed{seed}"
    command = [sys.executable, "-m", "pyro_stein.contrib.vae", "--method", method, "--seed", str(seed),
               "--epochs", str(options.epochs), "--importance-samples", str(options.importance_samples),
               "--out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed: {completed.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--importance-samples", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/vae_digits")
    options = parser.parse_args()
    jobs = [(method, seed) for method in options.methods for seed in options.seeds]
    with ThreadPoolExecutor(options.jobs) as pool:
        results = list(pool.map(lambda job: run(*job, options), jobs))
    lines = ["| method | test log-likelihood (nats/image), mean over seeds | spread (min to max) | "
             "effective sample fraction | train seconds (max) |", "|---|---:|---|---:|---:|"]
    for method in options.methods:
        rows = [r for r in results if r["method"] == method]
        values = [r["test_log_likelihood"] for r in rows]
        lines.append(
            f"| {method} | {statistics.mean(values):.2f} | {min(values):.2f} to {max(values):.2f} | "
            f"{statistics.mean(r['effective_sample_fraction'] for r in rows):.3f} | "
            f"{max(r['train_seconds'] for r in rows):.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    Path(options.out, "table.md").write_text(table + "\n")
    Path(options.out, "runs.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
