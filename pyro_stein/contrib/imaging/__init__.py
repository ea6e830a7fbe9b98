"""The imaging toolkit that the generative case studies share (SteinGAN, ADE, and the ones to
come): it imports no study.

Modules:

* ``data``: scikit-learn's 8x8 digits and a user's MNIST from local files (`ImageDataset`);
* ``metrics``: the classifier-based sample metrics (Frechet distance, inception-style score,
  class entropy, diversity, coverage);
* ``energies``: deep energy models on images (autoencoder energy, Gaussian-Bernoulli RBM with
  an exact log partition function, class-conditional joint energy);
* ``generator``: the MLP image generator; ``baselines``: a standard GAN with it;
* ``training``: the epoch loop with the learning-rate schedule, progress bar and checkpoints;
* ``reports``: ``metrics.json`` in strict JSON, the final figures, sample grids and curves;
* ``cli``: the command-line options and error reporting the studies share.
"""

from .baselines import GAN
from .data import ImageDataset, load_dataset, load_digits, load_mnist
from .energies import AutoencoderEnergy, ClassConditionalEnergy, GaussianBernoulliRBM
from .generator import Generator
from .metrics import ClassifierMetrics, frechet_distance, inception_score
from .training import learning_rate_factor, train

__all__ = [
    "GAN",
    "AutoencoderEnergy",
    "ClassConditionalEnergy",
    "ClassifierMetrics",
    "GaussianBernoulliRBM",
    "Generator",
    "ImageDataset",
    "frechet_distance",
    "inception_score",
    "learning_rate_factor",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "train",
]
