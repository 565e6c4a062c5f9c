"""Scoring a run's samples: every quality metric in the dataset's own classifier feature space beside the
real-data floor and the mean-image ceiling, and, for denoisers trained on all timesteps, the NLL bound.

The same ruler scores samples from any other code (``bench eval --samples``), so implementations can be
compared without this project's models.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import datasets
from ..images import array_to_tensor, load_samples_npz
from ..metrics import QualityConfig, evaluate_samples, get_feature_extractor, reference_rows
from ..metrics.conditional import class_conditional_scores, class_mean_images, class_reference_rows
from ..metrics.fidelity import StandardInception

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass(frozen=True)
class EvalConfig:
    """Sizes that trade time for precision; every run evaluated with the same values is comparable."""

    kid_subset_size: int = 100
    kid_num_subsets: int = 100
    nll_images: int = 200
    nll_timesteps: int = 32
    seed: int = 0

    def quality(self) -> QualityConfig:
        return QualityConfig(
            kid_subset_size=self.kid_subset_size, kid_num_subsets=self.kid_num_subsets, seed=self.seed
        )


def score_samples(
    samples: torch.Tensor,
    data: datasets.ImageData,
    config: EvalConfig | None = None,
    *,
    progress: bool = False,
    references: dict[str, dict[str, float]] | None = None,
    labels: torch.Tensor | None = None,
) -> dict:
    """Quality metrics of ``samples`` against ``data``'s test images, with the two reference rows (measured
    here unless ``references`` from an earlier call with as many samples are given).

    ``labels``, the class each sample was asked to be, adds the class-conditional metrics (class accuracy,
    per-class FD: :mod:`bench.metrics.conditional`), with their floor (real training images of each class,
    in the row ``real``) and ceiling (each class's mean image, the row ``class-mean-image``)."""
    config = config or EvalConfig()
    if tuple(samples.shape[1:]) != data.image_shape:
        raise ValueError(
            f"samples have shape {tuple(samples.shape[1:])} but dataset {data.name!r} has images of shape "
            f"{data.image_shape}"
        )
    start = time.perf_counter()
    extractor = get_feature_extractor(data.name, data, progress=progress)
    quality_cfg = config.quality()
    quality = evaluate_samples(samples, data.test_images, extractor, quality_cfg)
    if references is None:
        references = reference_rows(data, extractor, n=samples.shape[0], seed=config.seed, config=quality_cfg)
        if labels is not None:
            references = with_class_rows(references, data, extractor, labels, config, quality_cfg)
    if labels is not None:
        asked = class_conditional_scores(samples, labels, data.test_images, data.test_labels, extractor)
        quality.update(asked)
    return {
        "quality": quality,
        "references": references,
        "feature_space": {"name": extractor.name, "test_accuracy": extractor.test_accuracy},
        "eval_config": asdict(config),
        "seconds": time.perf_counter() - start,
    }


def with_class_rows(
    references: dict[str, dict[str, float]],
    data: datasets.ImageData,
    extractor: object,
    labels: torch.Tensor,
    config: EvalConfig,
    quality_cfg: QualityConfig,
) -> dict[str, dict[str, float]]:
    """The reference rows with the class-conditional metrics' floor added to ``real`` and their ceiling, the
    class-mean images (as many of each class as ``labels`` asks, scored with every metric), as its own row."""
    if data.train_labels is None or data.test_labels is None:
        raise ValueError(f"class-conditional metrics need a labelled dataset; {data.name!r} has no labels")
    rows = class_reference_rows(
        data.train_images,
        data.train_labels,
        data.test_images,
        data.test_labels,
        extractor,
        labels,
        seed=config.seed,
    )
    means = class_mean_images(data.train_images, data.train_labels, labels)
    everything = evaluate_samples(means, data.test_images, extractor, quality_cfg)
    ceiling = {**everything, **rows["class-mean-image"]}
    return {**references, "real": {**references["real"], **rows["real"]}, "class-mean-image": ceiling}


def standard_scores(
    samples: torch.Tensor, data: datasets.ImageData, extractor: StandardInception, *, progress: bool = False
) -> dict:
    """Standard FID, IS and KID of ``samples`` against ``data``'s training split (its features cached)."""
    from ..metrics.fidelity import reference_features, standard_metrics

    reference = reference_features(extractor, data.name, data.train_images, progress=progress)
    pool, logits = extractor.features(samples, progress=progress)
    return standard_metrics(pool, logits, reference)


def load_external_samples(path: Path) -> torch.Tensor:
    """Samples written by any code: an .npz/.npy array (uint8 NHWC or float NCHW in [-1, 1]) or a folder of
    image files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no samples at {str(path)!r}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{str(path)!r} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        arrays = []
        for file in files:
            with Image.open(file) as img:
                arrays.append(
                    np.asarray(img.convert("L") if img.mode in ("L", "I;16", "1") else img.convert("RGB"))
                )
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"the images in {str(path)!r} have different sizes: {sorted(shapes)}")
        return array_to_tensor(np.stack(arrays), str(path))
    if path.suffix == ".npz":
        return load_samples_npz(path)
    if path.suffix == ".npy":
        return array_to_tensor(np.load(path, allow_pickle=False), str(path))
    raise ValueError(f"samples must be an .npz or .npy file or a folder of images, got {str(path)!r}")
