"""Moved: the SteinGAN run to [`pyro_stein.contrib.steingan.experiment`][pyro_stein.contrib.steingan.experiment],
the report files to [`pyro_stein.contrib.imaging.reports`][pyro_stein.contrib.imaging.reports] and the
command-line helpers to [`pyro_stein.contrib.imaging.cli`][pyro_stein.contrib.imaging.cli]; this module keeps
existing imports working."""

from ..contrib.imaging.cli import add_run_arguments, report_run
from ..contrib.imaging.reports import METRIC_DRAWS, final_figures, save_figures, to_json
from ..contrib.steingan.experiment import ENERGIES, METHODS, build, run_experiment

__all__ = [
    "ENERGIES",
    "METHODS",
    "METRIC_DRAWS",
    "add_run_arguments",
    "build",
    "final_figures",
    "report_run",
    "run_experiment",
    "save_figures",
    "to_json",
]
