"""All sample-quality metrics of a set of samples against real held-out images, plus the two reference rows.

A number such as "FD 3.1" means little alone: it depends on the feature space, the set sizes (FD is biased
upward for small N) and the dataset. So every run is printed beside two rows measured the same way, with
the same feature space, reference subset and sample count:

- ``real``: real training images in place of samples, the floor a perfect model would reach;
- ``mean-image``: the dataset's mean training image repeated, the ceiling of total mode collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .distances import frechet_distance, kernel_inception_distance
from .diversity import class_histogram, pixel_diversity
from .features import FeatureSpace, LabeledImages
from .manifold import density_coverage, precision_recall


@dataclass(frozen=True)
class QualityConfig:
    """How samples are measured; results are comparable only between runs that share it.

    ``n_samples`` / ``n_reference`` cap the images used (a seeded subset; None keeps all). The k values
    are the papers' defaults; KID uses subsets of ``kid_subset_size`` (clipped to the set sizes), as
    clean-fid and torch-fidelity do.
    """

    n_samples: int | None = None
    n_reference: int | None = None
    precision_recall_k: int = 3
    density_coverage_k: int = 5
    kid_subset_size: int = 1000
    kid_num_subsets: int = 100
    diversity_max_images: int = 500
    seed: int = 0


def _subset(images: Tensor, n: int | None, seed: int) -> Tensor:
    """The first ``n`` of a seeded permutation, or every image when ``n`` is None or not smaller."""
    if n is None or n >= images.shape[0]:
        return images
    return images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


def _reference(
    reference: Tensor, extractor: FeatureSpace, config: QualityConfig
) -> tuple[Tensor, Tensor | None]:
    """Features of the (subset of) reference images, and their predicted classes with a classifier."""
    return _embed(_subset(reference, config.n_reference, config.seed + 1), extractor)


def _embed(images: Tensor, extractor: FeatureSpace) -> tuple[Tensor, Tensor | None]:
    """Features, and predicted classes when the feature space is a classifier (one pass for both)."""
    both = getattr(extractor, "features_and_labels", None)
    return both(images) if callable(both) else (extractor.features(images), None)


def _measure(
    samples: Tensor,
    extractor: FeatureSpace,
    ref_features: Tensor,
    ref_labels: Tensor | None,
    config: QualityConfig,
) -> dict[str, float]:
    samples = _subset(samples, config.n_samples, config.seed)
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN or infinite values: no metric is defined for them")
    smallest = max(config.precision_recall_k, config.density_coverage_k) + 1
    if min(samples.shape[0], ref_features.shape[0]) < smallest:
        raise ValueError(
            f"the k-NN metrics need at least {smallest} samples and reference images, got "
            f"{samples.shape[0]} and {ref_features.shape[0]}"
        )
    feats, labels = _embed(samples, extractor)
    kid = kernel_inception_distance(
        feats, ref_features, config.kid_subset_size, config.kid_num_subsets, seed=config.seed
    )
    pr = precision_recall(ref_features, feats, k=config.precision_recall_k)
    dc = density_coverage(ref_features, feats, k=config.density_coverage_k)
    metrics = {
        "fd": frechet_distance(feats, ref_features),
        "kid_mean": kid.mean,
        "kid_se": kid.standard_error,
        "kid_std": kid.std,
        "precision": pr.precision,
        "recall": pr.recall,
        "density": dc.density,
        "coverage": dc.coverage,
    }
    if labels is not None and ref_labels is not None:
        hist = class_histogram(labels, extractor.num_classes, ref_labels)  # type: ignore[attr-defined]
        metrics.update(
            class_entropy=hist.normalized_entropy,
            class_entropy_nats=hist.entropy,
            missing_classes=float(hist.missing_classes),
            class_tv=float(hist.tv_to_reference),
        )
    metrics.update(
        pixel_diversity=pixel_diversity(samples, config.diversity_max_images, seed=config.seed),
        n_samples=float(samples.shape[0]),
        n_reference=float(ref_features.shape[0]),
    )
    return metrics


def evaluate_samples(
    samples: Tensor,
    reference: Tensor,
    extractor: FeatureSpace,
    config: QualityConfig | None = None,
) -> dict[str, float]:
    """Every quality metric of ``samples`` [N, C, H, W] in [-1, 1] against real ``reference`` images.

    Keys: ``fd`` (Fréchet distance), ``kid_mean`` / ``kid_se`` / ``kid_std`` (KID, unscaled),
    ``precision`` / ``recall`` (k = 3), ``density`` / ``coverage`` (k = 5), all in ``extractor``'s
    feature space, whose ``name`` the caller stores beside them; with a classifier extractor also
    ``class_entropy`` (H / log K), ``class_entropy_nats``, ``missing_classes`` and ``class_tv`` (total
    variation to the classes predicted for the reference images); then ``pixel_diversity`` (mean pairwise
    RMS pixel distance) and the set sizes. Deterministic for a given ``config.seed``.
    """
    config = config or QualityConfig()
    ref_features, ref_labels = _reference(reference, extractor, config)
    return _measure(samples, extractor, ref_features, ref_labels, config)


def reference_rows(
    data: LabeledImages,
    extractor: FeatureSpace,
    n: int,
    seed: int = 0,
    config: QualityConfig | None = None,
) -> dict[str, dict[str, float]]:
    """The ``real`` floor and the ``mean-image`` ceiling against ``data.test_images``, as evaluate_samples.

    ``real`` takes ``n`` training images (a subset drawn with ``seed``; all of them if there are fewer).
    ``mean-image`` repeats the mean training image ``n`` times; on such a set the metrics take limiting
    values rather than failing: its covariance is 0, so ``fd`` = ||mu - mu_ref||^2 + Tr(S_ref) (a point
    mass against the reference Gaussian); its k-NN radii are 0, so ``recall`` is 0 and precision, density
    and coverage say whether that one point falls inside the real balls; ``pixel_diversity`` is 0 and the
    class histogram has one class. Pass the ``config`` the runs use, so the rows are measured the same way.
    """
    config = config or QualityConfig()
    ref_features, ref_labels = _reference(data.test_images, extractor, config)
    train = data.train_images
    real = _subset(train, n, seed)
    mean_image = train.mean(dim=0, keepdim=True).expand(min(n, train.shape[0]), -1, -1, -1).contiguous()
    return {
        "real": _measure(real, extractor, ref_features, ref_labels, config),
        "mean-image": _measure(mean_image, extractor, ref_features, ref_labels, config),
    }
