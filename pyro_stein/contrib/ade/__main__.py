"""``python -m pyro_stein.contrib.ade --dataset digits --variant av-ade|v-ade|av-gde|vae|gan --epochs N --out DIR``."""

from __future__ import annotations

import argparse
import sys

from ..imaging.cli import add_run_arguments, report_run
from .experiment import run_experiment
from .model import VARIANTS


def main(argv: list[str] | None = None, prog: str = "python -m pyro_stein.contrib.ade") -> int:
    """Parse ``argv`` (default the process's arguments), run, print the final figures; the
    exit status (2 for a missing or malformed input or a bad option). ``prog`` names the
    command in the help text."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a variant of Adaptive Density Estimation and write sample grids, curves, a checkpoint "
        "and metrics.json (bits per dimension, classifier metrics).",
    )
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="av-ade")
    parser.add_argument("--adversarial-weight", type=float, default=None,
                        help="lambda in L_coverage + lambda * L_quality, adversarial variants (default 1)")
    parser.add_argument("--latent-dim", type=int, default=None, help="width of the code z (default 16)")
    parser.add_argument("--batch-norm", choices=("auto", "on", "off"), default="auto",
                        help="batch normalization in the decoder; auto: on for the GAN variant only")
    add_run_arguments(parser, out="ade_out")
    options = parser.parse_args(argv)
    model_options = {"batch_norm": {"auto": None, "on": True, "off": False}[options.batch_norm]}
    if options.adversarial_weight is not None:
        model_options["adversarial_weight"] = options.adversarial_weight
    if options.latent_dim is not None:
        model_options["latent_dim"] = options.latent_dim
    return report_run(lambda: run_experiment(
        options.dataset, options.variant, epochs=options.epochs, out=options.out, seed=options.seed,
        metrics_every=options.metrics_every, progress=not options.no_progress, model_options=model_options,
    ))


if __name__ == "__main__":
    sys.exit(main())
