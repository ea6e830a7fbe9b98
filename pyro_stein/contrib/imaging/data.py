"""Image datasets for the generative case studies: scikit-learn's 8x8 digits (shipped with
scikit-learn, the default) or a user's own MNIST from local files.

Images are float tensors ``(N, 1, H, W)`` with values in ``[0, 1]`` and integer labels
``(N,)``; nothing is downloaded.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageDataset", "load_dataset", "load_digits", "load_mnist"]

#: IDX magic numbers (unsigned bytes, then the number of dimensions).
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class ImageDataset:
    """A train/test split of labelled images.

    Attributes:
        name: where the data came from (``"digits"`` or the file path).
        train_images, test_images: ``(N, 1, H, W)`` float tensors in ``[0, 1]``.
        train_labels, test_labels: ``(N,)`` int64 class labels ``0 .. num_classes - 1``.
        num_classes: the number of classes.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)``."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def dim(self) -> int:
        """Pixels per image."""
        return int(np.prod(self.image_shape))


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), pixel values 0-16
    scaled to ``[0, 1]``, split into train and test by a seeded, class-stratified shuffle.

    Args:
        test_fraction: the share of each class held out for testing.
        seed: the split's seed (the default split is the one the case studies report).

    Returns:
        An [`ImageDataset`][pyro_stein.contrib.imaging.data.ImageDataset] of ``(N, 1, 8, 8)`` images.

    Example:
        >>> data = load_digits()
        >>> data.train_images.shape[1:], data.num_classes
        (torch.Size([1, 8, 8]), 10)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: only this loader needs it

    digits = sklearn_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: round(float(test_fraction) * len(members))]] = True
    return _dataset("digits", images[~test], labels[~test], images[test], labels[test])


def load_mnist(path: str | Path) -> ImageDataset:
    """MNIST (or any dataset in its layout) from local files; nothing is downloaded.

    Args:
        path: either a folder holding the four IDX files ``train-images-idx3-ubyte``,
            ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
            (each optionally gzipped, ``.gz``), or an ``.npz`` file with arrays ``x_train``,
            ``y_train``, ``x_test``, ``y_test`` (Keras' ``mnist.npz``), images ``(N, H, W)`` of
            bytes 0-255.

    Returns:
        An [`ImageDataset`][pyro_stein.contrib.imaging.data.ImageDataset] of ``(N, 1, H, W)`` images
        scaled to ``[0, 1]``.

    Raises:
        FileNotFoundError: the path, or one of the files it must hold, does not exist.
        ValueError: a file is not what its name says (wrong IDX magic number or shape,
            missing ``.npz`` arrays, image and label counts that differ).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no MNIST data at {str(path)!r}: pass a folder with the four IDX files "
            f"({', '.join(_MNIST_FILES.values())}, optionally .gz) or an .npz with {', '.join(_NPZ_KEYS)}"
        )
    if path.is_dir():
        arrays = {key: _read_idx(_find_idx(path, stem)) for key, stem in _MNIST_FILES.items()}
        train_images, train_labels = arrays["train_images"], arrays["train_labels"]
        test_images, test_labels = arrays["test_images"], arrays["test_labels"]
    else:
        train_images, train_labels, test_images, test_labels = _read_npz(path)
    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        if images.ndim != 3:
            raise ValueError(f"{path}: {split} images must have shape (N, H, W), got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{path}: {len(images)} {split} images but labels of shape {labels.shape}")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"{path}: train images are {train_images.shape[1:]}, test images {test_images.shape[1:]}")
    scale = 255.0 if max(train_images.max(initial=0), test_images.max(initial=0)) > 1 else 1.0
    return _dataset(
        str(path),
        train_images.astype(np.float32) / scale,
        train_labels.astype(np.int64),
        test_images.astype(np.float32) / scale,
        test_labels.astype(np.int64),
    )


def load_dataset(dataset: str | Path) -> ImageDataset:
    """``"digits"`` for scikit-learn's digits, else a path for [`load_mnist`][pyro_stein.contrib.imaging.data.load_mnist]."""
    if str(dataset) == "digits":
        return load_digits()
    return load_mnist(dataset)


def _dataset(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> ImageDataset:
    classes = np.unique(np.concatenate([train_y, test_y]))
    if classes.min() < 0:
        raise ValueError(f"{name}: labels must be non-negative class indices, got {classes.min()}")
    return ImageDataset(
        name=name,
        train_images=torch.from_numpy(np.ascontiguousarray(train_x)).unsqueeze(1),
        train_labels=torch.from_numpy(np.ascontiguousarray(train_y)),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)).unsqueeze(1),
        test_labels=torch.from_numpy(np.ascontiguousarray(test_y)),
        num_classes=int(classes.max()) + 1,
    )


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    present = sorted(p.name for p in folder.iterdir())[:12]
    raise FileNotFoundError(f"{folder} has no {stem} (or {stem}.gz); it holds {present}")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:  # a corrupt gzip stream
        raise ValueError(f"{path}: cannot be read ({error})") from error
    if len(raw) < 8:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (_IDX_IMAGES, _IDX_LABELS):
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic number {magic:#010x})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as error:  # not an .npz (or .npy) at all
        # NumPy reads any unknown bytes as a pickle and advises allow_pickle, which would
        # run whatever the file holds: say what the file is not instead.
        reason = "it is neither an .npz archive nor an .npy array" if "pickle" in str(error) else str(error)
        raise ValueError(f"{path}: not a readable .npz file ({reason})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        # A malformed input file, like the others: ValueError, which the command lines report.
        raise ValueError(f"{path}: a single array, not an .npz archive with {list(_NPZ_KEYS)}")  # noqa: TRY004
    with archive:
        missing = [key for key in _NPZ_KEYS if key not in archive.files]
        if missing:
            raise ValueError(f"{path}: the .npz lacks arrays {missing}; it must hold {list(_NPZ_KEYS)}")
        arrays = []
        for key in _NPZ_KEYS:
            try:
                arrays.append(np.asarray(archive[key]))
            except ValueError:  # an object array, which only allow_pickle would read
                raise ValueError(f"{path}: array {key!r} holds Python objects; it must hold numbers") from None
        return tuple(arrays)
