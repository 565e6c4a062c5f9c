"""Distances between two sets of features: the Fréchet distance and the kernel (KID) distance.

Both are pure functions of [N, D] feature matrices (numpy or torch), computed in float64. Lower is
better and 0 means "same distribution" (for KID, in expectation: its estimator is unbiased and so can be
slightly negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def as_float64(features: ArrayLike, name: str = "features") -> np.ndarray:
    """A [N, D] float64 numpy copy of a numpy array or (CPU or GPU) torch tensor."""
    if hasattr(features, "detach"):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a [N, D] matrix, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _pair(feats_a: ArrayLike, feats_b: ArrayLike, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_float64(feats_a, "feats_a"), as_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    if min(len(a), len(b)) < min_rows:
        raise ValueError(f"need at least {min_rows} feature vectors per set, got {len(a)} and {len(b)}")
    return a, b


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; round-off negative eigenvalues become 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """Tr((S_a S_b)^{1/2}) of two covariances, as the symmetric Tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}).

    S_a S_b is not symmetric, which is why pytorch-fid's ``scipy.linalg.sqrtm`` can return complex values
    and needs an epsilon on the diagonal for singular covariances. S_a^{1/2} S_b S_a^{1/2} is symmetric
    PSD and similar to S_a S_b, so the same eigenvalues come from ``eigh``, real and >= 0 up to round-off,
    for singular matrices too (a set of identical vectors has S = 0).
    """
    root_a = _psd_sqrt(sigma_a)
    values = np.linalg.eigvalsh(root_a @ sigma_b @ root_a)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID, Heusel et al. 2017, eq. 6).

        FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})

    with the unbiased (N - 1) covariances, as pytorch-fid. It is the 2-Wasserstein distance squared
    between the two Gaussians, and it is biased upward for finite N, so only compare numbers computed
    from the same set sizes. A set of identical vectors (S = 0) is allowed: then FD is
    ``||mu_a - mu_b||^2 + Tr(S_b)``, the distance of a point mass to the other Gaussian.
    """
    a, b = _pair(feats_a, feats_b, min_rows=2)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    mean_term = float(((mu_a - mu_b) ** 2).sum())
    fd = mean_term + float(np.trace(sigma_a) + np.trace(sigma_b)) - 2.0 * trace_sqrt_product(sigma_a, sigma_b)
    return max(fd, 0.0)  # round-off can leave -1e-12 for identical sets


@dataclass(frozen=True)
class KIDResult:
    """KID estimate averaged over random subsets.

    ``std`` is the standard deviation (ddof=1) of the per-subset estimates and ``standard_error`` is
    ``std / sqrt(num_subsets)``: the Monte-Carlo error of the subset average around its limit, the average
    over every possible pair of subsets of these feature sets. It leaves out the variation from drawing new
    feature sets, which ``std`` (the spread of one subset's estimate) indicates better; torch-fidelity and
    clean-fid report ``std``. When ``subset_size`` covers both sets every subset is the whole set, so both
    are 0: there is no subset noise, not no uncertainty.
    """

    mean: float
    standard_error: float
    std: float
    subset_size: int
    num_subsets: int


MAX_CACHED_KERNEL_ENTRIES = 4096**2
"""KID computes the whole kernel matrix once (128 MiB at this size) when it is this small, and then only
gathers each subset's entries; larger inputs compute each subset's kernels from the features instead."""


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the cubic kernel of Binkowski et al. 2018 (section 3)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int | np.random.Generator = 0,
) -> KIDResult:
    """Kernel Inception Distance: the unbiased estimate of MMD^2 with the cubic polynomial kernel.

    Binkowski et al. 2018, "Demystifying MMD GANs", eq. 2 with k(x, y) = (x . y / d + 1)^3:

        MMD_u^2 = 1/(m(m-1)) sum_{i!=j} k(a_i, a_j) + 1/(m(m-1)) sum_{i!=j} k(b_i, b_j)
                  - 2/m^2 sum_{i,j} k(a_i, b_j)

    on ``num_subsets`` subsets of m = min(subset_size, N_a, N_b) rows drawn without replacement from each
    set, independently per subset, as in their code, torch-fidelity and clean-fid. The estimator is
    unbiased, so it is about 0 (either sign) for two samples of one distribution.
    """
    a, b = _pair(feats_a, feats_b, min_rows=2)
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets}, {subset_size}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    x = np.concatenate([a, b])  # rows 0..N_a-1 are a, the rest b
    full = polynomial_kernel(x, x) if len(x) ** 2 <= MAX_CACHED_KERNEL_ENTRIES else None

    def kernel(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return full[np.ix_(i, j)] if full is not None else polynomial_kernel(x[i], x[j])

    estimates = np.empty(num_subsets)
    for s in range(num_subsets):
        ia = rng.choice(len(a), m, replace=False)
        ib = len(a) + rng.choice(len(b), m, replace=False)
        kaa, kbb = kernel(ia, ia), kernel(ib, ib)
        within = (kaa.sum() - np.trace(kaa) + kbb.sum() - np.trace(kbb)) / (m * (m - 1))
        estimates[s] = within - 2.0 * kernel(ia, ib).mean()
    std = float(estimates.std(ddof=1)) if num_subsets > 1 else 0.0
    return KIDResult(
        mean=float(estimates.mean()),
        standard_error=std / np.sqrt(num_subsets),
        std=std,
        subset_size=m,
        num_subsets=num_subsets,
    )
