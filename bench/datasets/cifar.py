"""CIFAR-10 (3x32x32, 10 classes, its own 50,000/10,000 split) from the python batches of its archive.

The batches under ``<root>/cifar-10-batches-py/`` are read here rather than by
``torchvision.datasets.CIFAR10``, for two reasons. torchvision checks every batch against the md5 of
the official release before loading, which refuses any valid copy in the same format that is not
byte-identical (a subset, a re-pickled batch); the checks below on shapes, dtypes and labels catch a
truncated or foreign file instead. And the batches are pickles, which can run code when loaded: they
are read with an unpickler that builds only plain containers and numpy arrays, so a tampered file fails
to load instead of executing. A download (``download=True``) still goes through torchvision, which
verifies the md5 of the archive it fetches.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ._base import (
    DATA_ROOT_ENV,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageData,
    labels_tensor,
    register,
    resolve_root,
    uint8_to_unit,
)

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META = "batches.meta"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _ArrayUnpickler(pickle.Unpickler):
    """Loads only dicts, lists, strings, numbers and numpy arrays: all a CIFAR batch contains."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),  # pickles written with numpy 1.x, as the originals
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),  # how protocol 2 stores the raw bytes of an array
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        return super().find_class(module, name)


_BROKEN_PICKLE = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
)


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            # latin1 decodes the Python 2 strings of the official batches, as torchvision does.
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except _BROKEN_PICKLE as exc:
        raise DatasetFormatError(f"cifar10: {path} is not a readable CIFAR-10 batch: {exc}") from exc
    if not isinstance(entry, dict):
        raise DatasetFormatError(f"cifar10: {path} holds a {type(entry).__name__}, not a dict")
    # Keys are str when written by Python 2 or 3 with str keys, bytes when written with bytes keys.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_batches(folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, list[int]]:
    """Images as uint8 [N, 3, 32, 32] and their labels, concatenated in file order."""
    images, labels = [], []
    for file in files:
        entry = _read_pickle(folder / file)
        data, batch_labels = entry.get("data"), entry.get("labels")
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
            raise DatasetFormatError(f"cifar10: {folder / file} has no uint8 'data' array of shape [N, 3072]")
        if data.shape[1] != 3 * 32 * 32 or batch_labels is None or len(batch_labels) != data.shape[0]:
            raise DatasetFormatError(
                f"cifar10: {folder / file} must hold 'data' [N, 3072] and N 'labels', got data "
                f"{data.shape} and {None if batch_labels is None else len(batch_labels)} labels"
            )
        images.append(data)
        labels.extend(int(y) for y in batch_labels)
    # Each row is the red, green and blue planes one after another, each 32x32 row-major: already CHW.
    return np.concatenate(images).reshape(-1, 3, 32, 32), labels


def _class_names(folder: Path) -> tuple[str, ...]:
    """The names in batches.meta when it is there, else the published ones (only names depend on it)."""
    if not (folder / META).is_file():
        return CLASSES
    names = _read_pickle(folder / META).get("label_names")
    if not (isinstance(names, list) and len(names) == len(CLASSES)):
        raise DatasetFormatError(f"cifar10: {folder / META} has no list of {len(CLASSES)} 'label_names'")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)


@register("cifar10")
def cifar10(root: Path | None = None, download: bool = False) -> ImageData:
    """CIFAR-10 natural images (3x32x32, 10 classes, 50,000/10,000) from <data-root>/cifar-10-batches-py."""
    base = resolve_root("cifar10", root, download)
    folder = base / FOLDER
    expected = TRAIN_BATCHES + TEST_BATCHES
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing and download:
        try:
            _download(base)
        except Exception as exc:  # urllib, http and archive errors have no common base class
            raise DatasetNotFoundError(
                f"cifar10: could not download CIFAR-10 into {base.absolute()}: {exc}. Without internet, "
                f"copy the batches ({', '.join(expected)}, {META}) into {folder.absolute()}."
            ) from exc
        missing = [f for f in expected if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"cifar10: dataset not found. Looked in {folder.absolute()} for {', '.join(expected)} "
            f"(and optionally {META}); missing: {', '.join(missing)}. Pass --download (download=True) to "
            "fetch them (needs internet), or copy there the files of the extracted cifar-10-python.tar.gz. "
            f"The data root is --data-root, else ${DATA_ROOT_ENV}, else ./data."
        )
    train_x, train_y = _read_batches(folder, TRAIN_BATCHES)
    test_x, test_y = _read_batches(folder, TEST_BATCHES)
    return ImageData(
        name="cifar10",
        train_images=uint8_to_unit(train_x),
        train_labels=labels_tensor(train_y),
        test_images=uint8_to_unit(test_x),
        test_labels=labels_tensor(test_y),
        num_classes=len(CLASSES),
        class_names=_class_names(folder),
    )
