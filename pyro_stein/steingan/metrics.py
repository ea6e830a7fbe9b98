"""Moved to [`pyro_stein.contrib.imaging.metrics`][pyro_stein.contrib.imaging.metrics]; this module keeps existing imports working."""

from ..contrib.imaging.metrics import (
    COVERAGE_NEIGHBOURS,
    ClassifierMetrics,
    DigitClassifier,
    frechet_distance,
    inception_score,
    train_classifier,
)

__all__ = [
    "COVERAGE_NEIGHBOURS",
    "ClassifierMetrics",
    "DigitClassifier",
    "frechet_distance",
    "inception_score",
    "train_classifier",
]
