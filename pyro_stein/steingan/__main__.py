"""Moved to [`pyro_stein.contrib.steingan.__main__`][pyro_stein.contrib.steingan.__main__]: this module keeps
``python -m pyro_stein.steingan ...`` working, under its old name in the help text."""

from __future__ import annotations

import sys

from ..contrib.steingan.__main__ import main as _main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m pyro_stein.contrib.steingan`` under the name ``python -m pyro_stein.steingan``."""
    return _main(argv, prog="python -m pyro_stein.steingan")


if __name__ == "__main__":
    sys.exit(main())
