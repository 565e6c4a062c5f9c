"""A feature space per dataset: a small CNN classifier trained on the dataset's own training split.

Fréchet distance, KID and the k-NN metrics need an embedding in which distances mean "looks like the same
kind of image". The standard one, Inception-V3 pool3 (Heusel et al. 2017), needs weights this machine
cannot download, and on 8x8 or 28x28 digits ImageNet features are a poor fit anyway. So, as in the
"classifier FID" used for MNIST-scale generative models, the bench trains a small classifier on the
training images and uses its penultimate layer (``feature_dim`` units, after the ReLU, the vector the
linear head reads) as the feature space. Its test accuracy is recorded beside it: a feature space whose
classifier is poor cannot tell good samples from bad ones.

Training is seeded (weights, dropout, data order and augmentation all come from ``config.seed``) and the
result is cached on disk under a key made of the dataset name, a hash of the config and of the network's
version, and a fingerprint of the data, so every run on the same data measures in the same space and pays
for training once. The hash is part of :attr:`FeatureExtractor.name` so results say which space they used.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from bench.io import cache_root, load_tensors, read_json, torch_save_atomic, write_json_atomic

from .classifier import (
    NET_VERSION,
    FeatureExtractorConfig,
    FeatureNet,
    LabeledImages,
    check_labels,
    train_classifier,
)


class FeatureSpace(Protocol):
    """Anything that embeds [N, C, H, W] images in [-1, 1] as [N, D] vectors, with a name for results."""

    @property
    def name(self) -> str: ...
    def features(self, images: Tensor) -> Tensor: ...


class FeatureExtractor:
    """A trained :class:`FeatureNet` in eval mode: embeds images and predicts their classes, in batches."""

    def __init__(
        self,
        net: FeatureNet,
        *,
        name: str,
        test_accuracy: float,
        image_shape: tuple[int, int, int],
        record: dict[str, Any],
        device: torch.device | str = "cpu",
        batch_size: int = 500,
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.name = name
        self.test_accuracy = float(test_accuracy)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.record = record
        self.batch_size = batch_size

    @property
    def num_classes(self) -> int:
        return int(self.net.head.out_features)

    @property
    def feature_dim(self) -> int:
        return int(self.net.fc.out_features)

    @torch.inference_mode()
    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features [N, feature_dim] and class logits [N, num_classes] (float32, CPU) in one pass."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{self.name} embeds images of shape [N, {', '.join(map(str, self.image_shape))}], "
                f"got {tuple(images.shape)}"
            )
        feats, logits = [torch.zeros(0, self.feature_dim)], [torch.zeros(0, self.num_classes)]
        for batch in images.split(self.batch_size):
            f = self.net.embed(batch.to(self.device, torch.float32))  # (n, feature_dim)
            feats.append(f.float().cpu())
            logits.append(self.net.head(f).float().cpu())  # (n, num_classes); dropout is off in eval
        return torch.cat(feats), torch.cat(logits)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate-layer features [N, feature_dim] of images in [-1, 1]."""
        return self.features_and_logits(images)[0]

    def features_and_labels(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features and predicted class indices (int64) in one pass, for the metrics that need both."""
        feats, logits = self.features_and_logits(images)
        return feats, logits.argmax(dim=1)

    def predict_proba(self, images: Tensor) -> Tensor:
        """Class probabilities [N, num_classes]."""
        return self.features_and_logits(images)[1].softmax(dim=1)

    def predict(self, images: Tensor) -> Tensor:
        """Predicted class indices [N] (int64)."""
        return self.features_and_logits(images)[1].argmax(dim=1)

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.name}, test accuracy {self.test_accuracy:.4f})"


def default_cache_dir() -> Path:
    """``$BENCH_CACHE_DIR/features`` when the variable is set, else ``~/.cache/ddpm-bench/features``."""
    return cache_root() / "features"


def data_fingerprint(data: LabeledImages) -> str:
    """sha256 of the shapes, dtypes and bytes of both splits and the class count.

    The test split is included because the cached record stores the test accuracy measured on it.
    """
    digest = hashlib.sha256()
    digest.update(f"classes={data.num_classes};".encode())
    for split in ("train_images", "train_labels", "test_images", "test_labels"):
        tensor = getattr(data, split)
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(f"{split}:{array.dtype}:{array.shape};".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def extractor_name(dataset_name: str, config: FeatureExtractorConfig, fingerprint: str) -> str:
    """``classifier-<dataset>-<hash8>``, the hash covering the config, the network version and the data."""
    key = hashlib.sha256(f"{config.key()}|{fingerprint}".encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_name) or "data"
    return f"classifier-{safe}-{key}"


def _load_cached(
    path: Path, record_path: Path, config: FeatureExtractorConfig, fingerprint: str
) -> tuple[FeatureNet, dict[str, Any]] | None:
    """The cached network and record, or None when absent; a damaged entry is reported and ignored."""
    if not (path.exists() and record_path.exists()):
        return None
    try:
        record = read_json(record_path)
        if record.get("config") != asdict(config) or record.get("net_version") != NET_VERSION:
            raise ValueError("its record does not match the requested config")
        if record.get("data_fingerprint") != fingerprint:
            raise ValueError("its record was trained on other data")
        c = record["image_shape"][0]
        net = FeatureNet(c, record["num_classes"], config.width, config.feature_dim, config.dropout)
        net.load_state_dict(load_tensors(path))
    except Exception as exc:  # any damage means: train again rather than fail the run
        warnings.warn(f"ignoring the damaged feature-classifier cache {path}: {exc}", stacklevel=3)
        return None
    return net.eval(), record


def get_feature_extractor(
    dataset_name: str,
    data: LabeledImages,
    config: FeatureExtractorConfig | None = None,
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    threads: int | None = None,
) -> FeatureExtractor:
    """The feature classifier of ``data``, loaded from the cache or trained (then cached) on first use.

    Cache files are ``<cache_dir>/<name>.pt`` (a state dict, loaded with ``weights_only=True``) and
    ``<name>.json`` (config, accuracies, training time), both written atomically, so two processes that
    train at once both leave a whole file. ``cache_dir`` defaults to :func:`default_cache_dir`;
    ``threads`` is passed to :func:`train_classifier`.
    """
    config = config or FeatureExtractorConfig()
    check_labels(data)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    fingerprint = data_fingerprint(data)
    name = extractor_name(dataset_name, config, fingerprint)
    path, record_path = folder / f"{name}.pt", folder / f"{name}.json"
    cached = _load_cached(path, record_path, config, fingerprint)
    if cached is not None:
        net, record = cached
        record["cached"] = True
    else:
        net, record = train_classifier(data, config, device=device, progress=progress, threads=threads)
        record.update(name=name, data_fingerprint=fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        torch_save_atomic(path, {k: v.detach().cpu() for k, v in net.state_dict().items()})
        write_json_atomic(record_path, record)
        record["cached"] = False
    return FeatureExtractor(
        net,
        name=name,
        test_accuracy=record["test_accuracy"],
        image_shape=tuple(record["image_shape"]),
        record=record,
        device=device,
    )
