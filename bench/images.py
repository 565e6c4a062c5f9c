"""Turning sample tensors in [-1, 1] into files: a PNG grid to look at and an .npz of uint8 images that
``bench eval --samples`` (and any other code) can score."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from .io import write_bytes_atomic


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to 0..255 bytes, rounding to the nearest of the 256 levels the data came from."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_image(
    images: torch.Tensor, *, scale: int | None = None, pad: int = 2, nrow: int | None = None
) -> Image.Image:
    """A grid of ``images`` (N, C, H, W), ``nrow`` per row (square-ish by default), as a PIL image, upscaled
    so small images stay visible."""
    n = images.shape[0]
    grid = make_grid(to_uint8(images), nrow=nrow or math.ceil(math.sqrt(n)), padding=pad, pad_value=255)
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if images.shape[1] == 1 else arr)
    if scale is None:
        scale = max(1, 256 // max(images.shape[-1], 1) // 2)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def save_grid(path: Path, images: torch.Tensor, **kwargs) -> Path:
    buf = io.BytesIO()
    grid_image(images, **kwargs).save(buf, format="PNG")
    return write_bytes_atomic(path, buf.getvalue())


def save_samples_npz(path: Path, images: torch.Tensor, labels: torch.Tensor | None = None) -> Path:
    """Samples as ``images``: uint8 (N, H, W, C), the layout image libraries and other tools expect; a
    conditional run's classes as ``labels`` (int64 (N,), the class each sample was asked to be)."""
    buf = io.BytesIO()
    arrays = {"images": to_uint8(images).permute(0, 2, 3, 1).numpy()}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    np.savez_compressed(buf, **arrays)
    return write_bytes_atomic(path, buf.getvalue())


def load_samples_npz(path: Path) -> torch.Tensor:
    """Read an .npz written by :func:`save_samples_npz` (or any uint8 NHWC / float NCHW array) to [-1, 1]."""
    with np.load(path, allow_pickle=False) as data:
        key = "images" if "images" in data.files else data.files[0]
        arr = data[key]
    return array_to_tensor(arr, str(path))


def array_to_tensor(arr: np.ndarray, origin: str) -> torch.Tensor:
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{origin}: expected images shaped (N, H, W, C) or (N, C, H, W), got {arr.shape}")
    if arr.dtype == np.uint8:
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1
    else:
        x = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.permute(0, 3, 1, 2)
        if x.min() < -1.001 or x.max() > 1.001:
            raise ValueError(
                f"{origin}: float images must lie in [-1, 1], got [{x.min():.3g}, {x.max():.3g}]"
            )
    return x.contiguous()
