from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics import manifold
from bench.metrics.manifold import density_coverage, knn_radii, precision_recall


def brute_radii(x: np.ndarray, k: int) -> list[float]:
    return [sorted(np.linalg.norm(x - xi, axis=1))[k] for xi in x]  # index 0 is the point itself


def brute_force(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """Kynkäänniemi et al. 2019 and Naeem et al. 2020 written as loops over points and balls."""

    def inside(p, centres, radii):
        return [np.linalg.norm(p - c) <= r for c, r in zip(centres, radii, strict=True)]

    r_real, r_fake = brute_radii(real, k_pr), brute_radii(fake, k_pr)
    r_dc = brute_radii(real, k_dc)
    return {
        "precision": np.mean([any(inside(f, real, r_real)) for f in fake]),
        "recall": np.mean([any(inside(r, fake, r_fake)) for r in real]),
        "density": sum(sum(inside(f, real, r_dc)) for f in fake) / (k_dc * len(fake)),
        "coverage": np.mean(
            [any(np.linalg.norm(f - real[i]) <= r_dc[i] for f in fake) for i in range(len(real))]
        ),
    }


def measure(real, fake, k_pr=3, k_dc=5) -> dict[str, float]:
    pr, dc = precision_recall(real, fake, k=k_pr), density_coverage(real, fake, k=k_dc)
    return {"precision": pr.precision, "recall": pr.recall, "density": dc.density, "coverage": dc.coverage}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_sets(seed):
    rng = np.random.default_rng(seed)
    real, fake = rng.normal(size=(25, 3)), rng.normal(0.4, 1.3, size=(20, 3))
    got, expected = measure(real, fake), brute_force(real, fake, 3, 5)
    assert got == pytest.approx(expected, abs=1e-12)


def test_row_blocks_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 4)), rng.normal(0.2, 1.0, size=(33, 4))
    whole = measure(real, fake)
    monkeypatch.setattr(manifold, "ROW_BLOCK", 7)
    assert measure(real, fake) == whole


def test_hand_made_points_on_a_line():
    """real = 0, 1, 2, 3 (k = 1 radii all 1); fake = 0.5 (in balls of 0 and 1) and 10 (in none)."""
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    got = measure(real, fake, k_pr=1, k_dc=1)
    # fake radii are both 9.5, so every real point is within a fake ball
    assert got == {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.5}


def test_identical_sets_are_perfect():
    x = np.random.default_rng(0).normal(size=(50, 6))
    got = measure(x, x.copy(), k_pr=3, k_dc=5)
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0
    assert got["density"] == pytest.approx(1 + 1 / 5)  # own ball plus, on average, k others


def test_far_apart_sets_score_zero():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 100.0
    assert measure(real, fake) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_collapsed_fake_set_has_zero_radii_and_no_recall():
    real = np.random.default_rng(2).normal(size=(30, 4))
    fake = np.tile(real.mean(0, keepdims=True), (20, 1))
    assert knn_radii(fake, 3) == pytest.approx(np.zeros(20), abs=0)
    got = measure(real, fake)
    assert got["recall"] == 0.0
    assert all(np.isfinite(list(got.values())))


def test_accepts_torch_tensors_and_rejects_bad_k():
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x, k=2).precision == 1.0
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(x, x, k=10)
    with pytest.raises(ValueError, match="dimensions differ"):
        density_coverage(x, torch.zeros(5, 2))
