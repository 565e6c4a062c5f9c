"""What the metric tests share: scikit-learn's 8x8 digits in the shape the metrics accept."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Images:
    """The duck-typed dataset the metrics accept (the same attributes as bench.datasets.ImageData)."""

    name: str
    train_images: Tensor
    train_labels: Tensor | None
    test_images: Tensor
    test_labels: Tensor | None
    num_classes: int | None


def load_digits_data(n_test: int = 300, seed: int = 0) -> Images:
    """1,797 digits as 1x8x8 in [-1, 1] (16 is full ink), a seeded 1,497 / 300 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.data.astype(np.float32)).reshape(-1, 1, 8, 8) / 8.0 - 1.0
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    test, train = order[:n_test], order[n_test:]
    return Images("digits", x[train], y[train], x[test], y[test], 10)
