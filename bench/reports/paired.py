"""Paired differences between designs that share seeds.

Two designs trained with the same seeds share their data split, their initial noise draws and their sampling
noise seed by seed, so most of what makes one seed's FD differ from another's is common to both. The
difference taken seed by seed cancels it: its mean over the shared seeds, with a 95% Student-t interval on
n - 1 degrees of freedom, says whether one design is better than the other far more sharply than two
intervals of the designs' own means side by side. An order is stated only where the interval of the paired
difference excludes zero; elsewhere the reading is "not resolved".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from ..runs.row import DESIGN
from .compare import interval95

BETTER, WORSE, UNRESOLVED = "better", "worse", "not resolved"
HIGHER_IS_BETTER = frozenset(
    {"precision", "recall", "density", "coverage", "class_accuracy", "inception_score", "pixel_diversity"}
)
"""The measurements where a larger value is the better one; every other (FD, FID, KID, NLL) is the lower."""


@dataclass(frozen=True)
class PairedDifference:
    """a - b over the seeds both have: the mean, the 95% half-width (NaN for one seed), and the seeds."""

    mean: float
    half_width: float
    seeds: tuple[int, ...]

    @property
    def resolved(self) -> bool:
        """Whether the 95% interval of the difference excludes zero (never, with one seed)."""
        return not math.isnan(self.half_width) and abs(self.mean) > self.half_width

    def reading(self, lower_is_better: bool = True) -> str:
        """``a`` against ``b``: "better", "worse", or "not resolved" where the interval holds zero."""
        if not self.resolved:
            return UNRESOLVED
        return BETTER if (self.mean < 0) == lower_is_better else WORSE

    def shown(self, digits: int = 1) -> str:
        """``+1.3 ± 1.4`` (``+1.3`` for one seed)."""
        text = f"{self.mean:+.{digits}f}"
        return text if math.isnan(self.half_width) else f"{text} ± {self.half_width:.{digits}f}"


def paired_difference(
    a: Mapping[int, float] | pd.Series, b: Mapping[int, float] | pd.Series
) -> PairedDifference:
    """``a - b`` seed by seed over the seeds where both have a value (each maps a seed to a measurement)."""
    a, b = pd.Series(a, dtype=float).dropna(), pd.Series(b, dtype=float).dropna()
    shared = sorted(set(a.index) & set(b.index))
    if not shared:
        raise ValueError(
            f"no seed in common: {sorted(a.index)} against {sorted(b.index)}; a paired difference needs the "
            "two designs trained with the same seeds"
        )
    differences = a[shared] - b[shared]
    return PairedDifference(float(differences.mean()), interval95(differences), tuple(int(s) for s in shared))


def versus_best(values: pd.DataFrame, *, lower_is_better: bool = True, digits: int = 1) -> pd.DataFrame:
    """One row per design of ``values`` (columns ``design``, ``seed``, ``value``): its mean with its 95%
    interval, and its paired difference to the best design (the best mean) over the seeds they share, with
    the reading. The best design's own row has no difference."""
    values = values.dropna(subset=["value"])
    if values.empty:
        raise ValueError("no measurements to compare")
    if values.duplicated(["design", "seed"]).any():
        twice = values[values.duplicated(["design", "seed"], keep=False)][
            ["design", "seed"]
        ].drop_duplicates()
        raise ValueError(f"one value per design and seed; given twice: {twice.to_dict('records')}")
    means = values.groupby("design", sort=False)["value"].mean()
    best = means.idxmin() if lower_is_better else means.idxmax()
    by_design = {
        name: group.set_index("seed")["value"] for name, group in values.groupby("design", sort=False)
    }
    rows = []
    for name, series in by_design.items():
        half = interval95(series)
        mean_text = f"{series.mean():.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")
        row = {"design": name, "mean": mean_text, "seeds": len(series)}
        if name == best:
            row.update({"paired difference to the best": "(the best)", "reading": ""})
        else:
            try:
                difference = paired_difference(series, by_design[best])
            except ValueError:
                row.update({"paired difference to the best": "no shared seed", "reading": UNRESOLVED})
            else:
                row.update(
                    {
                        "paired difference to the best": difference.shown(digits),
                        "reading": f"{difference.reading(lower_is_better)} than {best}"
                        if difference.resolved
                        else UNRESOLVED,
                    }
                )
        rows.append(row)
    return pd.DataFrame(rows)


def design_labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's design as text: the values of the design columns that vary among ``runs``, joined by " / "
    (the denoiser alone where only it varies)."""
    varying = [c for c in DESIGN if c in runs.columns and runs[c].astype(str).nunique() > 1]
    if not varying:
        varying = [c for c in ("denoiser",) if c in runs.columns]
    return runs[varying].astype(str).agg(" / ".join, axis=1)


def paired_view(runs: pd.DataFrame, metric: str, *, digits: int = 1) -> pd.DataFrame:
    """:func:`versus_best` of ``metric`` over the designs of ``runs`` (one row per run and sampling, as
    :func:`bench.reports.compare.collect` reads them), lower-better unless it is in
    :data:`HIGHER_IS_BETTER`."""
    if metric not in runs.columns:
        known = ", ".join(c for c in runs.columns if pd.api.types.is_numeric_dtype(runs[c]))
        raise ValueError(f"no measurement {metric!r} to pair; measurements: {known}")
    values = pd.DataFrame({"design": design_labels(runs), "seed": runs["seed"], "value": runs[metric]})
    return versus_best(values, lower_is_better=metric not in HIGHER_IS_BETTER, digits=digits)
