"""Sample-quality metrics for the generative case studies, computed with a small digit
classifier that the package trains itself (Inception weights cannot be downloaded here).

* classifier-Frechet distance: the Frechet (2-Wasserstein) distance between Gaussians fitted
  to the classifier's penultimate features of generated and held-out test images (FID's
  construction, Heusel et al. 2017, with this classifier in place of Inception);
* inception-style score: ``exp(E_x KL(p(y | x) || p(y)))`` under the classifier (Salimans et
  al. 2016): up to the number of classes for confident, evenly spread predictions;
* class entropy: the entropy of the predicted class frequencies (``log 10`` when every digit
  is generated equally often; low when modes are dropped);
* diversity: the mean pairwise feature distance of generated images over that of test
  images (1 for data-like spread, near 0 for a collapsed generator; noise can push it
  above 1);
* coverage (Naeem et al., 2020): the share of test images with a generated image within
  the distance to their 5th-nearest test neighbour, in feature space; 1 when generated
  images surround every part of the data, low when modes are missed, and not raised by
  noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops.nn import mlp
from .data import ImageDataset

#: Neighbours that set each test image's radius in the coverage metric (Naeem et al. use 5).
COVERAGE_NEIGHBOURS = 5

__all__ = [
    "ClassifierMetrics",
    "DigitClassifier",
    "frechet_distance",
    "inception_score",
    "train_classifier",
]


class DigitClassifier(nn.Module):
    """A small MLP classifier of flat images; ``features`` is its penultimate layer.

    Args:
        dim: pixels per image.
        num_classes: classes.
        hidden_dims: widths of the hidden layers; the last one is the feature width.
    """

    def __init__(self, dim: int, num_classes: int, hidden_dims: tuple[int, ...] = (256, 128)) -> None:
        super().__init__()
        # Every hidden layer, the last (the features) included, is followed by a ReLU.
        self.body = mlp([dim, *hidden_dims], nn.ReLU, output_activation=nn.ReLU) if hidden_dims else nn.Sequential()
        self.head = nn.Linear(hidden_dims[-1] if hidden_dims else dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.reshape(len(x), -1))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits."""
        return self.head(self.features(x))


def train_classifier(
    data: ImageDataset, *, epochs: int = 60, batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0
) -> tuple[DigitClassifier, float]:
    """Train [`DigitClassifier`][pyro_stein.contrib.imaging.metrics.DigitClassifier] on the training split.

    Deterministic for a given seed and thread count: its own generator orders the batches,
    and weight decay plus mild Gaussian pixel noise keep its features smooth for generated
    images, which are not quite like the data.

    Returns:
        The classifier (in eval mode) and its accuracy on the test split.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier = DigitClassifier(data.dim, data.num_classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=learning_rate, weight_decay=1e-4)
    x = data.train_images.reshape(len(data.train_images), -1)
    y = data.train_labels
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            noisy = x[batch] + 0.05 * torch.randn(x[batch].shape, generator=generator)
            loss = nn.functional.cross_entropy(classifier(noisy), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    classifier.eval()
    with torch.no_grad():
        accuracy = float((classifier(data.test_images).argmax(-1) == data.test_labels).float().mean())
    return classifier, accuracy


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^(1/2) S_b S_a^(1/2))^(1/2))`` between Gaussians
    fitted to two sets of feature rows, in float64 (symmetric square roots by eigendecomposition).

    Example:
        >>> a = torch.randn(5000, 3, generator=torch.Generator().manual_seed(0))
        >>> round(frechet_distance(a, a + 2.0), 2)
        12.0
    """
    a, b = features_a.double(), features_b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mean_a - mean_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)


def inception_score(probabilities: Tensor) -> float:
    """``exp(mean_x KL(p(y | x) || mean_x p(y | x)))`` from class probabilities ``(N, C)``.

    Example:
        >>> round(inception_score(torch.eye(10).repeat(5, 1)), 6)
        10.0
    """
    p = probabilities.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    return math.exp(float((p * (p.log() - marginal.log())).sum(-1).mean()))


def _psd_sqrt(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


@dataclass
class ClassifierMetrics:
    """Metrics of generated images against a dataset's test split, with one trained classifier.

    Build it once per dataset (`ClassifierMetrics.for_dataset`), then call it on batches of
    generated images ``(N, 1, H, W)`` or ``(N, D)`` in ``[0, 1]``.
    """

    classifier: DigitClassifier
    test_accuracy: float
    test_features: Tensor
    test_mean_distance: float
    num_classes: int
    test_radii: Tensor | None = None

    @classmethod
    def for_dataset(cls, data: ImageDataset, seed: int = 0) -> ClassifierMetrics:
        classifier, accuracy = train_classifier(data, seed=seed)
        with torch.no_grad():
            features = classifier.features(data.test_images)
        distances = torch.cdist(features.double(), features.double())
        radii = distances.kthvalue(COVERAGE_NEIGHBOURS + 1, dim=1).values  # +1: the point itself
        return cls(classifier, accuracy, features, _mean_pairwise_distance(features), data.num_classes, radii)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, float]:
        """``{"classifier_frechet", "inception_score", "class_entropy", "diversity", "coverage"}``."""
        features = self.classifier.features(images)
        probabilities = self.classifier.head(features).softmax(-1)
        frequencies = torch.bincount(probabilities.argmax(-1), minlength=self.num_classes).double() / len(images)
        present = frequencies[frequencies > 0]
        return {
            "classifier_frechet": frechet_distance(features, self.test_features),
            "inception_score": inception_score(probabilities),
            "class_entropy": float(-(present * present.log()).sum()) + 0.0,  # + 0.0: no "-0.0" in reports
            "diversity": _mean_pairwise_distance(features) / self.test_mean_distance,
            "coverage": self._coverage(features),
        }

    def _coverage(self, features: Tensor) -> float:
        nearest = torch.cdist(self.test_features.double(), features.double()).min(dim=1).values
        return float((nearest <= self.test_radii).double().mean())


def _mean_pairwise_distance(features: Tensor, max_rows: int = 2000) -> float:
    rows = features[:max_rows].double()
    distances = torch.cdist(rows, rows)
    n = len(rows)
    return float(distances.sum() / (n * (n - 1)))
