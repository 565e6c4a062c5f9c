"""The few lines ``bench run`` ends with: the headline quality metrics beside the real-data floor and the
mean-image ceiling, training and sampling speed with their fraction of the device's matmul peak, and each
phase's seconds. Everything comes from the run's ``metrics.json`` (:class:`bench.run_folder.RunMetrics`)."""

from __future__ import annotations

import math

from .run_folder import RunMetrics

HEADLINE = [
    ("fd", "FD (lower is better)"),
    ("kid_mean", "KID"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("class_entropy", "class entropy"),
    ("missing_classes", "missing classes"),
]
PHASES = [("setup_s", "setup"), ("pairs_s", "teacher pairs"), ("train_s", "training"),
          ("sample_s", "sampling"), ("eval_s", "evaluation")]  # fmt: skip


def _number(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return "-"
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def _speed(images_per_s: float | None, fraction: float | None) -> str:
    if images_per_s is None:
        return "-"
    peak = f" ({100 * fraction:.0f}% of peak)" if fraction is not None else ""
    return f"{images_per_s:,.1f} images/s{peak}"


def _nfe(metrics: RunMetrics) -> str:
    """The sampler's network calls per image, which the quality was bought with."""
    calls = metrics.sample.network_evaluations_per_image if metrics.sample else None
    return f"{calls:,}" if calls else ""


def summary(metrics: RunMetrics) -> str:
    """The run's result in a dozen lines of plain text."""
    lines = []
    if metrics.quality:
        refs = metrics.references or {}
        rows = [
            [label, _number(metrics.quality.get(key)), _number(refs.get("real", {}).get(key)),
             _number(refs.get("mean-image", {}).get(key))]
            for key, label in HEADLINE
            if key in metrics.quality
        ]  # fmt: skip
        if metrics.nll:
            bpd = f"{metrics.nll['bits_per_dim']:.3g} ± {metrics.nll['standard_error']:.2g}"
            rows.append(["NLL bound, bits/dim", bpd, "", ""])
        this_run = f"this run, {nfe} NFE" if (nfe := _nfe(metrics)) else "this run"
        lines += _table(["quality", this_run, "real images (floor)", "mean image (ceiling)"], rows)
        lines.append("")
    if metrics.train and metrics.sample:
        train, sample = metrics.train, metrics.sample
        steps = f"{sample.steps} steps" if sample.steps else "all steps"
        if _nfe(metrics):
            steps += f", {_nfe(metrics)} NFE"
        lines += [
            f"training:  {_speed(train.images_per_s, train.fraction_of_peak)}, {train.steps:,} steps",
            f"sampling:  {_speed(sample.images_per_s, sample.fraction_of_peak)}, {sample.method} {steps}",
        ]
    phases = [f"{label} {metrics.phases[key]:.1f} s" for key, label in PHASES if key in metrics.phases]
    if phases:
        lines.append("time:      " + ", ".join(phases))
    return "\n".join(lines)
