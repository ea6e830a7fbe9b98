"""One generative benchmark on scikit-learn's digits: the five ADE variants and the SteinGAN
models on the same metrics and the same test split.

    python benchmarks/generative_digits.py --epochs 100 --out benchmarks/results/generative_digits

Bits per dimension (test split, uniformly dequantized to 17 levels; importance-weighted bound
with 100 samples, and the ELBO) where the model has a likelihood; for every model the
classifier-Frechet distance, inception-style score, class entropy (class coverage), diversity
and coverage of 2000 samples (pyro_stein.steingan.metrics). Writes ``table.md`` and
``results.json`` in ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ["test_bits_per_dim", "test_bits_per_dim_elbo", "classifier_frechet", "inception_score", "class_entropy",
           "diversity", "coverage", "seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/generative_digits")
    options = parser.parse_args()

    from pyro_stein.ade.experiment import run_experiment as run_ade
    from pyro_stein.steingan.experiment import run_experiment as run_steingan

    out = Path(options.out)
    results = {}
    for variant in ("vae", "v-ade", "gan", "av-gde", "av-ade"):
        report = run_ade("digits", variant, epochs=options.epochs, out=out / variant, seed=options.seed, progress=False)
        results[variant.upper()] = report
        print(variant, _row(report), flush=True)
    for label, energy in (("SteinGAN (AE energy)", "ae"), ("SteinGAN (RBM energy)", "rbm")):
        report = run_steingan("digits", energy, epochs=options.epochs, out=out / f"steingan_{energy}", seed=options.seed,
                              progress=False)
        results[label] = report
        print(label, _row(report), flush=True)
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for label, report in results.items():
        row = _row(report)
        lines.append(f"| {label} | " + " | ".join("" if row.get(c) is None else f"{row[c]:.3f}" for c in COLUMNS) + " |")
    table = "\n".join(lines)
    print(table)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({k: {**v, "history": None} for k, v in results.items()}, indent=1,
                                                 default=str))


def _row(report: dict) -> dict:
    final = report["final"]
    return {c: (report["seconds"] if c == "seconds" else final.get(c)) for c in COLUMNS}


if __name__ == "__main__":
    main()
