"""Metrics for class-conditional samples: is each sample of the class it was asked for, and does each class
look like the real images of that class.

The metrics of :mod:`.quality` pool all samples, so a model that draws a fine "7" whenever it is asked for a
"1" (and the reverse) scores there as well as a perfect one. Here every sample carries the class it was
generated for, and two things are measured in the dataset's classifier feature space (:mod:`.features`):

- ``class_accuracy``: how often the classifier agrees with the class asked for;
- the Fréchet distance per class, between the samples asked for class k and the real images of class k,
  summarised by its mean and by its worst class, so one class the model cannot draw is not averaged away.

Per-class sets are small and FD is biased upward for small sets, so the numbers only mean something beside
the ``real`` floor and the ``class-mean-image`` ceiling of :func:`class_reference_rows`, measured with the
same per-class counts.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from .distances import frechet_distance


class ClassifierSpace(Protocol):
    """A feature space that also classifies (``bench.metrics.FeatureExtractor`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def num_classes(self) -> int: ...
    def features_and_labels(self, images: Tensor) -> tuple[Tensor, Tensor]: ...


def _classifier(extractor: object) -> ClassifierSpace:
    """``extractor`` itself, once it is known to classify: the metrics here need its predicted classes."""
    if not callable(getattr(extractor, "features_and_labels", None)) or not hasattr(extractor, "num_classes"):
        name = getattr(extractor, "name", type(extractor).__name__)
        raise ValueError(
            f"class-conditional metrics need a classifier feature space, one with features_and_labels and "
            f"num_classes (as bench.metrics.FeatureExtractor); {name!r} has not"
        )
    return extractor  # type: ignore[return-value]


def _check_images(images: Tensor, what: str) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{what} must be a [N, C, H, W] tensor of images in [-1, 1], got {got}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what} contain NaN or infinite values: no metric is defined for them")


def _check_labels(labels: Tensor, n: int | None, what: str, num_classes: int) -> Tensor:
    """``labels`` on the CPU, once known to be int64 [n] (any length when n is None) and valid classes."""
    length = "N" if n is None else str(n)
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(
            f"{what} must be an int64 tensor of shape [{length}], one class per image; got {got}"
        )
    if n is not None and labels.shape[0] != n:
        raise ValueError(f"{what} must have one class per image, {n}, got {labels.shape[0]}")
    labels = labels.detach().cpu()
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if outside.numel():
        raise ValueError(
            f"{what} must be class indices in [0, {num_classes}) (the classifier's classes), "
            f"got {outside[0].item()}"
        )
    return labels


def class_conditional_scores(
    samples: Tensor,
    asked: Tensor,
    reference_images: Tensor,
    reference_labels: Tensor,
    extractor: ClassifierSpace,
    *,
    min_per_class: int = 2,
) -> dict[str, float]:
    """Class accuracy and per-class Fréchet distance of ``samples`` [N, C, H, W] in [-1, 1] generated for the
    classes ``asked`` (int64 [N]), against real ``reference_images`` with their true ``reference_labels``.

    Keys, all in ``extractor``'s feature space:

    - ``class_accuracy``: fraction of samples whose predicted class (argmax) is the class asked for;
    - ``fd_class_mean`` / ``fd_class_worst``: mean and max over the classes present in ``asked`` of the FD
      between the features of the samples asked for k and those of the reference images labelled k;
    - ``fd_class_worst_index``: that worst class (the lowest index on a tie), as a float like every value;
    - ``classes_scored``: how many classes the mean is over.

    Samples are grouped by the class asked for, never by the predicted one: a sample of the wrong class
    must count against its class's FD. Each class needs ``min_per_class`` (at least 2, for a covariance)
    samples and reference images; a class with fewer is an error rather than a silently skipped class.
    """
    classifier = _classifier(extractor)
    if min_per_class < 2:
        raise ValueError(f"min_per_class must be >= 2 (a covariance needs two vectors), got {min_per_class}")
    _check_images(samples, "samples")
    _check_images(reference_images, "reference_images")
    if samples.shape[0] == 0:
        raise ValueError("no samples to score: samples has 0 images")
    if samples.shape[1:] != reference_images.shape[1:]:
        raise ValueError(
            f"samples and reference_images must share [C, H, W], got {tuple(samples.shape[1:])} and "
            f"{tuple(reference_images.shape[1:])}"
        )
    k = int(classifier.num_classes)
    asked = _check_labels(asked, samples.shape[0], "asked", k)
    reference_labels = _check_labels(reference_labels, reference_images.shape[0], "reference_labels", k)
    n_asked = torch.bincount(asked, minlength=k).tolist()
    n_ref = torch.bincount(reference_labels, minlength=k).tolist()
    classes = asked.unique().tolist()  # sorted
    short = [c for c in classes if min(n_asked[c], n_ref[c]) < min_per_class]
    if short:
        raise ValueError(
            f"each class asked for needs at least min_per_class={min_per_class} samples and as many "
            "reference images of it; "
            + ", ".join(f"class {c} has {n_asked[c]} samples and {n_ref[c]} reference images" for c in short)
        )

    feats, predicted = classifier.features_and_labels(samples)  # one pass for every class
    ref_feats, _ = classifier.features_and_labels(reference_images)
    feats, ref_feats = feats.cpu(), ref_feats.cpu()
    fd = {c: frechet_distance(feats[asked == c], ref_feats[reference_labels == c]) for c in classes}
    worst = max(fd, key=fd.__getitem__)
    return {
        "class_accuracy": float((predicted.cpu() == asked).double().mean()),
        "fd_class_mean": math.fsum(fd.values()) / len(fd),
        "fd_class_worst": fd[worst],
        "fd_class_worst_index": float(worst),
        "classes_scored": float(len(fd)),
    }


def class_reference_rows(
    images: Tensor,
    labels: Tensor,
    reference_images: Tensor,
    reference_labels: Tensor,
    extractor: ClassifierSpace,
    asked: Tensor,
    *,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """The floor and the ceiling of :func:`class_conditional_scores` for a run that asked for ``asked``.

    Both rows are scored against the same reference with the same per-class counts as the run, since
    per-class FD depends strongly on those counts:

    - ``real``: for each class k in ``asked``, as many images of class k from ``images`` / ``labels``
      (typically the training split) as ``asked`` has k's, drawn without replacement (all of them when
      there are fewer), classes in ascending order from one ``torch.Generator`` seeded with ``seed``;
    - ``class-mean-image``: the mean image of class k repeated as many times, a model that collapsed to
      one image per class. Its covariance is 0, so each class's FD is the limiting value
      ||mu_k - mu_ref_k||^2 + Tr(S_ref_k), finite.
    """
    classifier = _classifier(extractor)
    k = int(classifier.num_classes)
    _check_images(images, "images")
    labels = _check_labels(labels, images.shape[0], "labels", k)
    asked = _check_labels(asked, None, "asked", k)
    counts = torch.bincount(asked, minlength=k)
    generator = torch.Generator().manual_seed(seed)
    real, real_labels = [], []
    for c in asked.unique().tolist():
        pool = (labels == c).nonzero().squeeze(1)
        if pool.numel() == 0:
            raise ValueError(
                f"class {c} is asked for but images has none labelled {c}; pass all classes asked"
            )
        n = int(counts[c])
        drawn = pool[torch.randperm(pool.numel(), generator=generator)[:n]]
        real.append(images[drawn.to(images.device)])
        real_labels.append(torch.full((drawn.numel(),), c, dtype=torch.int64))

    def score(samples: Tensor, classes: Tensor) -> dict[str, float]:
        return class_conditional_scores(samples, classes, reference_images, reference_labels, classifier)

    means = class_mean_images(images, labels, asked)
    return {"real": score(torch.cat(real), torch.cat(real_labels)), "class-mean-image": score(means, asked)}


def class_mean_images(images: Tensor, labels: Tensor, asked: Tensor) -> Tensor:
    """The mean image of each class ``asked`` for, once per entry of ``asked`` and in its order: the samples
    of a model that collapsed to one image per class (the ceiling of a conditional model)."""
    means = {c: images[(labels == c).to(images.device)].mean(0) for c in asked.unique().tolist()}
    return torch.stack([means[c] for c in asked.tolist()])
