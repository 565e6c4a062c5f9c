"""MNIST and Fashion-MNIST (1x28x28, 10 classes, their own 60,000/10,000 split) through torchvision.

torchvision reads the four uncompressed IDX files under ``<root>/<MNIST|FashionMNIST>/raw/``; files
copied there as ``.gz`` (as they are published) are decompressed in place first, which needs no network.
The data root is the ``root`` argument (``--data-root``), else ``$BENCH_DATA_ROOT``, else ``./data``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import zlib
from pathlib import Path

from ._base import (
    DATA_ROOT_ENV,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageData,
    register,
    resolve_root,
    uint8_to_unit,
)

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _decompress_published_archives(name: str, raw: Path) -> None:
    """Turn ``X.gz`` into ``X`` where only the archive is there, atomically so a crash leaves no half file."""
    for file in IDX_FILES:
        target, archive = raw / file, raw / f"{file}.gz"
        if target.exists() or not archive.is_file():
            continue
        partial = raw / f".{file}.partial"
        try:
            with gzip.open(archive, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError, zlib.error) as exc:
            partial.unlink(missing_ok=True)
            raise DatasetFormatError(f"{name}: cannot decompress {archive}: {exc}") from exc
        os.replace(partial, target)


def _missing_message(name: str, raw: Path, missing: list[str]) -> str:
    return (
        f"{name}: dataset not found. Looked in {raw.absolute()} for {', '.join(IDX_FILES)} "
        f"(missing: {', '.join(missing)}). Pass --download (download=True) to fetch them (needs internet), "
        "or copy those files, or their published .gz archives, into that folder. The data root is "
        f"--data-root, else ${DATA_ROOT_ENV}, else ./data."
    )


def _load_idx(
    name: str, cls_name: str, root: Path | None, download: bool, classes: tuple[str, ...]
) -> ImageData:
    import torchvision.datasets

    dataset_cls = getattr(torchvision.datasets, cls_name)
    folder = resolve_root(name, root, download)
    raw = folder / cls_name / "raw"  # torchvision's own layout: <root>/<class name>/raw
    if raw.is_dir():
        _decompress_published_archives(name, raw)
    missing = [f for f in IDX_FILES if not (raw / f).is_file()]
    if missing and not download:
        raise DatasetNotFoundError(_missing_message(name, raw, missing))
    try:
        train = dataset_cls(str(folder), train=True, download=bool(missing))  # no network if all there
        test = dataset_cls(str(folder), train=False, download=False)
    except (AssertionError, TypeError, ValueError, KeyError, RuntimeError, OSError) as exc:
        if missing:  # a download was attempted and did not produce the files
            message = f"{_missing_message(name, raw, missing)} The download failed: {exc}"
            raise DatasetNotFoundError(message) from exc
        raise DatasetFormatError(f"{name}: the IDX files in {raw.absolute()} are not valid: {exc!r}") from exc
    for split, ds in (("train", train), ("test", test)):
        if ds.data.shape[0] != ds.targets.shape[0]:
            raise DatasetFormatError(
                f"{name}: {split} split in {raw.absolute()} has {ds.data.shape[0]} images but "
                f"{ds.targets.shape[0]} labels"
            )
    return ImageData(
        name=name,
        train_images=uint8_to_unit(train.data).unsqueeze(1),
        train_labels=train.targets.long(),
        test_images=uint8_to_unit(test.data).unsqueeze(1),
        test_labels=test.targets.long(),
        num_classes=len(classes),
        class_names=classes,
    )


@register("mnist")
def mnist(root: Path | None = None, download: bool = False) -> ImageData:
    """MNIST handwritten digits (1x28x28, 10 classes, 60,000/10,000) from <data-root>/MNIST/raw."""
    return _load_idx("mnist", "MNIST", root, download, MNIST_CLASSES)


@register("fashion-mnist")
def fashion_mnist(root: Path | None = None, download: bool = False) -> ImageData:
    """Fashion-MNIST clothing (1x28x28, 10 classes, 60,000/10,000) from <data-root>/FashionMNIST/raw."""
    return _load_idx("fashion-mnist", "FashionMNIST", root, download, FASHION_CLASSES)
