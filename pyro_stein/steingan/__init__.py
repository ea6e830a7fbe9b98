"""SteinGAN, the deep-energy case study (Wang & Liu, 2016): an energy model
``p(x) proportional to exp(f(x))`` trained by maximum likelihood, with a generator trained by
amortized SVGD to draw the model samples the likelihood gradient needs.

This subpackage is being built (issue 6): so far the data loaders (scikit-learn's digits,
a user's MNIST from IDX or ``.npz`` files) and the energies (the autoencoder energy, and a
Gaussian-Bernoulli RBM whose log partition function is exact).
"""

from .data import ImageDataset, load_dataset, load_digits, load_mnist
from .energies import AutoencoderEnergy, GaussianBernoulliRBM

__all__ = ["AutoencoderEnergy", "GaussianBernoulliRBM", "ImageDataset", "load_dataset", "load_digits", "load_mnist"]
