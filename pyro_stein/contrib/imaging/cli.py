"""The command-line pieces the generative case studies share: the common options
(`add_run_arguments`) and the run-and-report wrapper with its error handling (`report_run`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .reports import to_json

__all__ = ["add_run_arguments", "output_folder", "positive_integer", "report_run"]


def positive_integer(text: str) -> int:
    """An option's value as an integer >= 1 (argparse reports anything else before any work).

    Example:
        >>> positive_integer("3")
        3
        >>> positive_integer("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a positive integer, got '0'
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def output_folder(text: str) -> str:
    """An output folder: new, or an existing folder, not a file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; pass a folder for the run's outputs")
    return text


def add_run_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The options both case studies' command lines share: data, length, output, seed, progress.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_run_arguments(parser, out="runs/example")
        >>> options = parser.parse_args(["--epochs", "3", "--no-progress"])
        >>> options.dataset, options.epochs, options.out, options.metrics_every, options.no_progress
        ('digits', 3, 'runs/example', 10, True)
    """
    parser.add_argument("--dataset", default="digits",
                        help="'digits' (scikit-learn's 8x8 digits) or a path to MNIST IDX files or an .npz")
    parser.add_argument("--epochs", type=positive_integer, default=100)
    parser.add_argument("--out", default=out, type=output_folder,
                        help=f"output folder, default {out}; a run whose checkpoint is there resumes, and "
                        "a checkpoint of another model or other options is an error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics-every", type=positive_integer, default=10, help="epochs between evaluations")
    parser.add_argument("--no-progress", action="store_true")


def report_run(run: Callable[[], dict[str, Any]]) -> int:
    """Run, print the final figures as JSON and return 0; a missing or malformed input file
    or a bad option prints ``error: ...`` to stderr and returns 2.

    Example:
        >>> report_run(lambda: {"seconds": 1.23, "final": {"elbo": -2.5}})
        {
         "seconds": 1.2,
         "elbo": -2.5
        }
        0
        >>> def bad_run():
        ...     raise ValueError("latent_dim must be >= 1")
        >>> report_run(bad_run)
        2
    """
    try:
        report = run()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(to_json({"seconds": round(report["seconds"], 1), **report["final"]}))
    return 0
