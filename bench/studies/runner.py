"""The one shape every study has: a list of designs, each a named run folder under the study's ``out``,
trained if missing (resumed if half done, skipped if complete), scored with what the study compares them by
if that is missing, then one report. A study is the three things that differ: its designs, what each
finished run is scored with, and what its report adds to the comparison every folder of runs gets
(``report/comparison.md``, the figures of :func:`bench.reports.compare_report.write_folder_report`)."""

from __future__ import annotations

import os
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


def run_study(study: Study, out: Path, *, progress: bool = True, jobs: int = 1) -> list[Path]:
    """Train (or resume, or skip) and score every design of ``study`` into ``out``, one after another in
    this process or, with ``jobs`` > 1, that many at a time as processes on this machine (submitit's local
    executor), then write ``out/report/``; returns the report's files in the order they were written. The
    same call again trains and scores only what is missing, so an interrupted study is resumed by running it
    again."""
    from ..reports import compare_report
    from ..runs.resume import run_or_resume

    if jobs > 1:
        train_side_by_side(study, out, jobs, progress=progress)
    else:
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


def default_jobs(device: str) -> int:
    """How many of a study's runs train at once unless told: on CUDA one per GPU (one for a named GPU); on
    the CPU one per core, each with one thread. On the 2-core Xeon two 1-thread processes trained the small
    U-Net 1.21-1.39x as fast together as one 2-thread process (docs/comparing-and-sweeps.md, "Studies side
    by side"): its convolutions on 14x14 images are too small to keep two threads busy."""
    import torch

    from ..environment import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return 1 if resolved.index is not None else max(1, torch.cuda.device_count())
    return available_cores()


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def waves(designs: Designs, out: Path) -> list[Designs]:
    """The designs in rounds that can train side by side: those without a teacher in the study first, then
    those whose teachers are all in earlier rounds."""
    names = {str(out / name): name for name, _ in designs}
    depth: dict[str, int] = {}
    for name, config in designs:  # a study lists each teacher before its students
        teacher = names.get(config.distill.teacher or "")
        depth[name] = depth[teacher] + 1 if teacher is not None else 0
    rounds: list[Designs] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name, config in designs:
        rounds[depth[name]].append((name, config))
    return rounds


def train_side_by_side(study: Study, out: Path, jobs: int, *, progress: bool) -> None:
    """Each round of :func:`waves` as processes on this machine, ``jobs`` at a time, each scoring its own
    run once trained; then every run of the round is scored here too (a no-op for those already scored, and
    the scores of a job stopped after its training). A run that did not complete stops the study before
    its students, with the run's folder to look at."""
    from ..cluster.executors import ExecutorConfig, needs_submitting, submit, wait

    for designs in waves(study.designs, out):
        todo = [(name, config) for name, config in designs if needs_submitting(out, name)]
        # a round of fewer runs than jobs shares the machine among the runs it has
        execution = ExecutorConfig(kind="local", jobs=max(1, min(jobs, len(todo))))
        submitted = submit(todo, out, execution, then=study.score) if todo else []
        states = wait([name for name, _ in designs], out, submitted, progress=progress, poll_s=1.0)
        failed = sorted(name for name, state in states.items() if state != "complete")
        if failed:
            raise RuntimeError(
                f"{len(failed)} runs of the study did not complete ({', '.join(failed)}); their folders "
                f"under {out} hold each one's log and status; run the same command again to go on"
            )
        for name, config in designs:
            if study.score is not None:
                study.score(out / name, config, progress)
