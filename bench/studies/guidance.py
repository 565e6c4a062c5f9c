"""``bench study guidance``: classifier-free guidance (Ho & Salimans 2022) and the conditional form of the
seed's question, at one training budget on one dataset:

  unconditional ``unet``      the default run's design, the baseline;
  conditional ``unet``        the same network with a class embedding, trained with label dropout, sampled
                              at guidance scales 1 (plain conditional) to 4, with guidance everywhere and
                              only inside a noise-level interval (Kynkäänniemi et al. 2024);
  conditional ``direct``      one call from pure noise, knowing the class: its MSE optimum is E[x0 | x_T, y],
                              and if x_T says nothing of x0 that is the class-mean image.

Every run samples with the run's own sampler (50-step DDIM, eta 1) on balanced classes; the runs land in
``OUT/<denoiser>[-cond]-<schedule>-s<seed>``, and the same command again skips what is complete, resumes
what is half done and scores only the scales that are missing. The report adds ``guidance.md`` and
``guidance.csv``: one row per design and scale, with the real-image floor, the dataset mean image and the
class-mean images (the ceiling of a conditional model that ignores its noise) measured the same way.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..config import RunConfig
from ..runs.run_folder import RunFolder
from .runner import Study, run_study

SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)
"""The guidance scales scored (DiT's convention: 1 is plain conditional sampling)."""
INTERVAL = (0.3, 5.0)
"""The noise levels (lo, hi] where the interval variant guides: off at high noise, where guidance decides
the layout early and costs diversity, and at low noise, where it changes little but still costs a call."""
SHOWN = {
    "nfe": "NFE",
    "fd": "FD",
    "precision": "precision",
    "recall": "recall",
    "class_accuracy": "class accuracy",
    "fd_class_mean": "per-class FD (mean)",
    "fd_class_worst": "per-class FD (worst)",
}

REFERENCES = {
    "real": "real images (floor)",
    "mean-image": "mean image",
    "class-mean-image": "class-mean images",
}


def guidance_configs(base: RunConfig) -> list[tuple[str, RunConfig]]:
    """The three designs, named as their run folders; everything else is ``base`` (the default run's
    data, budget and sampler)."""
    from ..cluster.sweep import run_id

    conditional = replace(base, conditional=True)
    configs = [
        replace(base, denoiser="unet", conditional=False),
        replace(conditional, denoiser="unet"),
        replace(conditional, denoiser="direct"),
    ]
    return [(run_id(config), config) for config in configs]


def wanted(config: RunConfig) -> list[tuple[float, tuple[float, float] | None]]:
    """The (scale, interval) settings a run is scored at: none beyond its own for an unconditional run;
    every scale, with and without the interval, for an iterative conditional one; every scale for a
    one-call design (its single call is at the top noise level, outside any interval that excludes it)."""
    if not config.conditional:
        return []
    guided = [s for s in SCALES if s != 1.0]
    if config.denoiser == "direct":
        return [(s, None) for s in guided]
    return [(s, None) for s in guided] + [(s, INTERVAL) for s in guided]


def score_missing(run_dir: Path, config: RunConfig, *, progress: bool) -> None:
    """Score the scales the run's metrics.json does not hold yet (``bench eval --guidance-scale``), with
    the run's own sampler and sample count (its reference rows are reused)."""
    from ..runs.resample import evaluate_run

    metrics = RunFolder(run_dir).read_metrics()
    sample = metrics.sample
    n, seed = config.sample.n, config.seed
    done = {
        (e.sample.guidance_scale, tuple(e.sample.guidance_interval) if e.sample.guidance_interval else None)
        for e in metrics.evaluations
        if (e.sample.n, e.sample.seed, e.sample.method) == (n, seed, sample.method if sample else None)
    }
    missing: dict[tuple[float, float] | None, list[float]] = {}
    for scale, interval in wanted(config):
        if (scale, interval) not in done:
            missing.setdefault(interval, []).append(scale)
    for interval, scales in missing.items():
        evaluate_run(
            run_dir,
            n=n,
            method=sample.method if sample else config.sample.method,
            steps=[sample.steps if sample else config.sample.steps],
            eta=config.sample.eta,
            seed=seed,
            device=config.device,
            progress=progress,
            guidance_scales=scales,
            guidance_interval=interval,
        )


def run_guidance_study(base: RunConfig, out: Path, *, progress: bool = True, jobs: int = 1) -> list[Path]:
    """Train (or resume, or skip) the three designs into ``out``, score the missing scales, then write
    ``out/report/`` (the comparison, quality against the guidance scale) and the guidance table."""
    designs = guidance_configs(base)
    study = Study(
        designs=designs,
        score=lambda run_dir, config, progress: score_missing(run_dir, config, progress=progress),
        tables=lambda out: {"guidance": guidance_table(out, [name for name, _ in designs])},
    )
    return run_study(study, out, progress=progress, jobs=jobs)


def guidance_table(out: Path, names: list[str]) -> pd.DataFrame:
    """One row per design and (scale, interval), read from each run's metrics.json (its own sampling and
    its ``bench eval`` entries), then the reference rows of the conditional runs' evaluation."""
    from ..reports.compare import format_value

    rows, references = [], {}
    for name in names:
        folder = RunFolder(out / name)
        if not folder.has_metrics():
            raise ValueError(f"{folder.path} has not finished; run the study again to complete it")
        config, metrics = folder.read_config(), folder.read_metrics()
        entries = [(metrics.sample, metrics.quality)] + [(e.sample, e.quality) for e in metrics.evaluations]
        design = f"{config.denoiser} ({'conditional' if config.conditional else 'unconditional'})"
        for sample, quality in sorted(entries, key=lambda item: setting_order(item[0])):
            row = {"design": design, **setting_columns(sample, config.conditional)}
            nfe = getattr(sample, "network_evaluations_per_image", None) or getattr(sample, "nfe", None)
            values = {**(quality or {}), "nfe": nfe}
            for key, label in SHOWN.items():
                row[label] = format_value(values.get(key, math.nan)) if key in values else ""
            rows.append(row)
        if config.conditional and metrics.references:
            references = metrics.references
    for key, label in REFERENCES.items():
        if key in references:
            row = {"design": f"reference: {label}", "guidance": "", "interval": ""}
            for metric, column in SHOWN.items():
                value = references[key].get(metric)
                row[column] = format_value(value) if value is not None else ""
            rows.append(row)
    return pd.DataFrame(rows, dtype=object).fillna("")


def setting_columns(sample: object, conditional: bool) -> dict[str, str]:
    """The guidance scale and where it applied, as the table shows them."""
    scale = getattr(sample, "guidance_scale", None)
    interval = getattr(sample, "guidance_interval", None)
    where = "({:g}, {:g}]".format(*interval) if interval else ""
    if not interval and scale not in (None, 1.0):
        where = "everywhere"
    return {"guidance": f"{scale:g}" if conditional and scale is not None else "", "interval": where}


def setting_order(sample: object) -> tuple:
    """The run's own sampling first, then the scales without the interval, then with it."""
    interval = getattr(sample, "guidance_interval", None)
    return (interval is not None, getattr(sample, "guidance_scale", None) or 1.0)
