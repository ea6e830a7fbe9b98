"""SteinGAN, the deep-energy case study (Wang & Liu, 2016): an energy model
``p(x) proportional to exp(f(x))`` trained by maximum likelihood, with a generator trained by
amortized SVGD to draw the model samples the likelihood gradient needs.

Command line: ``python -m pyro_stein.steingan --dataset digits --energy ae|rbm --epochs N --out DIR``
(``docs/steingan.md`` has the measured results). Modules: ``data`` (scikit-learn's digits, a
user's MNIST from IDX or ``.npz`` files), ``energies`` (the autoencoder energy, a
Gaussian-Bernoulli RBM with an exact log partition function, the class-conditional joint
energy), ``training`` (the generator, the feature-space Stein direction, the trainer),
``baselines`` (a standard GAN), ``metrics`` (classifier-based Frechet distance,
inception-style score, class entropy, diversity, coverage) and ``experiment`` (one run with
its files).
"""

from .data import ImageDataset, load_dataset, load_digits, load_mnist
from .energies import AutoencoderEnergy, ClassConditionalEnergy, GaussianBernoulliRBM
from .experiment import run_experiment
from .metrics import ClassifierMetrics, frechet_distance, inception_score
from .training import Generator, SteinGAN, feature_stein_direction, train

__all__ = [
    "AutoencoderEnergy",
    "ClassConditionalEnergy",
    "ClassifierMetrics",
    "GaussianBernoulliRBM",
    "Generator",
    "SteinGAN",
    "feature_stein_direction",
    "ImageDataset",
    "frechet_distance",
    "inception_score",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "run_experiment",
    "train",
]
