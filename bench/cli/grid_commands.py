"""``bench sweep`` and ``bench study``: groups of runs trained one after another under one budget, then
compared; the same command again skips what is complete and resumes what is half done."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..config import RunConfig, TrainConfig
from ..studies.budget import PAIR_SHARE, TEACHER_SHARE
from .cluster_options import executor_from_options, executor_options
from .group import main
from .options import DATASET, SCHEDULE, CommaList, command_line_given, config_option, usage_errors
from .run_options import (
    DEFAULTS,
    SEEDS,
    check_sigma_data_applies,
    config_from_options,
    device_option,
    image_size_option,
    run_options,
)
from .training_options import channels_last_option, fused_norm_option


@main.group(invoke_without_command=True)
@run_options(grid=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results/sweep"),
    show_default=True,
    help="Folder of the sweep: one run folder per grid point, and report/.",
)
@executor_options(sweep=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; one line per run.")
@click.pass_context
@usage_errors(interrupted="interrupted: {exc}; run the same command again to continue the sweep")
def sweep(ctx: click.Context, out: Path, quiet: bool, **values: Any) -> None:
    """Train a grid of designs under one fair budget, then write OUT/report/; `bench sweep status OUT`
    shows where each run is.

    Run folders are named by grid point (e.g. unet-linear-s0): the same command again skips complete runs,
    resumes a half-done one and, with jobs, submits only what is neither complete nor running. The budget is
    --steps, --minutes or --budget-flops, the same for every design; the report's budget column says
    which. Runs train one after another in this process, --jobs N at a time as processes here, or as one
    SLURM job array with --executor slurm.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..cluster.sweep import grid, run_sweep, submit_sweep
    from ..reports import compare_report

    check_sigma_data_applies(values)
    execution = executor_from_options(values)
    names, schedule_names, seeds = values.pop("denoiser"), values.pop("schedule"), values.pop("seeds")
    targets: list[str | None] = values.pop("target") or [None]
    weights: list[str] = values.pop("loss_weight")
    budget = sweep_budget(values.pop("budget_flops"), values)
    base = config_from_options(
        {**values, "denoiser": names[0], "schedule": schedule_names[0], "target": None, "seed": seeds[0],
         "loss_weight": weights[0]}
    )  # fmt: skip
    configs = grid(
        base,
        denoisers=names,
        schedules=schedule_names,
        seeds=seeds,
        targets=targets,
        loss_weights=weights,
    )

    def on_run(i: int, total: int, name: str, action: str) -> None:
        click.echo(f"[{i}/{total}] {name}: {'complete' if action in ('started', 'resumed') else action}")

    command = typed_command()
    where = "in this process" if execution.in_process else describe(execution)
    click.echo(f"sweep of {len(configs)} grid points into {out} ({where}); budget: {budget.describe()}")
    if execution.in_process:
        run_sweep(configs, budget, out, progress=not quiet, download=values["download"], on_run=on_run,
                  command=command)  # fmt: skip
    else:
        if values["download"]:  # once here, not by every job at once
            from .. import datasets

            datasets.load(base.dataset, root=base.data_root, download=True, image_size=base.image_size)
        submitted, finished = submit_sweep(
            configs, budget, out, execution, progress=not quiet, command=command,
            on_finish=lambda name, state: click.echo(f"{name}: {state}") if quiet else None,
        )  # fmt: skip
        click.echo(f"submitted {len(submitted)} of {len(configs)} runs (the others are complete or running)")
        if not execution.wait:
            click.echo(f"watch them with `bench sweep status {out}`; run the same command again to report")
            return
        unfinished = sorted(name for name, state in finished.items() if state != "complete")
        if unfinished:
            raise click.ClickException(
                f"{len(unfinished)} runs did not complete ({', '.join(unfinished)}); see "
                f"`bench sweep status {out}`, then run the same command again"
            )
    for path in compare_report.write_folder_report(out, out / "report"):
        click.echo(f"wrote {path}")


@sweep.command("status")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@usage_errors
def sweep_status(out: Path) -> None:
    """One line per grid point of the sweep in OUT: pending, running, requeued, complete, failed or
    interrupted, its job, the step it reached and its training seconds; a failed run's last log lines."""
    from ..cluster.status import format_status, sweep_status
    from ..io import read_json

    manifest = read_json(out / "sweep.json") if (out / "sweep.json").is_file() else {}
    click.echo(format_status(sweep_status(out), manifest.get("command")))
    for name, reason in manifest.get("skipped", {}).items():
        click.echo(f"{name} skipped: {reason}")


def typed_command() -> str | None:
    """The command line, when this process is the ``bench`` program (not a test calling the command)."""
    program = Path(sys.argv[0])
    if program.name == "bench" or program.parts[-3:] == ("bench", "cli", "__main__.py"):
        return shlex.join(["bench", *sys.argv[1:]])
    return None


def describe(execution) -> str:
    if execution.kind == "local":
        return f"{execution.jobs} at a time as processes on this machine"
    limit = f", at most {execution.max_parallel} at once" if execution.max_parallel else ""
    return f"as a SLURM job array{limit}"


def sweep_budget(budget_flops: float | None, values: dict[str, Any]):
    """The one budget of a sweep, from whichever of --budget-flops, --minutes, --steps was given."""
    from ..cluster.sweep import Budget

    given = [
        name
        for name, on in (
            ("--budget-flops", budget_flops is not None),
            ("--minutes", values["minutes"] is not None),
            ("--steps", command_line_given("steps")),
        )
        if on
    ]
    if len(given) > 1:
        raise click.UsageError(f"give one training budget, not {' and '.join(given)}")
    if budget_flops is not None:
        return Budget("flops", budget_flops)
    if values["minutes"] is not None:
        return Budget("minutes", values["minutes"])
    return Budget("steps", values["steps"])


@main.group()
def study() -> None:
    """Preset groups of runs that answer one question."""


class Jobs(click.ParamType):
    """``auto`` or a whole number of at least 1."""

    name = "auto|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | int:
        if value == "auto" or isinstance(value, int) and value >= 1:
            return value
        try:
            jobs = int(value)
        except ValueError:
            jobs = 0
        if jobs < 1:
            self.fail(f"expected auto or a whole number of at least 1, got {value!r}", param, ctx)
        return jobs


JOBS = Jobs()


def study_jobs(jobs: str | int, device: str) -> int:
    """``--jobs`` as a number: ``auto`` is :func:`bench.studies.runner.default_jobs` on the study's
    device."""
    from ..studies.runner import default_jobs

    return default_jobs(device) if jobs == "auto" else int(jobs)


def study_options(out: str, *, seeds: bool):
    """The options every study shares: where it goes, the data, schedule, budget and machine settings, and
    one seed (``--seed``) or several (``--seeds``)."""
    seed_option = (
        click.option(
            "--seeds",
            type=SEEDS,
            default="0",
            show_default=True,
            help="Seeds, comma-separated: with two or more, every number is a mean with its 95% interval.",
        )
        if seeds
        else click.option("--seed", type=int, default=0, show_default=True)
    )
    options = [
        click.option(
            "--out", type=click.Path(file_okay=False, path_type=Path), default=Path(out), show_default=True
        ),
        click.option("--dataset", type=DATASET, default=DEFAULTS.dataset, show_default=True),
        click.option("--schedule", type=SCHEDULE, default=DEFAULTS.diffusion.schedule, show_default=True),
        config_option(
            "--steps",
            kind=TrainConfig,
            field="steps",
            default=DEFAULTS.train.steps,
            help="Training budget of every design, in optimizer steps.",
        ),
        image_size_option,
        channels_last_option,
        fused_norm_option,
        seed_option,
        device_option,
        click.option(
            "--jobs",
            type=JOBS,
            default="auto",
            show_default=True,
            help="Train this many of the study's independent runs at once, as processes on this machine, "
            "each with its share of the CPU threads or a GPU of its own (auto: one per core on the CPU, each "
            "with one thread; one per GPU); 1 trains them one after another in this process.",
        ),
        click.option("-q", "--quiet", is_flag=True),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def study_base(
    dataset: str,
    schedule: str,
    steps: int,
    image_size: int | None,
    channels_last: bool,
    fused_norm: bool,
    seed: int,
    device: str,
) -> RunConfig:
    """The default run's config with a study's shared settings."""
    from .. import datasets

    return replace(
        DEFAULTS,
        dataset=dataset,
        image_size=image_size or datasets.run_image_size(dataset),
        channels_last=channels_last,
        fused_norm=fused_norm,
        diffusion=replace(DEFAULTS.diffusion, schedule=schedule),
        train=replace(DEFAULTS.train, steps=steps),
        seed=seed,
        device=device,
    )


@study.command("direct")
@study_options("results/study-direct", seeds=False)
@usage_errors(interrupted="interrupted; run the same command again to resume")
def study_direct(out: Path, quiet: bool, jobs: str | int, **settings: Any) -> None:
    """Why not predict the image directly from pure noise? Trains unet (eps), unet (x0), direct and
    direct-distilled (the same network on the unet (eps) run's noise-to-image pairs) with one backbone and
    budget, scores that teacher with 1-50 deterministic DDIM steps (skipping finished runs, resuming
    half-done ones), then writes OUT/report/."""
    from ..studies.direct import run_direct_study

    jobs = study_jobs(jobs, settings["device"])
    for path in run_direct_study(study_base(**settings), out, progress=not quiet, jobs=jobs):
        click.echo(f"wrote {path}")


@study.command("design")
@study_options("results/study-design", seeds=True)
@usage_errors(interrupted="interrupted; run the same command again to resume")
def study_design(out: Path, quiet: bool, seeds: list[int], jobs: str | int, **settings: Any) -> None:
    """Which target and loss weighting, with which sampler? Trains the small U-Net predicting eps, x0, v
    and EDM's F, each with uniform and min-SNR-5 loss weighting, at one budget; scores each with DDIM (eta
    0) and DPM-Solver++(2M) at 10 network calls and with the better of DDIM (eta 1) and DPM-Solver++(2M) at
    50, and with DPM-Solver++(2M) and Heun on the log-SNR grid at about 10 and 50 calls; writes OUT/report/
    with design.md, and prints it. Finished runs and scores are kept."""
    from ..studies.design import run_design_study

    base = study_base(**settings, seed=seeds[0])
    jobs = study_jobs(jobs, base.device)
    written = run_design_study(base, out, seeds, progress=not quiet, jobs=jobs)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo("")
    click.echo((out / "report" / "design.md").read_text())


@study.command("flow")
@study_options("results/study-flow", seeds=True)
@usage_errors(interrupted="interrupted; run the same command again to resume")
def study_flow(out: Path, quiet: bool, seeds: list[int], jobs: str | int, **settings: Any) -> None:
    """DDPM or flow matching, at one budget? Trains the small U-Net as DDPM (eps on the study's schedule),
    with flow matching's velocity on that schedule (the parametrisation alone), as rectified flow (the
    rectified-flow schedule, velocity, uniform t) and with SD3's recipe (the same with logit-normal t); scores
    each as bench study design does, names each design's best sampler at about 10 and at 50 calls; writes
    OUT/report/ with flow.md, and prints it. Finished runs and scores are kept."""
    from ..studies.design import run_design_study

    base = study_base(**settings, seed=seeds[0])
    jobs = study_jobs(jobs, base.device)
    written = run_design_study(base, out, seeds, progress=not quiet, flow=True, jobs=jobs)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo("")
    click.echo((out / "report" / "flow.md").read_text())


@study.command("one-step")
@study_options("results/study-one-step", seeds=True)
@usage_errors(interrupted="interrupted; run the same command again to resume")
@click.option(
    "--progressive-rounds",
    type=click.IntRange(0, 6),
    default=0,
    show_default=True,
    help="Also train this many rounds of progressive distillation from the teacher's 33 DDIM steps "
    "(17, 9, 5, 3, 2, 1 calls), each a training at the study's budget.",
)
@click.option(
    "--budget-pflops",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="One total budget per route, in PFLOPs: its teachers, their pairs and teacher calls included "
    "[default: each training at --steps].",
)
@click.option(
    "--teacher-share",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=TEACHER_SHARE,
    show_default=True,
    help="With --budget-pflops: the teacher's share of a route's budget (a chain splits the student's rest "
    "the same way).",
)
@click.option(
    "--pair-share",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=PAIR_SHARE,
    show_default=True,
    help="With --budget-pflops: at most this share of a stage's budget makes its teacher's pairs.",
)
@click.option(
    "--routes",
    type=CommaList(),
    default=None,
    help="Train only these routes (and their teachers), comma-separated [default: all].",
)
def study_one_step(
    out: Path,
    quiet: bool,
    seeds: list[int],
    progressive_rounds: int,
    budget_pflops: float | None,
    teacher_share: float,
    pair_share: float,
    routes: list[str] | None,
    jobs: str | int,
    **settings: Any,
) -> None:
    """The seed's question with today's answers: one network call from pure noise, each route's compute
    with its teachers counted. Trains an EDM U-Net teacher, direct, direct-distilled, consistency
    distillation and consistency training, a rectified flow, its reflow and the reflow's one-call student,
    easy and continuous-time consistency (ECT from the teacher, sCT) and the flow maps MeanFlow and shortcut;
    scores each at 1, 2 and 4 calls and the teacher with DDIM, DPM-Solver++(2M) and Heun at 1-50; writes
    OUT/report/ with one_step.md, one_step_paired.md and quality_vs_calls.png, and prints the tables.

    Each training runs --steps, or with --budget-pflops X every route spends X in all: a route with a
    teacher gives it --teacher-share of X and trains its student on the rest. Finished runs and scores are
    kept."""
    from ..studies.budget import TotalBudget
    from ..studies.one_step import run_one_step_study

    budget = None
    if budget_pflops is not None:
        if command_line_given("steps"):
            raise click.UsageError(
                "give one budget: --budget-pflops (each route's total) or --steps (each run)"
            )
        budget = TotalBudget(budget_pflops * 1e15, teacher_share, pair_share)
    else:
        given = [f"--{n.replace('_', '-')}" for n in ("teacher_share", "pair_share") if command_line_given(n)]
        if given:
            raise click.UsageError(f"{' and '.join(given)} split a total budget: give --budget-pflops too")
    base = study_base(**settings, seed=seeds[0])
    jobs = study_jobs(jobs, base.device)
    written = run_one_step_study(
        base, out, seeds, rounds=progressive_rounds, budget=budget, routes=routes, progress=not quiet,
        jobs=jobs,
    )  # fmt: skip
    for path in written:
        click.echo(f"wrote {path}")
    for table in ("one_step", "one_step_paired"):
        click.echo("")
        click.echo((out / "report" / f"{table}.md").read_text())


@study.command("guidance")
@study_options("results/study-guidance", seeds=False)
@usage_errors(interrupted="interrupted; run the same command again to resume")
def study_guidance(out: Path, quiet: bool, jobs: str | int, **settings: Any) -> None:
    """Classifier-free guidance, and does knowing the class rescue one-call prediction from pure noise?
    Trains the unconditional unet, the conditional unet (label dropout 0.1) and the conditional direct
    design at one budget; scores the conditional ones at guidance scales 1-4 (the unet also with guidance
    only for sigma in (0.3, 5]); writes OUT/report/ with guidance.md and quality_vs_guidance.png, and
    prints the table. Finished runs and scores are kept."""
    from ..studies.guidance import run_guidance_study

    jobs = study_jobs(jobs, settings["device"])
    written = run_guidance_study(study_base(**settings), out, progress=not quiet, jobs=jobs)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo("")
    click.echo((out / "report" / "guidance.md").read_text())
