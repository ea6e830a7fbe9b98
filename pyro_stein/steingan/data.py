"""Moved to [`pyro_stein.contrib.imaging.data`][pyro_stein.contrib.imaging.data]; this module keeps existing imports working."""

from ..contrib.imaging.data import (
    ImageDataset,
    load_dataset,
    load_digits,
    load_mnist,
)

__all__ = [
    "ImageDataset",
    "load_dataset",
    "load_digits",
    "load_mnist",
]
