"""``bench sweep`` and ``bench study``: groups of runs trained one after another under one budget, then
compared; the same command again skips what is complete and resumes what is half done."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..config import TrainConfig
from . import main
from .options import DATASET, SCHEDULE, command_line_given, config_option, usage_errors
from .run_options import (
    DEFAULTS,
    channels_last_option,
    config_from_options,
    device_option,
    fused_norm_option,
    image_size_option,
    run_options,
)


@main.command()
@run_options(grid=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results/sweep"),
    show_default=True,
    help="Folder of the sweep: one run folder per grid point, and report/.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; one line per run.")
@usage_errors(interrupted="interrupted: {exc}; run the same command again to continue the sweep")
def sweep(out: Path, quiet: bool, **values: Any) -> None:
    """Train a grid of designs one after another under one fair budget, then write OUT/report/.

    Run folders are named by grid point (e.g. unet-linear-s0): the same command again skips complete runs
    and resumes a half-done one. The budget is --steps, --minutes or --budget-flops, the same for every
    design; the report's budget column says which.
    """
    from .. import compare_report
    from ..sweep import grid, run_sweep

    names, schedule_names, seeds = values.pop("denoiser"), values.pop("schedule"), values.pop("seeds")
    targets: list[str | None] = values.pop("target") or [None]
    budget = sweep_budget(values.pop("budget_flops"), values)
    base = config_from_options(
        {**values, "denoiser": names[0], "schedule": schedule_names[0], "target": None, "seed": seeds[0]}
    )
    configs = grid(base, denoisers=names, schedules=schedule_names, seeds=seeds, targets=targets)

    def on_run(i: int, total: int, name: str, action: str) -> None:
        click.echo(f"[{i}/{total}] {name}: {action if action == 'skipped' else 'complete'}")

    click.echo(f"sweep of {len(configs)} runs into {out}; budget: {budget.describe()}")
    run_sweep(configs, budget, out, progress=not quiet, download=values["download"], on_run=on_run)
    for path in compare_report.write_folder_report(out, out / "report"):
        click.echo(f"wrote {path}")


def sweep_budget(budget_flops: float | None, values: dict[str, Any]):
    """The one budget of a sweep, from whichever of --budget-flops, --minutes, --steps was given."""
    from ..sweep import Budget

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


@study.command("direct")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results/study-direct"),
    show_default=True,
)
@click.option("--dataset", type=DATASET, default=DEFAULTS.dataset, show_default=True)
@click.option("--schedule", type=SCHEDULE, default=DEFAULTS.diffusion.schedule, show_default=True)
@config_option(
    "--steps",
    kind=TrainConfig,
    field="steps",
    default=DEFAULTS.train.steps,
    help="Training budget of every design, in optimizer steps.",
)
@image_size_option
@channels_last_option
@fused_norm_option
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@click.option("-q", "--quiet", is_flag=True)
@usage_errors(interrupted="interrupted; run the same command again to resume")
def study_direct(
    out: Path,
    dataset: str,
    schedule: str,
    steps: int,
    image_size: int | None,
    channels_last: bool,
    fused_norm: bool,
    seed: int,
    device: str,
    quiet: bool,
) -> None:
    """Why not predict the image directly from pure noise? Trains unet (eps), unet (x0) and direct with one
    backbone and budget (skipping finished runs, resuming half-done ones), then writes OUT/report/."""
    from .. import datasets
    from ..study import run_direct_study

    base = replace(
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
    for path in run_direct_study(base, out, progress=not quiet):
        click.echo(f"wrote {path}")
