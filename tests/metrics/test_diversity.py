from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.metrics.diversity import class_histogram, pixel_diversity


def test_class_histogram_of_a_uniform_spread():
    hist = class_histogram(torch.arange(10).repeat(3), 10)
    assert hist.counts == (3,) * 10
    assert hist.entropy == pytest.approx(math.log(10))
    assert hist.normalized_entropy == pytest.approx(1.0)
    assert hist.missing_classes == 0
    assert hist.kl_to_uniform == pytest.approx(0.0, abs=1e-12)
    assert hist.tv_to_reference is None


def test_class_histogram_of_a_single_class():
    hist = class_histogram(np.full(7, 3), 5)
    assert hist.counts == (0, 0, 0, 7, 0)
    assert hist.entropy == 0.0 and math.copysign(1, hist.entropy) == 1
    assert hist.missing_classes == 4
    assert hist.kl_to_uniform == pytest.approx(math.log(5))


def test_class_histogram_known_mixture_and_reference():
    hist = class_histogram([0, 0, 1, 1, 1, 1, 2, 2], 4, reference_labels=[0, 1, 2, 3])
    p = np.array([0.25, 0.5, 0.25])
    assert hist.entropy == pytest.approx(-(p * np.log(p)).sum())  # 1.5 ln 2
    assert hist.normalized_entropy == pytest.approx(1.5 * math.log(2) / math.log(4))
    assert hist.missing_classes == 1
    assert hist.tv_to_reference == pytest.approx(0.5 * (0 + 0.25 + 0 + 0.25))


def test_class_histogram_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        class_histogram([0, 3], 3)
    with pytest.raises(ValueError, match="integers"):
        class_histogram(np.array([0.5]), 3)


def test_pixel_diversity_known_values():
    assert pixel_diversity(torch.zeros(5, 1, 4, 4)) == 0.0
    black_white = torch.stack([-torch.ones(3, 8, 8), torch.ones(3, 8, 8)])
    assert pixel_diversity(black_white) == pytest.approx(2.0)
    # three images at 0, 1 and 3 (constant): RMS distances 1, 3, 2 -> mean 2
    levels = torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    assert pixel_diversity(levels) == pytest.approx(2.0)


def test_pixel_diversity_subset_is_seeded_and_bounded():
    x = torch.rand(40, 1, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a, b = pixel_diversity(x, max_images=10, seed=1), pixel_diversity(x, max_images=10, seed=1)
    assert a == b != pixel_diversity(x, max_images=10, seed=2)
    # uniform pixels on [-1, 1]: E|x - y|^2 = 2/3 per pixel, so the RMS distance is near sqrt(2/3)
    assert pixel_diversity(x) == pytest.approx(math.sqrt(2 / 3), rel=0.05)
    with pytest.raises(ValueError, match="at least 2"):
        pixel_diversity(x[:1])
