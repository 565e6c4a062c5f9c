"""The options that say where runs execute (``--executor``, ``--jobs``, SLURM's resources), shared by
``bench run`` and ``bench sweep``, and the :class:`~bench.cluster.executors.ExecutorConfig` they describe."""

from __future__ import annotations

from typing import Any

import click

from ..cluster.executors import EXECUTORS, ExecutorConfig
from .options import KeyValue, command_line_given, config_option


def executor_options(fn=None, *, sweep: bool = False):
    """``--executor`` and the resources of a run as a job; a sweep adds ``--jobs``, ``--gpus-per-run`` and
    ``--max-parallel``."""
    if fn is None:
        return lambda f: executor_options(f, sweep=sweep)
    defaults = ExecutorConfig()
    per_run = [
        config_option(
            "--jobs",
            kind=ExecutorConfig,
            field="jobs",
            default=defaults.jobs,
            help="With --executor local: runs at a time, each a process of its own (a GPU each where there "
            "are GPUs, else an equal share of the CPU threads).",
        ),
        config_option(
            "--gpus-per-run",
            kind=ExecutorConfig,
            field="gpus_per_node",
            default=None,
            show_default=False,
            help="GPUs of each run, on one node (one process per GPU, DistributedDataParallel).",
        ),
        config_option(
            "--max-parallel",
            kind=ExecutorConfig,
            field="max_parallel",
            default=None,
            show_default=False,
            help="At most this many of the sweep's jobs run at once (the job array's throttle).",
        ),
    ] if sweep else []  # fmt: skip
    options = [
        click.option(
            "--executor",
            type=click.Choice(EXECUTORS),
            default=defaults.kind,
            show_default=True,
            help="local: this machine; slurm: SLURM jobs submitted through submitit, one job per run, a "
            "sweep as one job array.",
        ),
        *per_run,
        click.option("--partition", default=None, help="SLURM partition [default: the cluster's default]."),
        config_option("--nodes", kind=ExecutorConfig, field="nodes", default=defaults.nodes,
                      help="Nodes per run (DistributedDataParallel across them)."),
        config_option("--gpus-per-node", kind=ExecutorConfig, field="gpus_per_node", default=None,
                      show_default=False, help="GPUs per node of a run, one process each."),
        config_option("--tasks-per-node", kind=ExecutorConfig, field="tasks_per_node", default=None,
                      show_default=False, help="Processes per node of a run without GPUs [default: 1]."),
        config_option("--cpus-per-run", kind=ExecutorConfig, field="cpus_per_run", default=None,
                      show_default=False, help="CPUs for each process of a run (SLURM's --cpus-per-task)."),
        config_option("--mem-gb", kind=ExecutorConfig, field="mem_gb", default=None, show_default=False,
                      help="Memory per node of a run, in GB."),
        config_option("--time-min", kind=ExecutorConfig, field="time_min", default=defaults.time_min,
                      help="Time limit of each job in minutes; a run that needs longer is requeued from "
                      "its checkpoint."),
        click.option("--slurm", "slurm_options", type=KeyValue(), multiple=True,
                     help="Any other sbatch option as KEY=VALUE, repeatable (account=..., qos=..., "
                     "constraint=...)."),
        click.option("--wait/--no-wait", "wait", default=True, show_default=True,
                     help="Wait for the jobs with a progress bar (--no-wait: return once submitted)."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def executor_from_options(values: dict[str, Any]) -> ExecutorConfig:
    """The ExecutorConfig the parsed options describe, taking them out of ``values``."""
    gpus_per_run = values.pop("gpus_per_run", None)
    gpus_per_node = values.pop("gpus_per_node")
    if gpus_per_run is not None and gpus_per_node is not None and gpus_per_run != gpus_per_node:
        raise ValueError("give --gpus-per-run or --gpus-per-node, not both")
    if values["executor"] == "local" and command_line_given("time_min"):
        raise ValueError("--time-min applies to --executor slurm only")
    return ExecutorConfig(
        kind=values.pop("executor"),
        jobs=values.pop("jobs", 1),
        partition=values.pop("partition"),
        nodes=values.pop("nodes"),
        gpus_per_node=gpus_per_run or gpus_per_node or 0,
        tasks_per_node=values.pop("tasks_per_node"),
        cpus_per_run=values.pop("cpus_per_run"),
        mem_gb=values.pop("mem_gb"),
        time_min=values.pop("time_min"),
        max_parallel=values.pop("max_parallel", None),
        slurm=tuple((key, str(value)) for key, value in values.pop("slurm_options")),
        wait=values.pop("wait"),
    )
