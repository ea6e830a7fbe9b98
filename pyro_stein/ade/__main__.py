"""``python -m pyro_stein.ade --dataset digits --variant av-ade|v-ade|av-gde|vae|gan --epochs N --out DIR``."""

from __future__ import annotations

import argparse
import json
import sys

from .experiment import run_experiment
from .model import VARIANTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_stein.ade",
        description="Train a variant of Adaptive Density Estimation and write sample grids, curves, a checkpoint "
        "and metrics.json (bits per dimension, classifier metrics).",
    )
    parser.add_argument("--dataset", default="digits",
                        help="'digits' (scikit-learn's 8x8 digits) or a path to MNIST IDX files or an .npz")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="av-ade")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default="ade_out", help="output folder (a run there resumes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics-every", type=int, default=10, help="epochs between evaluations")
    parser.add_argument("--no-progress", action="store_true")
    options = parser.parse_args(argv)
    try:
        report = run_experiment(options.dataset, options.variant, epochs=options.epochs, out=options.out,
                                seed=options.seed, metrics_every=options.metrics_every,
                                progress=not options.no_progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"seconds": round(report["seconds"], 1), **report["final"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
