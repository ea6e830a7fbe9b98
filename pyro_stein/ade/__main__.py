"""``python -m pyro_stein.ade --dataset digits --variant av-ade|v-ade|av-gde|vae|gan --epochs N --out DIR``."""

from __future__ import annotations

import argparse
import sys

from ..steingan.experiment import add_run_arguments, report_run
from .experiment import run_experiment
from .model import VARIANTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_stein.ade",
        description="Train a variant of Adaptive Density Estimation and write sample grids, curves, a checkpoint "
        "and metrics.json (bits per dimension, classifier metrics).",
    )
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="av-ade")
    add_run_arguments(parser, out="ade_out")
    options = parser.parse_args(argv)
    return report_run(lambda: run_experiment(
        options.dataset, options.variant, epochs=options.epochs, out=options.out, seed=options.seed,
        metrics_every=options.metrics_every, progress=not options.no_progress,
    ))


if __name__ == "__main__":
    sys.exit(main())
