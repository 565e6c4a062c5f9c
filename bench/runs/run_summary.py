"""The few lines ``bench run`` ends with: the headline quality metrics beside the real-data floor and the
mean-image ceiling, training and sampling speed with their fraction of the device's matmul peak, and each
phase's seconds. A class-conditional run adds its class metrics beside their own floor and ceiling (real
images and the mean image of each class asked for), and its guidance to the sampling line. Everything comes
from the run's ``metrics.json`` (:class:`bench.runs.run_folder.RunMetrics`)."""

from __future__ import annotations

import math

from .run_folder import RunMetrics, SampleMetrics

HEADLINE = [
    ("fd", "FD (lower is better)"),
    ("kid_mean", "KID"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("class_entropy", "class entropy"),
    ("missing_classes", "missing classes"),
]
CLASS_HEADLINE = [
    ("class_accuracy", "class accuracy"),
    ("fd_class_mean", "per-class FD, mean"),
    ("fd_class_worst", "per-class FD, worst"),
]
"""A conditional run's class metrics (:mod:`bench.metrics.conditional`); their ceiling is the reference row
``class-mean-image``, since one mean image for all classes would be a straw man for them."""
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


def _rows(metrics: RunMetrics, headline: list[tuple[str, str]], ceiling: str) -> list[list[str]]:
    """One row per ``headline`` metric the run measured: its value, the ``real`` floor and the ``ceiling``
    reference row's value."""
    quality, refs = metrics.quality or {}, metrics.references or {}
    return [
        [label, _number(quality.get(key)), _number(refs.get("real", {}).get(key)),
         _number(refs.get(ceiling, {}).get(key))]
        for key, label in headline
        if key in quality
    ]  # fmt: skip


def _class_rows(metrics: RunMetrics) -> list[list[str]]:
    """The class metrics' rows, the worst class named (a class the model cannot draw is not averaged away)."""
    worst = (metrics.quality or {}).get("fd_class_worst_index")
    named = f" (class {worst:.0f})" if worst is not None else ""
    headline = [(key, label + named if key == "fd_class_worst" else label) for key, label in CLASS_HEADLINE]
    return _rows(metrics, headline, "class-mean-image")


def _guidance(sample: SampleMetrics) -> str:
    """``, guidance 2 on sigma (0.3, 5], class 3`` for a conditional run; empty for an unconditional one."""
    if sample.guidance_scale is None:
        return ""
    text = f", guidance {sample.guidance_scale:g}"
    if sample.guidance_interval is not None:
        text += " on sigma ({:g}, {:g}]".format(*sample.guidance_interval)
    if sample.class_label is not None:
        text += f", class {sample.class_label}"
    return text


def summary(metrics: RunMetrics) -> str:
    """The run's result in a dozen lines of plain text."""
    lines = []
    if metrics.quality:
        rows = _rows(metrics, HEADLINE, "mean-image")
        if metrics.nll:
            bpd = f"{metrics.nll['bits_per_dim']:.3g} ± {metrics.nll['standard_error']:.2g}"
            rows.append(["NLL bound, bits/dim", bpd, "", ""])
        this_run = f"this run, {nfe} NFE" if (nfe := _nfe(metrics)) else "this run"
        lines += _table(["quality", this_run, "real images (floor)", "mean image (ceiling)"], rows)
        lines.append("")
        if classes := _class_rows(metrics):
            header = ["classes asked for", this_run, "real images (floor)", "class-mean images (ceiling)"]
            lines += [*_table(header, classes), ""]
    if metrics.train and metrics.sample:
        train, sample = metrics.train, metrics.sample
        steps = f"{sample.steps} steps" if sample.steps else "all steps"
        if _nfe(metrics):
            steps += f", {_nfe(metrics)} NFE"
        lines += [
            f"training:  {_speed(train.images_per_s, train.fraction_of_peak)}, {train.steps:,} steps",
            f"sampling:  {_speed(sample.images_per_s, sample.fraction_of_peak)}, {sample.method} {steps}"
            + _guidance(sample),
        ]
    phases = [f"{label} {metrics.phases[key]:.1f} s" for key, label in PHASES if key in metrics.phases]
    if phases:
        lines.append("time:      " + ", ".join(phases))
    return "\n".join(lines)
