"""SteinGAN, the deep-energy case study (Wang & Liu, 2016): an energy model
``p(x) proportional to exp(f(x))`` trained by maximum likelihood, with a generator trained by
amortized SVGD to draw the model samples the likelihood gradient needs.

This subpackage is being built (issue 6): so far the data loaders (scikit-learn's digits,
a user's MNIST from IDX or ``.npz`` files), the energies (the autoencoder energy, and a
Gaussian-Bernoulli RBM whose log partition function is exact), and the classifier-based
sample metrics (Frechet distance, inception-style score, class entropy, diversity).
"""

from .data import ImageDataset, load_dataset, load_digits, load_mnist
from .energies import AutoencoderEnergy, GaussianBernoulliRBM
from .metrics import ClassifierMetrics, frechet_distance, inception_score

__all__ = [
    "AutoencoderEnergy",
    "ClassifierMetrics",
    "GaussianBernoulliRBM",
    "ImageDataset",
    "frechet_distance",
    "inception_score",
    "load_dataset",
    "load_digits",
    "load_mnist",
]
