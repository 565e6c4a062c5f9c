from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from bench.metrics.quality import QualityConfig, evaluate_samples, reference_rows

CONFIG = QualityConfig(kid_subset_size=200, kid_num_subsets=20)


@pytest.fixture(scope="module")
def rows(digits_data, digits_extractor) -> dict[str, dict[str, float]]:
    return reference_rows(digits_data, digits_extractor, n=300, seed=0, config=CONFIG)


def test_real_floor_is_far_below_the_mean_image_ceiling(rows):
    real, mean = rows["real"], rows["mean-image"]
    assert set(real) == set(mean)
    assert all(math.isfinite(v) for row in rows.values() for v in row.values())
    assert real["fd"] * 10 < mean["fd"]
    assert abs(real["kid_mean"]) * 10 < mean["kid_mean"]
    assert real["precision"] > 0.8 and real["recall"] > 0.8 and real["coverage"] > 0.8
    assert 0.8 < real["density"] < 1.2
    assert real["class_entropy"] > 0.95 and real["missing_classes"] == 0
    assert real["n_samples"] == mean["n_samples"] == 300 and real["n_reference"] == 300


def test_mean_image_row_is_total_collapse(rows):
    mean = rows["mean-image"]
    assert mean["pixel_diversity"] == 0.0
    assert mean["class_entropy"] == 0.0 and mean["missing_classes"] == 9
    assert mean["recall"] == 0.0
    assert mean["class_tv"] > 0.8


def test_evaluate_samples_is_deterministic_and_measures_like_the_real_row(
    digits_data, digits_extractor, rows
):
    g = torch.Generator().manual_seed(0)
    real = digits_data.train_images[torch.randperm(len(digits_data.train_images), generator=g)[:300]]
    first = evaluate_samples(real, digits_data.test_images, digits_extractor, CONFIG)
    assert first == evaluate_samples(real, digits_data.test_images, digits_extractor, CONFIG)
    assert first == rows["real"]  # reference_rows draws its real subset the same way


def test_caps_on_sample_and_reference_counts(digits_data, digits_extractor):
    config = replace(CONFIG, n_samples=50, n_reference=80)
    got = evaluate_samples(digits_data.train_images, digits_data.test_images, digits_extractor, config)
    assert got["n_samples"] == 50 and got["n_reference"] == 80


def test_noise_scores_worse_than_real_images(digits_data, digits_extractor, rows):
    noise = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    got = evaluate_samples(noise, digits_data.test_images, digits_extractor, CONFIG)
    assert got["fd"] > 10 * rows["real"]["fd"]
    assert got["precision"] < 0.2
    assert got["pixel_diversity"] > rows["real"]["pixel_diversity"]


class PixelFeatures:
    """A feature space without a classifier: flattened pixels."""

    name = "pixels"

    def features(self, images: Tensor) -> Tensor:
        return images.flatten(1)


def test_feature_space_without_classifier_skips_class_metrics(digits_data):
    got = evaluate_samples(digits_data.train_images[:100], digits_data.test_images, PixelFeatures(), CONFIG)
    assert "class_entropy" not in got and "missing_classes" not in got
    assert {
        "fd",
        "kid_mean",
        "kid_se",
        "precision",
        "recall",
        "density",
        "coverage",
        "pixel_diversity",
    } <= set(got)


def test_too_few_samples_is_a_clear_error(digits_data, digits_extractor):
    with pytest.raises(ValueError, match="at least 6 samples"):
        evaluate_samples(digits_data.train_images[:5], digits_data.test_images, digits_extractor, CONFIG)


def test_non_finite_samples_are_a_clear_error(digits_data, digits_extractor):
    samples = digits_data.train_images[:20].clone()
    samples[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_samples(samples, digits_data.test_images, digits_extractor, CONFIG)
