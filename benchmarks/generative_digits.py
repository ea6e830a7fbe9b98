"""One generative benchmark on scikit-learn's digits: the five ADE variants and the SteinGAN
models on the same metrics and the same test split.

    python benchmarks/generative_digits.py --epochs 100 --out benchmarks/results/generative_digits
    python benchmarks/generative_digits.py --sweep --jobs 2 --out benchmarks/results/generative_digits

Bits per dimension (test split, uniformly dequantized to 17 levels; importance-weighted bound
with 100 samples, and the ELBO) where the model has a likelihood; for every model the
classifier-Frechet distance, inception-style score, class entropy (class coverage), diversity
and coverage of 2000 samples (pyro_stein.contrib.imaging.metrics).

The main run writes ``table.md``, ``results.json`` and ``samples.png`` (every model's
draws). ``--sweep`` writes ``sweep.md`` and ``sweep.json`` instead: the adversarial weight
(0.3 to 10) for AV-GDE and AV-ADE, the latent width (16, 4, 2) for the four likelihood
variants, the batch-normalized decoder for VAE and AV-ADE, and seeds 1 and 2 of the main
table's settings: where the adversarial term costs the pixel-space Gaussian its likelihood
(the conflict Lucas et al. describe), and how far the table's differences exceed seed noise.
Every run is one ``run_experiment`` on one thread; ``--jobs`` runs that many at once.
"""

from __future__ import annotations

import argparse
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

COLUMNS = ["test_bits_per_dim", "test_bits_per_dim_elbo", "classifier_frechet", "inception_score", "class_entropy",
           "diversity", "coverage", "seconds"]
SWEEP_COLUMNS = ["test_bits_per_dim", "test_bits_per_dim_elbo", "classifier_frechet", "class_entropy", "coverage",
                 "seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="the main table's seed (the sweep names its own)")
    parser.add_argument("--out", default="benchmarks/results/generative_digits")
    parser.add_argument("--sweep", action="store_true", help="the weight, latent-width and seed sweep instead")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once, one thread each (the seconds column then includes sharing the cores)")
    options = parser.parse_args()
    out = Path(options.out)
    if options.sweep:
        sweep(out, options.epochs, options.jobs)
    else:
        main_table(out, options.epochs, options.seed, options.jobs)


def main_runs(seed: int) -> dict[str, dict[str, Any]]:
    """The table's rows: label -> ``run`` keyword arguments."""
    return {
        "VAE": {"study": "ade", "variant": "vae", "seed": seed},
        "V-ADE": {"study": "ade", "variant": "v-ade", "seed": seed},
        "GAN": {"study": "ade", "variant": "gan", "seed": seed},
        "GAN, decoder without batch norm": {"study": "ade", "variant": "gan", "seed": seed,
                                            "options": {"batch_norm": False}, "folder": "gan_no_batch_norm"},
        "AV-GDE": {"study": "ade", "variant": "av-gde", "seed": seed},
        "AV-ADE": {"study": "ade", "variant": "av-ade", "seed": seed},
        "SteinGAN (AE energy)": {"study": "steingan", "variant": "ae", "seed": seed, "folder": "steingan_ae"},
        "SteinGAN (RBM energy)": {"study": "steingan", "variant": "rbm", "seed": seed, "folder": "steingan_rbm"},
    }


def sweep_runs() -> dict[str, dict[str, Any]]:
    """The sweep's rows: label -> ``run`` keyword arguments (seed 0 unless named)."""
    runs: dict[str, dict[str, Any]] = {}

    def add(variant: str, latent: int = 16, weight: float | None = None, seed: int = 0,
            batch_norm: bool = False) -> None:
        options: dict[str, Any] = {"latent_dim": latent}
        if weight is not None:
            options["adversarial_weight"] = weight
        if batch_norm:
            options["batch_norm"] = True
        name = variant.upper() + (" (batch norm)" if batch_norm else "")
        label = f"{name} | {latent} | {'' if weight is None else weight} | {seed}"
        folder = (f"{variant}_latent{latent}" + ("" if weight is None else f"_weight{weight:g}") + f"_seed{seed}"
                  + ("_batch_norm" if batch_norm else ""))
        runs[label] = {"study": "ade", "variant": variant, "seed": seed, "options": options, "folder": folder}

    for latent in (16, 4, 2):
        add("vae", latent)
        add("v-ade", latent)
        for weight in (1.0, 10.0):
            add("av-gde", latent, weight)
        add("av-ade", latent, 1.0)
    for weight in (0.3, 3.0):
        add("av-gde", 16, weight)
        add("av-ade", 16, weight)
    add("av-ade", 16, 10.0)
    add("vae", batch_norm=True)
    add("av-ade", weight=1.0, batch_norm=True)
    for seed in (1, 2):
        add("vae", seed=seed)
        add("v-ade", seed=seed)
        add("gan", seed=seed)
        add("av-gde", weight=1.0, seed=seed)
        add("av-ade", weight=1.0, seed=seed)
    return runs


def run(study: str, variant: str, seed: int, out: str, epochs: int, options: dict[str, Any] | None = None) -> dict:
    """One experiment on one thread (a worker process of its own under ``--jobs``)."""
    import torch

    torch.set_num_threads(1)
    if study == "ade":
        from pyro_stein.contrib.ade.experiment import run_experiment

        return run_experiment("digits", variant, epochs=epochs, out=out, seed=seed, progress=False,
                              model_options=options)
    from pyro_stein.contrib.steingan.experiment import run_experiment

    return run_experiment("digits", variant, epochs=epochs, out=out, seed=seed, progress=False)


def run_all(runs: dict[str, dict[str, Any]], out: Path, epochs: int, jobs: int) -> dict[str, dict]:
    """Every run, ``jobs`` at once, printing each row as it finishes."""
    results: dict[str, dict] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for label, spec in runs.items():
            folder = spec.get("folder", spec["variant"])
            futures[label] = pool.submit(run, spec["study"], spec["variant"], spec["seed"], str(out / folder), epochs,
                                         spec.get("options"))
        for label, future in futures.items():
            try:
                results[label] = future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # a failed run ends the benchmark now, not at the end
                raise
            print(label, _row(results[label], COLUMNS), flush=True)
    return results


def main_table(out: Path, epochs: int, seed: int, jobs: int) -> None:
    runs = main_runs(seed)
    results = run_all(runs, out, epochs, jobs)
    table = _table("model", results, COLUMNS)
    print(table)
    (out / "table.md").write_text(table + "\n")
    _write_json(out / "results.json", results)
    sample_figure(runs, results, out)


def sample_figure(runs: dict[str, dict[str, Any]], results: dict[str, dict], out: Path) -> None:
    """``samples.png``: each run's sample grid, titled with its Frechet distance."""
    from steingan_digits import figure  # this folder's SteinGAN benchmark draws the same panels

    figure({label: {"folder": out / spec.get("folder", spec["variant"]), "final": results[label]["final"]}
            for label, spec in runs.items()}, out / "samples.png")


def sweep(out: Path, epochs: int, jobs: int) -> None:
    results = run_all(sweep_runs(), out / "sweep", epochs, jobs)
    table = _table("variant | latent width | adversarial weight | seed", results, SWEEP_COLUMNS)
    print(table)
    (out / "sweep.md").write_text(table + "\n")
    _write_json(out / "sweep.json", results)


def _write_json(path: Path, results: dict[str, dict]) -> None:
    """The reports without their histories (NaN, the GAN's bits, as null)."""
    from pyro_stein.contrib.imaging.reports import to_json

    path.write_text(to_json({k: {**v, "history": None} for k, v in results.items()}))


def _table(header: str, results: dict[str, dict], columns: list[str]) -> str:
    lines = [f"| {header} | " + " | ".join(columns) + " |",
             "|---" * (header.count("|") + 1) + "|" + "---:|" * len(columns)]
    for label, report in results.items():
        row = _row(report, columns)
        lines.append(f"| {label} | " + " | ".join("" if row[c] is None else f"{row[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def _row(report: dict, columns: list[str]) -> dict:
    final = report["final"]
    row = {c: (report["seconds"] if c == "seconds" else final.get(c)) for c in columns}
    return {c: (None if isinstance(v, float) and math.isnan(v) else v) for c, v in row.items()}


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
