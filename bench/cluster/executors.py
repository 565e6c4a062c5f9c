"""Where a sweep's runs (or one multi-node run) execute: one after another in this process (``local``, the
default), N at a time as separate processes on this machine (``local`` with ``jobs`` > 1, through submitit's
``LocalExecutor``), or as one SLURM job array (``slurm``, through submitit's ``SlurmExecutor``).

Nothing here schedules: SLURM (or the local process pool) does. This module checks the request against the
cluster before anything is submitted, submits what is neither complete nor running, records the job ids in
the sweep's manifest, and waits for the runs with a progress bar of finished ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import POSITIVE, POSITIVE_INT, Rule, RunConfig, check_choice, check_rules, ruled
from ..io import read_json, write_json_atomic
from ..runs.claims import holder_alive, job_state_or_unknown, read_claim, slurm_job_alive
from ..runs.run_folder import RunFolder
from .jobs import RunJob

EXECUTORS = ("local", "slurm")
SUBMITIT_DIR = ".submitit"  # submitit's pickles and the logs that the run folders link to
JOBS_NAME = "jobs.json"  # which job runs which grid point, beside the sweep's manifest
FINISHED_STATES = ("complete", "failed")
LOCAL_TIMEOUT_MIN = 10**6  # a process on this machine runs as long as its training takes


@dataclass(frozen=True)
class ExecutorConfig:
    """How runs are executed and what each may use. ``gpus_per_node`` processes per node each get one GPU
    (DistributedDataParallel across them and across ``nodes``); without GPUs a run has ``tasks_per_node``
    processes per node (gloo)."""

    kind: str = "local"
    jobs: int = ruled(1, POSITIVE_INT)
    partition: str | None = None
    nodes: int = ruled(1, POSITIVE_INT)
    gpus_per_node: int = ruled(0, Rule(int, low=0))
    tasks_per_node: int | None = ruled(None, replace(POSITIVE_INT, optional=True))
    cpus_per_run: int | None = ruled(None, replace(POSITIVE_INT, optional=True))
    mem_gb: float | None = ruled(None, replace(POSITIVE, optional=True))
    time_min: int = ruled(60, POSITIVE_INT)
    max_parallel: int | None = ruled(None, replace(POSITIVE_INT, optional=True))
    slurm: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    wait: bool = True
    poll_s: float = ruled(5.0, POSITIVE)

    def __post_init__(self) -> None:
        check_rules(self)
        check_choice("executor", self.kind, EXECUTORS)
        if self.kind == "slurm" and self.jobs != 1:
            raise ValueError("--jobs is how many runs this machine trains at once; SLURM's is --max-parallel")
        if self.kind == "local":
            slurm_only = {"--partition": self.partition, "--slurm": self.slurm, "--nodes": self.nodes > 1,
                          "--max-parallel": self.max_parallel}  # fmt: skip
            given = [name for name, on in slurm_only.items() if on]
            if given:
                raise ValueError(f"{', '.join(given)} apply to --executor slurm only")

    @property
    def tasks(self) -> int:
        """Processes per node: one per GPU, else ``tasks_per_node`` (1 by default)."""
        return self.gpus_per_node or self.tasks_per_node or 1

    @property
    def in_process(self) -> bool:
        """Today's behaviour: runs one after another in this process, no submitit needed."""
        return self.kind == "local" and self.jobs == 1


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ValueError(
            "--executor slurm and --jobs need submitit, a dependency of ddpm-bench that this environment "
            "lacks: pip install 'submitit>=1.5'"
        ) from None
    return submitit


def sinfo(*fields: str) -> list[list[str]]:
    command = ["sinfo", "-h", "-o", " ".join(fields)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"sinfo failed: {result.stderr.strip() or result.stdout.strip()}")
    return [line.split() for line in result.stdout.splitlines() if line.strip()]


def check_cluster(config: ExecutorConfig) -> None:
    """Refuse what SLURM would refuse or never schedule, before anything is submitted."""
    if shutil.which("sbatch") is None:
        raise ValueError(
            "--executor slurm needs SLURM's sbatch, and this machine has none; run on a login node, or try "
            "a one-node cluster here with `sudo scripts/local-slurm.sh start`"
        )
    rows = sinfo("%P", "%G")
    partitions = {row[0].rstrip("*"): row[1:] for row in rows}
    partition = config.partition or next((row[0].rstrip("*") for row in rows if row[0].endswith("*")), None)
    if config.partition is not None and config.partition not in partitions:
        raise ValueError(f"unknown partition {config.partition!r}; this cluster has: {', '.join(partitions)}")
    if config.gpus_per_node > 0:
        gres = [g for row in rows if row[0].rstrip("*") == partition for g in row[1:]]
        if not any("gpu" in g for g in gres):
            raise ValueError(
                f"--gpus-per-run/--gpus-per-node {config.gpus_per_node} asks for GPUs, but partition "
                f"{partition!r} has none (its nodes' GRES: {', '.join(gres) or 'none'}); leave it out on a "
                "CPU-only cluster"
            )


def slurm_executor(config: ExecutorConfig, folder: Path) -> Any:
    """A submitit SlurmExecutor with the run's resources, one call as the MAE and ConvNeXt launchers do."""
    submitit = require_submitit()
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=3)
    parameters: dict[str, Any] = {
        "job_name": "bench",
        "time": config.time_min,
        "nodes": config.nodes,
        "ntasks_per_node": config.tasks,
        "signal_delay_s": 90 if config.time_min > 10 else 30,
        "additional_parameters": dict(config.slurm),
    }
    optional = {
        "partition": config.partition,
        "gpus_per_node": config.gpus_per_node or None,
        "cpus_per_task": config.cpus_per_run,
        "mem": f"{config.mem_gb:g}G" if config.mem_gb else None,
        "array_parallelism": config.max_parallel,
    }
    executor.update_parameters(**parameters, **{k: v for k, v in optional.items() if v is not None})
    return executor


@dataclass
class Submitted:
    """A grid point handed to a job, and the job."""

    name: str
    job: Any


def submit(
    points: Sequence[tuple[str, RunConfig]],
    out: Path,
    config: ExecutorConfig,
    *,
    extend: bool = False,
    then: Callable[[Path, RunConfig, bool], None] | None = None,
) -> list[Submitted]:
    """Submit every point as a job (one SLURM array for several), after checking the cluster; SLURM's own
    refusal (a --slurm option it rejects, say) is a ValueError with its words, and nothing is submitted.
    ``extend``: the jobs may train a run further than its folder's budget (``bench run --resume --steps``);
    ``then``: what each job does with its complete run (:class:`bench.cluster.jobs.RunJob`)."""
    submitit = require_submitit()
    folder = out / SUBMITIT_DIR
    if config.kind == "slurm":
        check_cluster(config)
        executor = slurm_executor(config, folder)
        try:
            with executor.batch():
                jobs = [
                    executor.submit(RunJob(c, str(out), name, extend=extend, then=then)) for name, c in points
                ]
        except (submitit.core.utils.FailedSubmissionError, submitit.core.utils.FailedJobError) as exc:
            raise ValueError(f"SLURM refused the jobs: {slurm_words(exc)}") from None
        submitted = [Submitted(name, job) for (name, _), job in zip(points, jobs, strict=True)]
        record_jobs(out, submitted, "slurm")
        return submitted
    jobs = local_jobs(points, out, config, folder, extend=extend, then=then)
    return [Submitted(name, job) for name, job in jobs]


def local_jobs(
    points: Sequence[tuple[str, RunConfig]],
    out: Path,
    config: ExecutorConfig,
    folder: Path,
    *,
    extend: bool = False,
    then: Callable[[Path, RunConfig, bool], None] | None = None,
):
    """Start the points as processes on this machine, ``config.jobs`` at a time: each gets a GPU of its own
    when there are GPUs, else its share of the CPU threads. Yields (name, job) as each starts."""
    submitit = require_submitit()
    executor = submitit.LocalExecutor(folder=str(folder / "%j"))
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    running: list[tuple[Any, int | None]] = []
    for name, run_config in points:
        while len(running) >= config.jobs:
            running = [(job, gpu) for job, gpu in running if not job.done()]
            if len(running) >= config.jobs:
                time.sleep(0.5)
        busy = {gpu for _, gpu in running}
        gpu = next((g for g in range(gpus) if g not in busy), None) if gpus else None
        executor.update_parameters(
            timeout_min=LOCAL_TIMEOUT_MIN,
            gpus_per_node=1 if gpu is not None else 0,
            visible_gpus=[gpu] if gpu is not None else [],
        )
        threads_each = None if gpu is not None else threads
        job = executor.submit(RunJob(run_config, str(out), name, threads_each, extend=extend, then=then))
        record_jobs(out, [Submitted(name, job)], "local")
        running.append((job, gpu))
        yield name, job


def slurm_words(exc: BaseException) -> str:
    """The lines of sbatch's own message in a submitit submission error."""
    lines = [line.strip() for line in str(exc).splitlines()]
    said = [line for line in lines if "sbatch" in line.lower() or "error" in line.lower()]
    return " ".join(said) or str(exc)


def record_jobs(out: Path, submitted: Sequence[Submitted], executor: str) -> None:
    """Note which job runs which grid point in ``OUT/jobs.json`` (for ``bench sweep status`` and for not
    submitting a point twice)."""
    path = out / JOBS_NAME
    jobs = read_json(path) if path.is_file() else {}
    for s in submitted:
        jobs[s.name] = {"job_id": str(s.job.job_id), "executor": executor, "submitted": time.time()}
    write_json_atomic(path, jobs)


def recorded_jobs(out: Path) -> dict[str, dict[str, Any]]:
    path = out / JOBS_NAME
    return read_json(path) if path.is_file() else {}


def needs_submitting(out: Path, name: str) -> bool:
    """Neither complete nor running: no live claim on its folder and no queued or running job for it."""
    folder = RunFolder(out / name)
    if folder.state() == "complete":
        return False
    holder = read_claim(folder.path)
    if holder is not None and holder_alive(holder):
        return False
    job = recorded_jobs(out).get(name)
    if job and job["executor"] == "slurm":
        return not slurm_job_alive(job_state_or_unknown(job["job_id"]))
    return True


def still_running(out: Path, name: str, job: Any | None) -> bool:
    """Whether the point may still change: our own job for it has not ended, a live holder has claimed its
    folder, or a job another sweep submitted for it is queued or running."""
    if job is not None and not job.done():
        return True
    holder = read_claim(out / name)
    if holder is not None and holder_alive(holder):
        return True
    recorded = recorded_jobs(out).get(name)
    if job is None and recorded and recorded["executor"] == "slurm":
        return slurm_job_alive(job_state_or_unknown(recorded["job_id"]))
    return False


def wait(
    names: Sequence[str],
    out: Path,
    submitted: Sequence[Submitted] = (),
    *,
    progress: bool = True,
    poll_s: float = 5.0,
    on_finish: Callable[[str, str], None] | None = None,
) -> dict[str, str]:
    """Wait until every named point is finished: its run complete or failed, or nothing runs it any more
    (our job ended, and no other sweep's job or process holds it). Points trained by another sweep are waited
    for like our own. Returns each point's final state (``complete``, ``failed``, ``interrupted``, or
    ``ended`` for a job that left no state)."""
    jobs = {s.name: s.job for s in submitted}
    left = list(names)
    done: dict[str, str] = {}
    with tqdm(total=len(left), desc="runs finished", unit="run", disable=not progress) as bar:
        while left:
            for name in list(left):
                job = jobs.get(name)
                if job is not None and not job.done():
                    continue  # the folder may still say how an earlier run ended (failed, or complete)
                state = RunFolder(out / name).state()
                if state not in FINISHED_STATES:
                    if still_running(out, name, job):
                        continue
                    state = state or "ended"
                done[name] = state
                left.remove(name)
                bar.update(1)
                if on_finish is not None:
                    on_finish(name, state)
            if left:
                time.sleep(poll_s)
    return done
