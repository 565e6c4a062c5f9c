"""Fidelity and diversity from k-nearest-neighbour balls: precision / recall and density / coverage.

FD and KID fold "samples look wrong" and "samples miss part of the data" into one number; these metrics
separate them. Each real (or fake) point gets a ball whose radius is the distance to its k-th nearest
neighbour in its own set (itself excluded), and the union of the balls estimates that set's manifold.
Balls are closed (distance <= radius), so a point that coincides with a ball's centre is inside even
when the radius is 0; prdc uses open balls, which differs only on exact ties. Distances are Euclidean in
float64, computed exactly (not via ||x||^2 + ||y||^2 - 2 x.y) so that duplicates are at distance 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from .distances import as_float64

ROW_BLOCK = 1024
"""Rows of the distance matrix held at once: memory stays at ROW_BLOCK x N float64 for any N."""


def _distance_blocks(x: np.ndarray, y: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (row offset, block of ||x_i - y_j|| for a slice of rows i) as float64 torch tensors."""
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for start in range(0, len(x), ROW_BLOCK):
        rows = tx[start : start + ROW_BLOCK]
        yield start, torch.cdist(rows, ty, compute_mode="donot_use_mm_for_euclid_dist")  # (rows, len(y))


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row (Kynkäänniemi et al. 2019, eq. 1).

    Index k of the sorted distances, as their code and prdc do: index 0 is the point itself. Duplicated
    points make radii 0; that is what a collapsed set of samples should get.
    """
    if not 1 <= k < len(x):
        raise ValueError(f"k must be between 1 and the set size minus 1 ({len(x) - 1}), got {k}")
    radii = np.empty(len(x))
    for start, block in _distance_blocks(x, x):
        radii[start : start + len(block)] = block.kthvalue(k + 1, dim=1).values.numpy()
    return radii


def _inside_counts(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """For each point, how many of the balls B(centre_i, radius_i) contain it."""
    r = torch.from_numpy(radii)
    counts = np.empty(len(points), dtype=np.int64)
    for start, block in _distance_blocks(points, centres):
        counts[start : start + len(block)] = (block <= r).sum(dim=1).numpy()
    return counts


def _check_pair(real: ArrayLike, fake: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    r, f = as_float64(real, "real"), as_float64(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} and {f.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return r, f


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float


@dataclass(frozen=True)
class DensityCoverage:
    density: float
    coverage: float


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eq. 1-2), k = 3 as in the paper.

    precision = fraction of fake points inside at least one real k-NN ball (samples look real);
    recall    = fraction of real points inside at least one fake k-NN ball (the data is covered).
    Both lie in [0, 1]; higher is better. Outliers inflate a set's balls, so recall in particular is
    generous to a few wild samples; density / coverage are the robust counterparts.
    """
    r, f = _check_pair(real, fake, k)
    precision = (_inside_counts(f, r, knn_radii(r, k)) > 0).mean()
    recall = (_inside_counts(r, f, knn_radii(f, k)) > 0).mean()
    return PrecisionRecall(precision=float(precision), recall=float(recall))


def density_coverage(real: ArrayLike, fake: ArrayLike, k: int = 5) -> DensityCoverage:
    """Density and coverage (Naeem et al. 2020, eq. 4-5), k = 5 as in the paper; only real balls are used.

    density  = 1/(k M) sum_j sum_i 1[fake_j in B(real_i, NND_k(real_i))], M fake points: how many real
               balls a sample lands in, relative to k. About 1 for samples from the real distribution,
               above 1 when samples crowd into dense regions; unbounded.
    coverage = 1/N sum_i 1[exists j: fake_j in B(real_i, NND_k(real_i))]: fraction of real balls that
               hold a sample; in [0, 1]. Identical sets give coverage 1 and density 1 + 1/k exactly
               (each point lies in its own ball plus, summed over points, k other balls each).
    """
    r, f = _check_pair(real, fake, k)
    radii = knn_radii(r, k)
    density = _inside_counts(f, r, radii).sum() / (k * len(f))
    nearest_fake = np.empty(len(r))
    for start, block in _distance_blocks(r, f):
        nearest_fake[start : start + len(block)] = block.min(dim=1).values.numpy()
    coverage = (nearest_fake <= radii).mean()
    return DensityCoverage(density=float(density), coverage=float(coverage))
