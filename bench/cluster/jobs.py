"""A run as a job: the callable that submitit pickles and runs for one grid point of a sweep, or for one run
on several nodes.

It calls the path ``bench sweep`` takes on one machine (:func:`bench.runs.resume.run_or_resume`, into the
shared results folder) and adds only what a job needs, as the launchers of MAE and ConvNeXt do: its share of
the CPU threads, the process group of a multi-task job (rank, world size and rendezvous from
``submitit.JobEnvironment``), links to its logs beside the run, and preemption. On SLURM's USR2 (sent before
the time limit, and on preemption) training stops after the current step with its checkpoint written, and
submitit requeues the job (``checkpoint`` returns the same job), which resumes from that checkpoint exactly as
``bench run --resume`` does. A signal during teacher pairs, sampling or evaluation stops the job at once
(:mod:`bench.training.stopping`): the requeued job starts that phase again from what was kept. SIGTERM
(``scontrol requeue``, ``scancel``) stops it the same way, and SLURM requeues or ends it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..training.stopping import StopRequest

try:  # a dependency; without it, bench still runs one run at a time in this process
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - the executors refuse to start without it

    class Checkpointable:  # type: ignore[no-redef]
        pass


STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class RunJob(Checkpointable):
    """Train ``config`` into ``out/name`` inside a submitit job (SLURM or local processes)."""

    def __init__(
        self,
        config: RunConfig,
        out: str,
        name: str,
        threads: int | None = None,
        *,
        extend: bool = False,
        then: Callable[[Path, RunConfig, bool], None] | None = None,
    ) -> None:
        """``extend``: the config may ask a larger budget than the folder's (``bench run --resume DIR
        --steps N`` as a job). ``then(run_dir, config, progress)`` runs in the job once the run is complete
        (a study's scoring of it)."""
        self.config, self.out, self.name, self.threads, self.extend = config, str(out), name, threads, extend
        self.then = then

    def __call__(self) -> str:
        """``<name>: started``, ``resumed``, ``skipped`` (complete), or ``left to ...`` (claimed by another
        live job or process)."""
        import submitit
        import torch

        from ..runs.claims import ClaimedElsewhere
        from ..runs.resume import run_or_resume

        env = submitit.JobEnvironment()
        threads = self.threads or allocated_cpus()
        if threads:
            torch.set_num_threads(threads)
        if env.num_tasks > 1:  # one process per task: rank, world size and rendezvous for DDP
            distributed = submitit.helpers.TorchDistributedEnvironment()
            distributed.export(set_cuda_visible_devices=False, overwrite=True)
        if env.global_rank == 0:
            link_logs(env, Path(self.out) / self.name)
        stop, caught = StopRequest(), []
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

        def on_signal(signum: int, frame: Any) -> None:
            caught.append(signum)
            stop.request(f"stopped by {signal.Signals(signum).name}")

        for sig in STOP_SIGNALS:
            signal.signal(sig, on_signal)
        try:
            _, action = run_or_resume(
                self.config, Path(self.out), self.name, progress=False, stop=stop, extend=self.extend
            )
        except ClaimedElsewhere as exc:
            return f"{self.name}: left to another: {exc}"
        except KeyboardInterrupt as exc:
            if caught and caught[0] == signal.SIGUSR2 and callable(previous[signal.SIGUSR2]):
                # the checkpoint is written: let submitit requeue this job (it calls self.checkpoint)
                previous[signal.SIGUSR2](signal.SIGUSR2, None)
            if caught:  # SIGTERM: SLURM requeues the job (scontrol requeue) or ends it (scancel)
                raise SystemExit(f"{self.name}: {exc}") from None
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.then is not None and env.global_rank == 0:
            self.then(Path(self.out) / self.name, self.config, False)
        return f"{self.name}: {action}"


def allocated_cpus() -> int | None:
    """The CPUs SLURM gave each task of this job (--cpus-per-task, else the node's share per task); None
    outside SLURM. Without it every task would start one thread per core of the node, and two jobs on one
    node would fight over its cores."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK")
    if per_task:
        return int(per_task)
    on_node = os.environ.get("SLURM_CPUS_ON_NODE")
    if not on_node:
        return None
    # SLURM_TASKS_PER_NODE reads like "2(x3),1": this node's count comes first
    layout = os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE", "1")
    tasks = re.match(r"\d+", layout)
    return max(1, int(on_node) // max(1, int(tasks.group()) if tasks else 1))


def link_logs(env: Any, run_dir: Path) -> None:
    """Links to the job's stdout and stderr in ``RUN_DIR/<cluster>/`` (``slurm/`` on SLURM), named by job id,
    so a run's logs are found beside it."""
    logs = run_dir / env.cluster
    logs.mkdir(parents=True, exist_ok=True)
    for source in (env.paths.stdout, env.paths.stderr):
        link = logs / f"{env.job_id}{''.join(Path(source).suffixes[-1:]) or '.log'}"
        if not link.exists():
            with contextlib.suppress(FileExistsError):  # another task of the job linked it first
                os.symlink(Path(source).resolve(), link)
