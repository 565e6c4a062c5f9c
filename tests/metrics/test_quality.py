from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.metrics.quality import QualityConfig, evaluate_samples, reference_rows
from tests.metrics.helpers import Images
from tests.metrics.test_distances import brute_force_mmd2
from tests.metrics.test_manifold import brute_force

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


def test_evaluate_samples_is_deterministic(digits_data, digits_extractor):
    g = torch.Generator().manual_seed(0)
    real = digits_data.train_images[torch.randperm(len(digits_data.train_images), generator=g)[:300]]
    first = evaluate_samples(real, digits_data.test_images, digits_extractor, CONFIG)
    assert first == evaluate_samples(real, digits_data.test_images, digits_extractor, CONFIG)


class QuadrantMeans:
    """A feature space without a classifier: the mean of each 4 x 4 quadrant of an 8 x 8 image."""

    name = "quadrants"

    def features(self, images: Tensor) -> Tensor:
        return F.avg_pool2d(images, 4).flatten(1)


def by_definition(samples: Tensor, reference: Tensor) -> dict[str, float]:
    """Every metric of ``samples`` against ``reference`` in QuadrantMeans' space, from its definition: FD
    with scipy's sqrtm (pytorch-fid's formula), KID on whole sets and precision / recall / density /
    coverage as loops (test_distances' and test_manifold's brute forces, real = reference), the mean
    pairwise RMS pixel distance as a loop."""
    fake = QuadrantMeans().features(samples).double().numpy()
    real = QuadrantMeans().features(reference).double().numpy()
    s_f, s_r = np.cov(fake, rowvar=False), np.cov(real, rowvar=False)
    fd = ((fake.mean(0) - real.mean(0)) ** 2).sum() + np.trace(s_f) + np.trace(s_r)
    fd -= 2 * np.trace(scipy.linalg.sqrtm(s_f @ s_r).real)
    pixels = samples.flatten(1).double()
    n = len(pixels)
    pairs = [(pixels[i] - pixels[j]).pow(2).mean().sqrt().item() for i in range(n) for j in range(i + 1, n)]
    return {
        "fd": fd,
        "kid_mean": brute_force_mmd2(fake, real),
        **brute_force(real, fake, 3, 5),
        "pixel_diversity": math.fsum(pairs) / len(pairs),
        "n_samples": n,
        "n_reference": len(reference),
    }


def test_each_metric_is_its_definition_and_the_rows_use_the_documented_sets(digits_data):
    """30 samples against 30 reference images, so KID's subsets are the whole sets; then reference_rows'
    two rows: 30 training images drawn with torch.randperm(seed), and the mean training image 30 times."""
    config = QualityConfig(kid_subset_size=30, kid_num_subsets=3)
    # mirrored digits: near the data but off it, so precision, recall and coverage sit at neither 0 nor 1
    samples, reference = digits_data.train_images[:30].flip(-1), digits_data.test_images[:30]
    got = evaluate_samples(samples, reference, QuadrantMeans(), config)
    assert got["kid_std"] == pytest.approx(0.0, abs=1e-12)
    expected = by_definition(samples, reference)
    assert {k: got[k] for k in expected} == pytest.approx(expected, rel=1e-9, abs=1e-12)

    data = Images("digits", digits_data.train_images[:200], None, reference, None, None)
    rows = reference_rows(data, QuadrantMeans(), n=30, seed=4, config=config)
    drawn = data.train_images[torch.randperm(200, generator=torch.Generator().manual_seed(4))[:30]]
    expected = by_definition(drawn, reference)
    assert {k: rows["real"][k] for k in expected} == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the mean image, 30 times: covariance 0, so FD = ||mu - mu_ref||^2 + Tr(S_ref); no spread, no recall
    mean = rows["mean-image"]
    point = QuadrantMeans().features(data.train_images.mean(0, keepdim=True)).double().numpy()[0]
    real = QuadrantMeans().features(reference).double().numpy()
    closed = ((point - real.mean(0)) ** 2).sum() + np.trace(np.cov(real, rowvar=False))
    assert mean["fd"] == pytest.approx(closed, rel=1e-9)
    assert mean["pixel_diversity"] == 0.0 and mean["recall"] == 0.0 and mean["n_samples"] == 30


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
