"""Writers of datasets' real on-disk formats, for tests that load them without downloading."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], *, bytes_keys: bool = False) -> None:
    entry = {
        "batch_label": path.name,
        "data": data,
        "labels": labels,
        "filenames": [f"{i}.png" for i in labels],
    }
    if bytes_keys:
        entry = {k.encode(): v for k, v in entry.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)  # the official batches are protocol-2 pickles with str keys


def write_cifar(
    root: Path, rng: np.random.Generator, *, bytes_keys: bool = False, per_batch: int = 2, n_test: int = 3
):
    """CIFAR-10's python batches: five training batches of ``per_batch`` images, a test batch, the meta."""
    folder = root / "cifar-10-batches-py"
    train_x, train_y = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(y) for y in rng.integers(0, 10, size=per_batch)]
        write_cifar_batch(folder / f"data_batch_{i}", data, labels, bytes_keys=bytes_keys)
        train_x.append(data)
        train_y += labels
    test_x = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    test_x[0, :2] = (0, 255)
    test_y = [9, 0, 4, *(int(y) for y in rng.integers(0, 10, size=n_test - 3))]
    write_cifar_batch(folder / "test_batch", test_x, test_y, bytes_keys=bytes_keys)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    return np.concatenate(train_x), train_y, test_x, test_y
