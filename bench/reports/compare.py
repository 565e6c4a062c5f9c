"""``bench compare``: read every run folder below some paths (never writing to them) into one table, group
runs that differ only by seed (mean and 95% interval), and write the report folder.

A run folder is any folder holding a ``config.json``. A run whose ``metrics.json`` is missing (still
running) or unreadable (damaged) is reported and left out of the table. Metrics are read through
:class:`bench.runs.run_folder.RunMetrics`, the same layout ``bench run`` writes them with.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from scipy import stats

from ..runs.row import DESIGN, HEADLINE, flatten, run_rows
from ..runs.run_folder import RunFolder, find_runs

DESCRIPTIVE = ("run", "path", "seed", "sample_steps")
"""Columns that describe a row without being measurements to average."""
CLASS_CEILING = "class-mean-image"
"""The reference row of a class-conditional run's class metrics: each class's mean image."""
SPEED = [
    "parameters",
    "forward_gflops",
    "train_images_per_s",
    "sample_images_per_s",
    "train_fraction_of_peak",
]


@dataclass
class Collection:
    runs: pd.DataFrame
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def collect(paths: list[Path]) -> Collection:
    """Read every run below ``paths``; damaged or unfinished runs go to ``skipped`` with the reason."""
    rows, skipped = [], []
    for folder in find_runs(paths):
        try:
            rows.extend(run_rows(folder))
        except (KeyError, ValueError, OSError, TypeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            skipped.append((folder.path, reason))
            warnings.warn(f"skipping {folder.path}: {reason}", stacklevel=2)
    return Collection(pd.DataFrame(rows), skipped)


def references(runs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The reference rows (``real``: the floor; ``mean-image``: the collapse ceiling; for class-conditional
    runs ``class-mean-image``, the ceiling of the class metrics) of each dataset and image size in ``runs``,
    labelled with them when there are several (:func:`reference_rows`)."""
    found: dict[str, dict[str, float]] = {}
    if runs.empty:
        return found
    images = runs["image"] if "image" in runs.columns else pd.Series("", index=runs.index)
    conditional = runs["conditional"] if "conditional" in runs.columns else pd.Series(False, index=runs.index)
    pairs = list(dict.fromkeys(zip(runs["dataset"], images, strict=True)))
    for dataset, image in pairs:
        chosen = (runs["dataset"] == dataset) & (images == image)
        paths = list(dict.fromkeys(runs.loc[chosen, "path"]))
        conditional_paths = list(dict.fromkeys(runs.loc[chosen & conditional.eq(True), "path"]))
        for name, values in reference_rows(paths, conditional_paths).items():
            flat: dict = {}
            flatten("", values, flat)
            label = name if len(pairs) == 1 else f"{name} ({' '.join(filter(None, (dataset, image)))})"
            found[label] = {k: v for k, v in flat.items() if isinstance(v, int | float)}
    return found


def reference_rows(paths: list[str], conditional_paths: list[str]) -> dict[str, dict]:
    """The reference rows saved with the first evaluated run in ``paths``. When that run has no class rows,
    the first conditional run that has them lends its ``class-mean-image`` row and the class metrics' floor
    (the keys its ``real`` row adds), so a table mixing both kinds of run has both ceilings."""
    rows = first_references(paths)
    if CLASS_CEILING not in rows:
        lent = first_references(conditional_paths, having=CLASS_CEILING)
        if lent:
            rows = {**rows, "real": {**lent.get("real", {}), **rows.get("real", {})}}
            rows[CLASS_CEILING] = lent[CLASS_CEILING]
    return rows


def first_references(paths: list[str], having: str | None = None) -> dict[str, dict]:
    """The reference rows of the first run in ``paths`` that has some (and the row ``having``, if given);
    empty when none has."""
    for path in paths:
        refs = RunFolder(Path(path)).read_metrics().references
        if refs and (having is None or having in refs):
            return refs
    return {}


def apply_filters(runs: pd.DataFrame, where: list[str]) -> pd.DataFrame:
    """``key=value`` filters, all of which must hold; an unknown key is an error listing the columns."""
    for clause in where:
        key, sep, value = clause.partition("=")
        if not sep:
            raise ValueError(f"--where expects KEY=VALUE, got {clause!r}")
        if key not in runs.columns:
            raise ValueError(f"unknown column {key!r} in --where; columns: {', '.join(runs.columns)}")
        runs = runs[runs[key].astype(str) == value]
    return runs


def interval95(values: pd.Series) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t); NaN for a single seed."""
    values = values.dropna()
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per design: the mean of every measurement, its 95% half-interval (``<col>_ci95``), seeds."""
    numeric = [
        c for c in runs.columns if c not in {*DESIGN, *DESCRIPTIVE} and pd.api.types.is_numeric_dtype(runs[c])
    ]
    keys = [k for k in DESIGN if k in runs.columns]
    grouped = runs.groupby(keys, dropna=False, sort=False)
    table = grouped[numeric].mean()
    for col in numeric:
        table[f"{col}_ci95"] = grouped[col].apply(interval95)
    table["seeds"] = grouped["seed"].nunique()
    return table.reset_index()


def headline_columns(table: pd.DataFrame) -> list[str]:
    """The HEADLINE columns this table has (KID and class entropy need a classifier feature space)."""
    return [c for c in HEADLINE if c in table.columns and table[c].notna().any()]


def split_constant_design(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """The table without the design columns that are the same in every row, and those shared values: a
    comparison of designs on one dataset and budget need not repeat them on every line."""
    if len(table) < 2:
        return table, {}
    labels = [c for c in DESIGN if c != "denoiser"]  # the row label, and where reference rows are named
    constant = [c for c in labels if c in table.columns and table[c].nunique(dropna=False) == 1]
    # an empty value (no interval, no image size recorded) says nothing, so it is dropped without a word
    shared = {c: table[c].iloc[0] for c in constant if table[c].iloc[0] != ""}
    return table.drop(columns=constant), shared


def select_columns(table: pd.DataFrame, columns: list[str] | None) -> pd.DataFrame:
    if not columns:
        return table
    unknown = [c for c in columns if c not in table.columns]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; columns: {', '.join(table.columns)}")
    # each chosen measurement keeps its 95% interval, and the seed count stays, so a mean is never shown alone
    extra = [f"{c}_ci95" for c in columns if f"{c}_ci95" in table.columns]
    seeds = ["seeds"] if "seeds" in table.columns and "seeds" not in columns else []
    return table[[c for c in DESIGN if c in table.columns and c not in columns] + columns + extra + seeds]


def format_table(table: pd.DataFrame, references: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Means shown as ``mean ± ci`` where several seeds exist; reference rows appended for comparison."""
    shown = table.copy()
    for col in list(shown.columns):
        ci = f"{col}_ci95"
        if ci in shown.columns:
            shown[col] = [with_interval(m, c) for m, c in zip(shown[col], shown[ci], strict=True)]
            shown = shown.drop(columns=ci)
    for name, values in (references or {}).items():
        ref = {c: "" for c in shown.columns}
        ref.update({"denoiser": f"reference: {name}"})
        ref.update({k: format_value(v) for k, v in values.items() if k in shown.columns})
        shown = pd.concat([shown, pd.DataFrame([ref])], ignore_index=True)
    return shown


def numeric_table(table: pd.DataFrame, references: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """The table as numbers for ``comparison.csv``: means, their ``<col>_ci95`` columns and the reference
    rows, so that other tools read values rather than ``mean ± ci`` strings."""
    rows = [
        {"denoiser": f"reference: {name}", **{k: v for k, v in values.items() if k in table.columns}}
        for name, values in (references or {}).items()
    ]
    return pd.concat([table, pd.DataFrame(rows, columns=table.columns)], ignore_index=True) if rows else table


def with_interval(mean: object, ci: object) -> str:
    """``mean ± ci``, or the mean alone where there is no interval (one seed)."""
    has_ci = isinstance(ci, float) and not math.isnan(ci)
    return format_value(mean) + (f" ± {format_value(ci)}" if has_ci else "")


def format_value(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return str(value)
