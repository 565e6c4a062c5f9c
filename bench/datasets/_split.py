"""Seeded, stratified train/test splits for datasets that do not come with one."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``, ``n_test`` of them test items spread over the classes by class size.

    Implemented with one ``numpy.random.default_rng(seed)`` rather than scikit-learn's splitters so the
    split depends only on numpy's PCG64 stream, not on a library's version. Per-class quotas are the
    proportional shares rounded by largest remainder (ties to the lower class), so the total is exact.
    Both index arrays come back in a seeded shuffled order: a dataset stored sorted by class (mnist5k is)
    would otherwise put one class in every leading slice, such as the images shown in a preview grid.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if not 0 <= n_test <= n:
        raise ValueError(f"n_test must be between 0 and the number of items ({n}), got {n_test}")
    classes, counts = np.unique(labels, return_counts=True)
    shares = counts * n_test / max(n, 1)
    quotas = np.floor(shares).astype(np.int64)
    leftover = n_test - int(quotas.sum())
    order = np.argsort(-(shares - quotas), kind="stable")
    quotas[order[:leftover]] += 1

    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for cls, quota in zip(classes, quotas, strict=True):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[:quota])
        train_parts.append(members[quota:])
    train = rng.permutation(np.concatenate(train_parts)) if train_parts else np.zeros(0, np.int64)
    test = rng.permutation(np.concatenate(test_parts)) if test_parts else np.zeros(0, np.int64)
    return train.astype(np.int64), test.astype(np.int64)
