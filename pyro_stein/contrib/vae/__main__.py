"""``python -m pyro_stein.contrib.vae --method vae|iwae|stein_vae|macvae --epochs N --out DIR``."""

from __future__ import annotations

import argparse
import sys

from ..imaging.cli import output_folder, positive_integer, report_run
from .experiment import METHODS, run_experiment


def main(argv: list[str] | None = None, prog: str = "python -m pyro_stein.contrib.vae") -> int:
    """Parse ``argv`` (default the process's arguments), run, print the final figures; the
    exit status (2 for a missing or malformed input or a bad option)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a VAE on binarized images with one of four methods and write metrics.json and samples.png "
        "(test log-likelihood by importance sampling).",
    )
    parser.add_argument("--method", choices=METHODS, default="stein_vae")
    parser.add_argument("--dataset", default="digits",
                        help="'digits' (scikit-learn's 8x8 digits) or a path to MNIST IDX files or an .npz")
    parser.add_argument("--epochs", type=positive_integer, default=200)
    parser.add_argument("--latent-dim", type=positive_integer, default=8)
    parser.add_argument("--test-images", type=positive_integer, default=None, help="evaluate on the first this many")
    parser.add_argument("--importance-samples", type=positive_integer, default=1000)
    parser.add_argument("--out", default="vae_out", type=output_folder)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    options = parser.parse_args(argv)
    return report_run(lambda: run_experiment(
        options.dataset, options.method, epochs=options.epochs, latent_dim=options.latent_dim, out=options.out,
        seed=options.seed, test_images=options.test_images, importance_samples=options.importance_samples,
        progress=not options.no_progress,
    ))


if __name__ == "__main__":
    sys.exit(main())
