from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.metrics import distances
from bench.metrics.distances import frechet_distance, kernel_inception_distance


def gaussian_sample(mu: np.ndarray, var: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points whose sample mean is exactly mu and whose (N - 1) sample covariance is exactly diag(var)."""
    z = np.random.default_rng(seed).normal(size=(n, len(mu)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # cov(z) = I
    return mu + z * np.sqrt(var)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    a, b = gaussian_sample(mu_a, var_a, 50, 1), gaussian_sample(mu_b, var_b, 80, 2)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(40, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_pytorch_fid_formula_with_scipy_sqrtm():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 10)) @ rng.normal(size=(10, 10))
    b = rng.normal(size=(150, 10)) @ rng.normal(size=(10, 10)) + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(
        expected, rel=1e-4
    )


def test_frechet_distance_of_identical_points_is_finite_and_closed_form():
    """A collapsed set has covariance 0, so FD = ||mu_a - mu_b||^2 + Tr(S_b); singular S_b is fine too."""
    rng = np.random.default_rng(2)
    point = np.tile(rng.normal(size=(1, 5)), (30, 1))
    b = rng.normal(size=(40, 5))
    b[:, 4] = 1.0  # singular covariance
    expected = ((point[0] - b.mean(0)) ** 2).sum() + np.trace(np.cov(b, rowvar=False))
    assert frechet_distance(point, b) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(b, point) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((5, 2)))


def brute_force_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y/d + 1)^3 by explicit loops (Binkowski et al. 2018, eq. 2)."""
    d, m, n = a.shape[1], len(a), len(b)

    def k(x, y):
        return (float(np.dot(x, y)) / d + 1.0) ** 3

    kaa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kbb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kab = sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
    return kaa + kbb - 2 * kab


def test_kid_on_whole_sets_equals_brute_force_mmd():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 4)), rng.normal(0.3, 1.2, size=(10, 4))
    kid = kernel_inception_distance(a, b, subset_size=50, num_subsets=4)
    assert kid.subset_size == 10
    assert kid.mean == pytest.approx(brute_force_mmd2(a, b), rel=1e-10)
    assert kid.std == pytest.approx(0.0, abs=1e-10)  # every subset is the whole set


def test_kid_subsets_follow_the_documented_draws():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(12, 3)), rng.normal(0.5, 1.0, size=(9, 3))
    kid = kernel_inception_distance(a, b, subset_size=6, num_subsets=5, seed=3)
    draws = np.random.default_rng(3)
    estimates = []
    for _ in range(5):
        ia, ib = draws.choice(12, 6, replace=False), draws.choice(9, 6, replace=False)
        estimates.append(brute_force_mmd2(a[ia], b[ib]))
    assert kid.mean == pytest.approx(np.mean(estimates), rel=1e-10)
    assert kid.std == pytest.approx(np.std(estimates, ddof=1), rel=1e-8)
    assert kid.standard_error == pytest.approx(kid.std / np.sqrt(5), rel=1e-12)


def test_kid_without_the_cached_kernel_gives_the_same_numbers(monkeypatch):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(25, 5))
    cached = kernel_inception_distance(a, b, subset_size=10, num_subsets=7, seed=4)
    monkeypatch.setattr(distances, "MAX_CACHED_KERNEL_ENTRIES", 0)
    direct = kernel_inception_distance(a, b, subset_size=10, num_subsets=7, seed=4)
    assert direct.mean == pytest.approx(cached.mean, rel=1e-10)
    assert direct.std == pytest.approx(cached.std, rel=1e-8)


def test_kid_is_unbiased_around_zero_for_one_distribution():
    """Independent pairs of samples of one Gaussian: the estimates average to 0 and take both signs."""
    rng = np.random.default_rng(0)
    shifted = kernel_inception_distance(rng.normal(size=(100, 8)), rng.normal(0.5, 1, (100, 8)), 100, 1)
    estimates = np.array(
        [
            kernel_inception_distance(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)), 100, 1).mean
            for _ in range(40)
        ]
    )
    assert (estimates < 0).any() and (estimates > 0).any()
    assert abs(estimates.mean()) < 3 * estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean()) < 0.02 * shifted.mean


def test_kid_is_seeded():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(60, 4))
    assert kernel_inception_distance(a, b, 20, 10, seed=1) == kernel_inception_distance(a, b, 20, 10, seed=1)
    assert kernel_inception_distance(a, b, 20, 10, seed=1) != kernel_inception_distance(a, b, 20, 10, seed=2)
