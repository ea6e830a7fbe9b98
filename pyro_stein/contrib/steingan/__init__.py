"""SteinGAN, the deep-energy case study (Wang & Liu, 2016): an energy model
``p(x) proportional to exp(f(x))`` trained by maximum likelihood, with a generator trained by
amortized SVGD to draw the model samples the likelihood gradient needs.

Command line: ``python -m pyro_stein.contrib.steingan --dataset digits --energy ae|rbm --epochs N
--out DIR`` (``docs/steingan.md`` has the measured results). Modules: ``training`` (the
feature-space Stein direction, the balancing rule, the trainer) and ``experiment`` (one run
with its files). The data, the energies, the generator, the GAN baseline, the metrics, the
epoch loop and the report files are the imaging toolkit's, `pyro_stein.contrib.imaging`;
the names below re-export the ones a SteinGAN user needs.
"""

from ..imaging.data import ImageDataset, load_dataset, load_digits, load_mnist
from ..imaging.energies import AutoencoderEnergy, ClassConditionalEnergy, GaussianBernoulliRBM
from ..imaging.generator import Generator
from ..imaging.metrics import ClassifierMetrics, frechet_distance, inception_score
from ..imaging.training import train
from .experiment import run_experiment
from .training import SteinGAN, feature_stein_direction

__all__ = [
    "AutoencoderEnergy",
    "ClassConditionalEnergy",
    "ClassifierMetrics",
    "GaussianBernoulliRBM",
    "Generator",
    "ImageDataset",
    "SteinGAN",
    "feature_stein_direction",
    "frechet_distance",
    "inception_score",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "run_experiment",
    "train",
]
