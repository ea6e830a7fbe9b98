"""``python -m pyro_stein.contrib.steingan --dataset digits --energy ae|rbm --epochs N --out DIR``."""

from __future__ import annotations

import argparse
import sys

from ..imaging.cli import add_run_arguments, report_run
from .experiment import ENERGIES, METHODS, run_experiment


def main(argv: list[str] | None = None, prog: str = "python -m pyro_stein.contrib.steingan") -> int:
    """Parse ``argv`` (default the process's arguments), run, print the final figures; the
    exit status (2 for a missing or malformed input or a bad option). ``prog`` names the
    command in the help text."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train SteinGAN (an energy model by amortized MLE with a Stein-trained generator) and "
        "write sample grids, curves, a checkpoint and metrics.json.",
    )
    parser.add_argument("--energy", choices=ENERGIES, default="ae")
    parser.add_argument("--method", choices=METHODS, default="steingan",
                        help="SteinGAN, its ablation without the kernel's repulsion, or a standard GAN")
    parser.add_argument("--conditional", action="store_true",
                        help="the class-conditional energy p(x, y) (with --energy ae): the generator draws a given digit")
    add_run_arguments(parser, out="steingan_out")
    options = parser.parse_args(argv)
    return report_run(lambda: run_experiment(
        options.dataset, options.energy, method=options.method, epochs=options.epochs, out=options.out,
        seed=options.seed, metrics_every=options.metrics_every, progress=not options.no_progress,
        conditional=options.conditional,
    ))


if __name__ == "__main__":
    sys.exit(main())
