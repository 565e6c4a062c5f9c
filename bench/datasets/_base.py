"""The dataset contract: what a plugin returns, the errors it raises, and conversions every plugin shares."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.registry import Registry

DATA_ROOT_ENV = "BENCH_DATA_ROOT"
"""Environment variable naming the folder that holds downloadable datasets when no root is passed."""

DEFAULT_DATA_ROOT = "data"
"""The folder (relative to the working directory) used when neither a root nor the variable is set."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where they were looked for; the message says where, and how to get them."""


class DatasetFormatError(ValueError):
    """Files were found but cannot be used as they are (unreadable, wrong shape, mixed sizes)."""


@dataclass(frozen=True, eq=False)
class ImageData:
    """A dataset held in memory as float32 tensors in [-1, 1], the range a DDPM's noise is scaled to.

    Everything is loaded eagerly because the trainer draws random batches straight from these tensors and
    the datasets benchmarked here are small: CIFAR-10, the largest built-in one, takes about 740 MB as
    float32 (60,000 x 3 x 32 x 32 x 4 bytes). ``*_labels`` are int64 class indices, or None for an
    unlabeled image folder, in which case ``num_classes`` is None as well.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor | None
    test_images: Tensor
    test_labels: Tensor | None
    num_classes: int | None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            if not (isinstance(images, Tensor) and images.dtype == torch.float32 and images.dim() == 4):
                raise ValueError(
                    f"{self.name}: {split}_images must be a float32 tensor [N, C, H, W], got "
                    f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}"
                )
            if images.shape[0] == 0:
                raise ValueError(f"{self.name}: the {split} split has no images")
            low, high = images.aminmax()
            if not (low.item() >= -1.0 and high.item() <= 1.0):  # also catches NaN
                raise ValueError(f"{self.name}: {split}_images must lie in [-1, 1], found [{low}, {high}]")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"{self.name}: train images are {tuple(self.train_images.shape[1:])} but test images are "
                f"{tuple(self.test_images.shape[1:])}"
            )
        self._check_labels()

    def _check_labels(self) -> None:
        labelled = [self.train_labels is not None, self.test_labels is not None, self.num_classes is not None]
        if any(labelled) and not all(labelled):
            raise ValueError(f"{self.name}: give train_labels, test_labels and num_classes together or none")
        if self.num_classes is None:
            if self.class_names is not None:
                raise ValueError(f"{self.name}: class_names given without labels")
            return
        if self.num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        for split in ("train", "test"):
            labels = getattr(self, f"{split}_labels")
            n = getattr(self, f"{split}_images").shape[0]
            if not (isinstance(labels, Tensor) and labels.dtype == torch.int64 and labels.shape == (n,)):
                raise ValueError(
                    f"{self.name}: {split}_labels must be an int64 tensor of shape [{n}], got "
                    f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}"
                )
            if labels.min().item() < 0 or labels.max().item() >= self.num_classes:
                raise ValueError(f"{self.name}: {split}_labels must lie in [0, {self.num_classes})")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W), the shape a denoiser is built for."""
        c, h, w = self.train_images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_images.shape[0])

    def describe(self) -> str:
        """One line for logs and ``bench`` output: sizes, shape, classes and memory held."""
        c, h, w = self.image_shape
        classes = "unlabeled" if self.num_classes is None else f"{self.num_classes} classes"
        megabytes = (self.train_images.nbytes + self.test_images.nbytes) / 2**20
        return (
            f"{self.name}: {self.num_train:,} train / {self.num_test:,} test images of {c}x{h}x{w}, "
            f"{classes}, {megabytes:,.1f} MiB"
        )

    def __repr__(self) -> str:
        return f"ImageData({self.describe()})"


DatasetLoader = Callable[..., ImageData]
"""``loader(root: Path | None, download: bool) -> ImageData``.

A loader that can resize better than interpolating the finished tensors (for example from the original
files of mixed sizes) is registered with ``resizes=True``, also accepts a keyword ``image_size: int | None``
and must then return images of that size; :func:`bench.datasets.load` resizes the output of every other
loader itself. A loader registered with ``default_image_size=N`` is run at N x N unless a size is asked for
(a dataset can be sized for the machine it ships for).
"""

DATASETS: Registry[DatasetLoader] = Registry("dataset", "bench.datasets")
register = DATASETS.register


def default_data_root() -> Path:
    """Where downloadable datasets live when no root is passed: ``$BENCH_DATA_ROOT``, else ``./data``."""
    return Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()


def check_image_size(image_size: object) -> int | None:
    """Return ``image_size`` as an int or None, or raise a ValueError saying a positive integer is needed."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    return image_size


def uint8_to_unit(images: np.ndarray | Tensor) -> Tensor:
    """uint8 pixels -> float32 in [-1, 1] with 0 -> -1 and 255 -> 1 exactly (x / 127.5 - 1)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    return x.to(torch.float32).div_(127.5).sub_(1.0)


def labels_tensor(labels: object) -> Tensor:
    """Class labels of any integer sequence (list, numpy array, tensor) as an int64 tensor."""
    return torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1).clone()


def resize_images(images: Tensor, size: int) -> Tensor:
    """Center-crop [N, C, H, W] images to a square and resize them to ``size`` x ``size``.

    Bilinear with antialiasing matches PIL's resize, which the folder loader uses, so a dataset looks the
    same whichever path resized it; the clamp removes rounding just outside [-1, 1].
    """
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = images[..., top : top + side, left : left + side]
    if side == size:
        return square.contiguous()
    out = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp_(-1.0, 1.0)


def resolve_root(name: str, root: Path | None, download: bool) -> Path:
    """The data root a downloadable dataset lives under; it must exist unless a download will create it."""
    folder = default_data_root() if root is None else Path(root).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DatasetNotFoundError(f"{name}: the data root {folder.absolute()} is a file, not a folder")
    if not folder.exists():
        if not download:
            raise DatasetNotFoundError(
                f"{name}: the data root {folder.absolute()} does not exist. Pass --download "
                "(download=True) to fetch the dataset into it (needs internet), or point --data-root "
                f"(or ${DATA_ROOT_ENV}) at the folder that holds it."
            )
        folder.mkdir(parents=True, exist_ok=True)
    return folder
