"""``python -m pyro_stein.steingan --dataset digits --energy ae|rbm --epochs N --out DIR``."""

from __future__ import annotations

import argparse
import sys

from .experiment import ENERGIES, METHODS, add_run_arguments, report_run, run_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_stein.steingan",
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
