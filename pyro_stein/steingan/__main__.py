"""``python -m pyro_stein.steingan --dataset digits --energy ae|rbm --epochs N --out DIR``."""

from __future__ import annotations

import argparse
import json
import sys

from .experiment import ENERGIES, METHODS, run_experiment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_stein.steingan",
        description="Train SteinGAN (an energy model by amortized MLE with a Stein-trained generator) and "
        "write sample grids, curves, a checkpoint and metrics.json.",
    )
    parser.add_argument("--dataset", default="digits",
                        help="'digits' (scikit-learn's 8x8 digits) or a path to MNIST IDX files or an .npz")
    parser.add_argument("--energy", choices=ENERGIES, default="ae")
    parser.add_argument("--method", choices=METHODS, default="steingan",
                        help="SteinGAN, its ablation without the kernel's repulsion, or a standard GAN")
    parser.add_argument("--conditional", action="store_true",
                        help="the class-conditional energy p(x, y) (with --energy ae): the generator draws a given digit")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default="steingan_out", help="output folder (a run there resumes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics-every", type=int, default=10, help="epochs between image metrics")
    parser.add_argument("--no-progress", action="store_true")
    options = parser.parse_args(argv)
    try:
        report = run_experiment(
            options.dataset, options.energy, method=options.method, epochs=options.epochs, out=options.out,
            seed=options.seed, metrics_every=options.metrics_every, progress=not options.no_progress,
            conditional=options.conditional,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"seconds": round(report["seconds"], 1), **report["final"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
