"""Mode collapse in plain terms: the spread of predicted classes, and how different samples are in pixels.

These need no feature statistics, so they stay meaningful where FD and the k-NN metrics degenerate (a
handful of samples, or all samples identical), and they say *how* samples fail: a model that draws only
"1"s has low class entropy; one that draws the same image has pixel diversity 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor


@dataclass(frozen=True)
class ClassHistogram:
    """Counts of predicted classes and summaries of their distribution p (empty classes have p = 0).

    entropy            H(p) = -sum_c p_c log p_c in nats (0 log 0 = 0); log K for a uniform spread.
    normalized_entropy H(p) / log K in [0, 1] (1 when K = 1).
    missing_classes    classes no sample was assigned to.
    kl_to_uniform      KL(p || uniform) = log K - H(p), in nats.
    tv_to_reference    total variation 1/2 sum_c |p_c - q_c| to a reference distribution q (for example the
                       classifier's predictions on real test images, so its errors cancel); None without q.
    """

    counts: tuple[int, ...]
    entropy: float
    normalized_entropy: float
    missing_classes: int
    kl_to_uniform: float
    tv_to_reference: float | None = None


def _labels(pred_labels: ArrayLike | Tensor, num_classes: int) -> np.ndarray:
    if isinstance(pred_labels, Tensor):
        pred_labels = pred_labels.detach().cpu().numpy()
    labels = np.asarray(pred_labels).reshape(-1)
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes
    ):
        raise ValueError(f"labels must be integers in [0, {num_classes}), got {labels.dtype} values")
    return labels.astype(np.int64)


def class_histogram(
    pred_labels: ArrayLike | Tensor,
    num_classes: int,
    reference_labels: ArrayLike | Tensor | None = None,
) -> ClassHistogram:
    """Histogram of predicted labels and its entropy, missing classes and distances to uniform / reference."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    labels = _labels(pred_labels, num_classes)
    if labels.size == 0:
        raise ValueError("no labels to count")
    counts = np.bincount(labels, minlength=num_classes)
    p = counts / counts.sum()
    nonzero = p[p > 0]
    entropy = float((nonzero * np.log(1.0 / nonzero)).sum())  # written so one class gives +0.0
    log_k = math.log(num_classes)
    tv = None
    if reference_labels is not None:
        ref = np.bincount(_labels(reference_labels, num_classes), minlength=num_classes)
        tv = float(0.5 * np.abs(p - ref / max(ref.sum(), 1)).sum())
    return ClassHistogram(
        counts=tuple(int(c) for c in counts),
        entropy=entropy,
        normalized_entropy=entropy / log_k if num_classes > 1 else 1.0,
        missing_classes=int((counts == 0).sum()),
        kl_to_uniform=max(log_k - entropy, 0.0),
        tv_to_reference=tv,
    )


def pixel_diversity(images: Tensor, max_images: int = 500, seed: int = 0) -> float:
    """Mean pairwise RMS pixel distance, mean_{i<j} ||x_i - x_j||_2 / sqrt(D), over a seeded subset.

    Dividing by sqrt(D) makes it a per-pixel quantity (in the [-1, 1] data units), comparable across image
    sizes: 0 for identical images, 2 for an all-black and an all-white image. All pairs of at most
    ``max_images`` images drawn with ``torch.Generator().manual_seed(seed)`` (O(max_images^2) distances),
    so the value is deterministic. Measures spread, not quality: noise scores high.
    """
    if images.shape[0] < 2 or max_images < 2:
        raise ValueError(f"need at least 2 images, got {images.shape[0]} (max_images={max_images})")
    x = images.detach().cpu().reshape(images.shape[0], -1).double()
    if x.shape[0] > max_images:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_images]]
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # (n, n), zero diagonal
    n = x.shape[0]
    return float(d.sum() / (n * (n - 1)) / math.sqrt(x.shape[1]))
