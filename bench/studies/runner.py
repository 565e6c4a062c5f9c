"""The one shape every study has: a list of designs, each a named run folder under the study's ``out``,
trained if missing (resumed if half done, skipped if complete), scored with what the study compares them by
if that is missing, then one report. A study is the three things that differ: its designs, what each
finished run is scored with, and what its report adds to the comparison every folder of runs gets
(``report/comparison.md``, the figures of :func:`bench.reports.compare_report.write_folder_report`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import RunConfig
from ..io import write_text_atomic

Designs = list[tuple[str, RunConfig]]
"""A study's designs: (run folder name under ``out``, its config)."""


@dataclass(frozen=True)
class Study:
    """``score`` runs after each design is trained, on that run (``score(run_dir, config, progress)``);
    ``finish`` once all are trained (``finish(out, progress)``); ``tables`` are written as
    ``report/<name>.csv`` and ``report/<name>.md`` and ``figures`` add files to the report (each returns
    the paths it wrote), both from the finished runs. Each is optional."""

    designs: Designs
    score: Callable[[Path, RunConfig, bool], None] | None = None
    finish: Callable[[Path, bool], None] | None = None
    tables: Callable[[Path], dict[str, pd.DataFrame]] | None = None
    figures: Callable[[Path], list[Path]] | None = None


def run_study(study: Study, out: Path, *, progress: bool = True) -> list[Path]:
    """Train (or resume, or skip) and score every design of ``study`` into ``out``, then write
    ``out/report/``; returns the report's files in the order they were written. The same call again trains
    and scores only what is missing, so an interrupted study is resumed by running it again."""
    from ..reports import compare_report
    from ..runs.resume import run_or_resume

    for name, config in study.designs:
        run_dir, _ = run_or_resume(config, out, name, progress=progress)
        if study.score is not None:
            study.score(run_dir, config, progress)
    if study.finish is not None:
        study.finish(out, progress)
    report = out / "report"
    written = compare_report.write_folder_report(out, report, "fd")
    for name, table in (study.tables(out) if study.tables is not None else {}).items():
        # after the folder report: both read the same finished runs
        written.append(write_text_atomic(report / f"{name}.csv", table.to_csv(index=False)))
        written.append(write_text_atomic(report / f"{name}.md", compare_report.markdown_table(table)))
    if study.figures is not None:
        written.extend(study.figures(report))
    return written
