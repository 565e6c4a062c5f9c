"""Training the per-dataset feature classifier: its config, its network and a seeded training loop.

:mod:`bench.metrics.features` caches the result and serves its features; this module only trains.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NET_VERSION = 1
"""Part of the cache key: bump it when :class:`FeatureNet` or the training recipe changes."""

POOL_ABOVE = 8
"""Each conv stage halves the resolution while it is above this, so 28 -> 14 -> 7 and 32 -> 16 -> 8."""


class LabeledImages(Protocol):
    """What the feature classifier needs from a dataset (``bench.datasets.ImageData`` has all of it)."""

    @property
    def name(self) -> str: ...
    @property
    def train_images(self) -> Tensor: ...
    @property
    def train_labels(self) -> Tensor | None: ...
    @property
    def test_images(self) -> Tensor: ...
    @property
    def test_labels(self) -> Tensor | None: ...
    @property
    def num_classes(self) -> int | None: ...


@dataclass(frozen=True)
class FeatureExtractorConfig:
    """How the feature classifier is built and trained; every field is part of the cache key.

    Measured on a 2-core CPU with the defaults: 4,000 MNIST digits train in about 13 s to 97.8-98.3% test
    accuracy (seeds 0-2), scikit-learn's 1,497 8x8 digits in about 3 s to 98-99%. Augmentation (random
    translation by up to ``max(1, H // 14)`` pixels) makes the features tolerant of small shifts; it did
    not change MNIST test accuracy measurably.
    """

    width: int = 32
    feature_dim: int = 128
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    seed: int = 0
    augment: bool = True

    def key(self) -> str:
        """A stable text form of the config and network version, hashed into the cache key."""
        return json.dumps({"net_version": NET_VERSION, **asdict(self)}, sort_keys=True)


class FeatureNet(nn.Module):
    """Three 3x3 conv stages (width, 2 width, 2 width) with batch norm, then an FC feature layer and a head.

    Pooling depends on the input size only (halve while above :data:`POOL_ABOVE`, then adaptive average
    pooling to 4x4), and it has no parameters, so one architecture serves 1x8x8, 1x28x28 and 3x32x32.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, feature_dim: int, dropout: float):
        super().__init__()
        widths = (width, 2 * width, 2 * width)
        stages, c = [], in_channels
        for w in widths:
            conv = nn.Conv2d(c, w, 3, padding=1, bias=False)
            stages.append(nn.Sequential(conv, nn.BatchNorm2d(w), nn.ReLU()))
            c = w
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(c * 16, feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """The penultimate activations [N, feature_dim]: the feature space of the metrics."""
        for stage in self.stages:
            x = stage(x)  # (N, w, H, W)
            if x.shape[-1] > POOL_ABOVE:
                x = F.max_pool2d(x, 2, ceil_mode=True)  # (N, w, ceil(H/2), ceil(W/2))
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)  # (N, 16 w)
        return F.relu(self.fc(x))  # (N, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.embed(x)))  # (N, num_classes)


def check_labels(data: LabeledImages) -> None:
    """Raise a ValueError that says what to do instead when ``data`` cannot train a classifier."""
    if data.train_labels is None or data.test_labels is None or data.num_classes is None:
        raise ValueError(
            f"{data.name} has no labels, so no feature classifier can be trained on it; "
            "measure it in Inception-V3 features instead (see bench.metrics.inception)"
        )
    if data.train_images.shape[0] != data.train_labels.shape[0]:
        raise ValueError(
            f"{data.name}: {data.train_images.shape[0]} train images but {data.train_labels.shape[0]} labels"
        )


def _translate(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image by a random integer number of pixels in [-max_shift, max_shift], edges replicated."""
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(x)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shifts[:, 0] / w
    theta[:, 1, 2] = -2.0 * shifts[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)


@torch.inference_mode()
def _accuracy(net: FeatureNet, images: Tensor, labels: Tensor, device: torch.device) -> float:
    net.eval()
    correct = sum(
        int((net(x.to(device, torch.float32)).argmax(1).cpu() == y).sum())
        for x, y in zip(images.split(500), labels.split(500), strict=True)
    )
    return correct / max(len(labels), 1)


@contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op CPU threads (None: leave torch's setting), then restore it."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cuda_indices(device: torch.device) -> list[int]:
    """The CUDA device whose RNG training uses, for ``fork_rng`` (which otherwise forks every GPU's)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _fit(
    net: FeatureNet,
    data: LabeledImages,
    config: FeatureExtractorConfig,
    generator: torch.Generator,
    device: torch.device,
    progress: bool,
) -> None:
    """AdamW with a one-cycle learning rate (Smith & Topin 2019), which converges in a dozen epochs."""
    from tqdm.auto import trange

    x_train, y_train = data.train_images.float(), data.train_labels.long()
    n, max_shift = x_train.shape[0], max(1, x_train.shape[2] // 14)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=math.ceil(n / config.batch_size)
    )
    for _ in trange(config.epochs, desc=f"feature classifier ({data.name})", disable=not progress):
        net.train()
        for idx in torch.randperm(n, generator=generator).split(config.batch_size):
            x = x_train[idx]
            if config.augment:
                x = _translate(x, max_shift, generator)
            loss = F.cross_entropy(net(x.to(device)), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def train_classifier(
    data: LabeledImages,
    config: FeatureExtractorConfig,
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    threads: int | None = None,
) -> tuple[FeatureNet, dict[str, Any]]:
    """Train a :class:`FeatureNet` on ``data``'s training split; returns it and a record of the training.

    The global RNG (weight init, dropout) is forked and seeded so the result depends on ``config.seed`` and
    not on what ran before; data order and augmentation use their own ``torch.Generator``. On CPU the
    weights also depend, in the last bits, on the thread count. ``threads`` sets it for the training only:
    these small convolutions gain little from a second thread and, on cores shared with other processes,
    lose a lot waiting for it at every operation (``threads=1`` was 3x faster than 2 on a busy 2-core box).
    """
    check_labels(data)
    device = torch.device(device)
    start = time.perf_counter()
    with _cpu_threads(threads), torch.random.fork_rng(devices=_cuda_indices(device)):
        torch.manual_seed(config.seed)
        channels = int(data.train_images.shape[1])
        net = FeatureNet(channels, int(data.num_classes), config.width, config.feature_dim, config.dropout)
        _fit(net.to(device), data, config, torch.Generator().manual_seed(config.seed), device, progress)
        seconds = time.perf_counter() - start
        record = {
            "dataset": data.name,
            "config": asdict(config),
            "net_version": NET_VERSION,
            "train_seconds": round(seconds, 3),
            "threads": torch.get_num_threads(),
            "train_accuracy": _accuracy(net, data.train_images, data.train_labels, device),
            "test_accuracy": _accuracy(net, data.test_images, data.test_labels, device),
            "num_train": int(data.train_images.shape[0]),
            "num_test": int(data.test_images.shape[0]),
            "num_classes": int(data.num_classes),
            "image_shape": [int(s) for s in data.train_images.shape[1:]],
            "device": str(device),
            "torch_version": torch.__version__,
        }
    return net.eval(), record
