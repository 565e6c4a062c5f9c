"""Your own images: a folder of image files, read with PIL.

Layouts, detected in this order:

- ``root/train/`` and ``root/test/``: the split is yours;
- anything else: ``root`` is split here, 90% train / 10% test, with a fixed seed (stratified by class).

Inside a split, class subfolders (``train/cat/001.png``, the torchvision ``ImageFolder`` layout) give
labels, indexed by sorted class name; image files directly in the folder give an unlabeled dataset.
Files whose suffix is not an image type and names starting with "." are skipped.

The images are 1-channel when every one of them is grayscale and RGB otherwise (grayscale ones are
repeated over the channels, as PIL does). They must all have one size, unless ``image_size`` is given:
then each is center-cropped to a square and resized to ``image_size`` x ``image_size``.
``download`` is ignored: there is nothing to fetch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._base import DatasetFormatError, DatasetNotFoundError, ImageData, register, uint8_to_unit
from ._split import stratified_split

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
GRAYSCALE_MODES = frozenset({"1", "L", "LA"})
TEST_FRACTION = 0.1
SPLIT_SEED = 0


@dataclass(frozen=True)
class _Listing:
    """The image files of one folder and, in the class-folder layout, the class of each."""

    folder: Path
    files: list[Path]
    classes: list[str] | None


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, skipping hidden folders, in sorted (reproducible) order."""
    found = [p for p in folder.rglob("*") if _is_image(p)]
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _list(folder: Path) -> _Listing:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    loose = [p for p in entries if _is_image(p)]
    subfolders = [p for p in entries if p.is_dir()]
    by_class = {d.name: _images_under(d) for d in subfolders}
    if not any(by_class.values()):
        if not loose:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DatasetNotFoundError(
                f"folder: no images found in {folder.absolute()} (looked for {suffixes})"
            )
        return _Listing(folder, loose, None)
    if loose:
        raise DatasetFormatError(
            f"folder: {folder.absolute()} holds both class folders ({', '.join(by_class)}) and loose images "
            f"({loose[0].name}, ...); put every image in a class folder, or none"
        )
    empty = [name for name, files in by_class.items() if not files]
    if empty:
        raise DatasetFormatError(
            f"folder: class folder(s) {', '.join(empty)} in {folder.absolute()} hold no images"
        )
    files = [f for name in by_class for f in by_class[name]]
    classes = [name for name in by_class for _ in by_class[name]]
    return _Listing(folder, files, classes)


def _read(path: Path, image_size: int | None) -> np.ndarray:
    """uint8 pixels [H, W] (grayscale) or [H, W, 3], center-cropped and resized when ``image_size`` is set."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I") or im.mode == "F":
                raise DatasetFormatError(
                    f"folder: {path} is a {im.mode} (16-bit or float) image; save it with 8 bits per channel"
                )
            im = im.convert("L" if im.mode in GRAYSCALE_MODES else "RGB")
            if image_size is not None:
                w, h = im.size
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side))
                # Bilinear resizing in PIL widens its kernel when shrinking, so it does not alias.
                im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except DatasetFormatError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetFormatError(f"folder: cannot read image {path}: {exc}") from exc


def _to_tensor(arrays: list[np.ndarray], rgb: bool) -> torch.Tensor:
    if rgb:
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        return uint8_to_unit(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return uint8_to_unit(np.stack(arrays)).unsqueeze(1)


def _check_one_size(files: list[Path], arrays: list[np.ndarray]) -> None:
    first = arrays[0].shape[:2]
    for path, a in zip(files, arrays, strict=True):
        if a.shape[:2] != first:
            raise DatasetFormatError(
                f"folder: images have different sizes ({files[0]} is {first[1]}x{first[0]}, {path} is "
                f"{a.shape[1]}x{a.shape[0]} (width x height)); pass image_size (--image-size) to center-crop "
                "and resize every image to one square size"
            )


def _splits(root: Path) -> tuple[_Listing, _Listing | None]:
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        present, absent = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
        raise DatasetNotFoundError(
            f"folder: found {present.absolute()} but not {absent.absolute()}; give both train/ and test/, "
            "or neither to have the folder split 90/10"
        )
    if train_dir.is_dir():
        train, test = _list(train_dir), _list(test_dir)
        if (train.classes is None) != (test.classes is None):
            raise DatasetFormatError(
                f"folder: one of {train_dir.absolute()} and {test_dir.absolute()} uses class folders and the "
                "other does not"
            )
        unknown = sorted(set(test.classes or ()) - set(train.classes or ()))
        if unknown:
            raise DatasetFormatError(f"folder: test/ has class folder(s) not in train/: {', '.join(unknown)}")
        return train, test
    return _list(root), None


@register("folder", resizes=True)
def folder(root: Path | None, download: bool = False, *, image_size: int | None = None) -> ImageData:
    """Your images in <root> (train/ and test/, else split 90/10; class subfolders give labels)."""
    if root is None:
        raise ValueError("the folder dataset needs root (--data-root) to point at the folder of images")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"folder: the image folder {root.absolute()} does not exist (or is a file)"
        )
    train, test = _splits(root)
    listings = [train] if test is None else [train, test]
    files = [f for listing in listings for f in listing.files]
    arrays = [_read(f, image_size) for f in files]
    if image_size is None:
        _check_one_size(files, arrays)
    images = _to_tensor(arrays, rgb=any(a.ndim == 3 for a in arrays))

    class_names = sorted(set(train.classes)) if train.classes is not None else None
    if class_names is not None:
        index = {name: i for i, name in enumerate(class_names)}
        labels = torch.tensor([index[c] for listing in listings for c in listing.classes or ()])
    else:
        labels = None

    if test is None:
        n = len(files)
        if n < 2:
            raise DatasetFormatError(f"folder: {root.absolute()} has {n} image; a split needs at least 2")
        n_test = min(max(1, round(TEST_FRACTION * n)), n - 1)
        strata = labels.numpy() if labels is not None else np.zeros(n, dtype=np.int64)
        train_idx, test_idx = (torch.from_numpy(i) for i in stratified_split(strata, n_test, seed=SPLIT_SEED))
    else:
        train_idx, test_idx = torch.arange(len(train.files)), torch.arange(len(train.files), len(files))
    return ImageData(
        name="folder",
        train_images=images[train_idx],
        train_labels=None if labels is None else labels[train_idx],
        test_images=images[test_idx],
        test_labels=None if labels is None else labels[test_idx],
        num_classes=None if class_names is None else len(class_names),
        class_names=None if class_names is None else tuple(class_names),
    )
