"""``bench sweep``: a grid of runs (denoisers x targets x loss weights x schedules x seeds) trained one after
another into ``OUT/<denoiser>[-<target>][-<loss weight>]-<schedule>-s<seed>``, under one fair training
budget, then compared.

Run folders are named by their grid point, so running the same command again skips the runs already
complete, resumes a half-done one from its checkpoint, and refuses a folder that holds a different
configuration (a changed budget would silently mix two experiments in one table).

The budget is the same for every design: optimizer steps, minutes of training, or training FLOPs. A FLOP
budget is turned into steps per design from the measured forward+backward FLOPs per image
(``torch.utils.flop_counter``), so a cheaper network trains for more steps; the budget is recorded in every
run's config and shown in the report.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import RunConfig
from ..io import read_json, write_json_atomic
from ..runs.resume import run_or_resume
from ..runs.run_folder import RunFolder

if TYPE_CHECKING:
    from .executors import ExecutorConfig

SWEEP_NAME = "sweep.json"
LEFT_POLL_S = 5.0  # how often a sweep looks at the points another process or job is training
BUDGET_KINDS = ("steps", "minutes", "flops")


@dataclass(frozen=True)
class Budget:
    """One training budget for every design of a sweep."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ValueError(f"budget kind must be one of {', '.join(BUDGET_KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.value) and self.value > 0):
            raise ValueError(f"a {self.kind} budget must be a positive number, got {self.value!r}")

    def describe(self) -> str:
        return {
            "steps": f"{self.value:g} optimizer steps",
            "minutes": f"{self.value:g} minutes of training",
            "flops": f"{self.value:.3g} training FLOPs",
        }[self.kind]


def run_id(config: RunConfig) -> str:
    target = config.denoiser_options.get("target")
    weight = config.train.loss_weight
    schedule = config.diffusion.schedule + ("-ztsnr" if config.diffusion.zero_terminal_snr else "")
    levels = config.train.noise_levels
    return "-".join(
        [
            config.denoiser,
            *(["cond"] if config.conditional else []),
            *([str(target)] if target else []),
            *([weight] if weight != "uniform" else []),
            schedule,
            *([levels] if levels != "uniform" else []),
            f"s{config.seed}",
        ]
    )


def grid(
    base: RunConfig,
    *,
    denoisers: list[str],
    schedules: list[str],
    seeds: list[int],
    targets: Sequence[str | None] = (None,),
    loss_weights: Sequence[str | None] = (None,),
) -> list[RunConfig]:
    """Every combination, seeds innermost so that a design's seeds finish together (``None`` in
    ``targets`` or ``loss_weights``: the denoiser's own target, the base config's weighting)."""
    configs = []
    axes = itertools.product(denoisers, targets, loss_weights, schedules, seeds)
    for denoiser, target, weight, schedule, seed in axes:
        options = dict(base.denoiser_options)
        if target:
            options["target"] = target
        configs.append(
            replace(
                base,
                denoiser=denoiser,
                denoiser_options=options,
                diffusion=replace(base.diffusion, schedule=schedule),
                train=replace(base.train, loss_weight=weight or base.train.loss_weight),
                seed=seed,
            )
        )
    ids = [run_id(c) for c in configs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"the grid names the same run twice: {', '.join(duplicates)}")
    return configs


def apply_budget(config: RunConfig, budget: Budget) -> RunConfig:
    """The config with the sweep's budget; a FLOP budget becomes this design's number of steps."""
    if budget.kind == "steps":
        if budget.value != int(budget.value):
            raise ValueError(f"a steps budget must be a whole number, got {budget.value!r}")
        return replace(config, train=replace(config.train, steps=int(budget.value), minutes=None))
    if budget.kind == "minutes":
        # minutes rule: the step cap is lifted far beyond what any design reaches in that time
        return replace(config, train=replace(config.train, steps=10**9, minutes=budget.value))
    per_step = training_flops_per_step(config)
    steps = max(1, round(budget.value / per_step))
    return replace(config, train=replace(config.train, steps=steps, minutes=None, budget_flops=budget.value))


def training_flops_per_step(config: RunConfig) -> float:
    """Forward+backward FLOPs of one optimizer step: per-image training FLOPs x the batch size."""
    return network_flops(config)[0] * config.train.batch_size


def network(config: RunConfig):
    """The run's network as it trains (unconditional, on the CPU) and its image shape."""
    from ..runs.experiment import build_model

    shape = image_shape(config.dataset, config.data_root, config.image_size)
    return build_model(config, shape), shape


_COUNTED: dict[str, tuple[float, float]] = {}


def network_flops(config: RunConfig) -> tuple[float, float]:
    """(training, forward) FLOPs per image of the run's network, counted once per network."""
    import torch

    from ..evaluation.throughput import forward_flops_per_image, training_flops_per_image

    options = sorted(config.denoiser_options.items())
    key = repr((config.dataset, config.data_root, config.image_size, config.denoiser, options,
                config.channels_last, config.fused_norm))  # fmt: skip
    if key not in _COUNTED:
        model, shape = network(config)
        device = torch.device("cpu")
        _COUNTED[key] = (
            training_flops_per_image(model, shape, device),
            forward_flops_per_image(model, shape, device),
        )
    return _COUNTED[key]


@functools.lru_cache(maxsize=8)
def image_shape(dataset: str, root: str | None, image_size: int | None) -> tuple[int, int, int]:
    from .. import datasets

    return tuple(datasets.load(dataset, root=root, image_size=image_size).image_shape)


def prepare_sweep(
    configs: list[RunConfig],
    budget: Budget,
    out: Path,
    *,
    command: str | None = None,
    download: bool = False,
) -> list[tuple[str, RunConfig]]:
    """Every config with the budget applied, named by its grid point, each checked as its run will check
    it; then records the grid in ``out/sweep.json`` (with the command that made it, and the points skipped as
    impossible designs with the reason), so an interrupted sweep says what it was asked to do, and a sweep
    with another budget in the same folder is refused."""
    budgeted = [apply_budget(c, budget) for c in configs]
    names = [run_id(c) for c in budgeted]
    impossible = check_points(budgeted, names, out, download=download)
    kept = [(name, c) for name, c in zip(names, budgeted, strict=True) if name not in impossible]
    if not kept:
        raise ValueError(f"no grid point can run: {'; '.join(f'{n}: {r}' for n, r in impossible.items())}")
    for name, reason in impossible.items():
        warnings.warn(f"grid point {name} skipped: {reason}", stacklevel=2)
    names, budgeted = [name for name, _ in kept], [c for _, c in kept]
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "budget": {"kind": budget.kind, "value": budget.value, "description": budget.describe()},
        "runs": {name: {"train_steps": c.train.steps} for name, c in zip(names, budgeted, strict=True)},
        "skipped": impossible or None,
    }
    path = out / SWEEP_NAME
    old = read_json(path) if path.is_file() else None
    if old is not None:
        if old.get("budget") != manifest["budget"]:
            raise ValueError(
                f"{out} holds a sweep with budget {old.get('budget', {}).get('description')!r}, not "
                f"{budget.describe()!r}; choose another --out"
            )
        manifest["runs"] = {**old.get("runs", {}), **manifest["runs"]}
        manifest["command"] = old.get("command")
    if command is not None:
        manifest["command"] = command
    manifest = {k: v for k, v in manifest.items() if v is not None}
    if manifest != old:  # an unchanged sweep leaves its manifest untouched
        write_json_atomic(path, manifest)
    return list(zip(names, budgeted, strict=True))


def check_points(
    configs: list[RunConfig], names: list[str], out: Path, *, download: bool
) -> dict[str, str]:
    """Check every point still to train as its run will (plugin names, options, sampler, teacher, data),
    before anything is written: an option the last design refuses must not cost the first one's training.
    The device is the one thing checked where the run starts, since jobs run elsewhere. The error names the
    point. Returns the points whose combination of choices cannot work at all (an eps target on a schedule
    that reaches pure noise: :class:`bench.process.denoiser.ImpossibleDesign`), by name, with the reason: a
    grid crosses every choice with every other, and such a point is skipped rather than stopping the
    others."""
    from ..process.denoiser import ImpossibleDesign
    from ..runs.run import prepare

    impossible = {}
    for name, config in zip(names, configs, strict=True):
        if RunFolder(out / name).state() == "complete":
            continue
        try:  # on the CPU: a sweep submitted from a login node checks what its jobs will run on GPUs
            prepare(replace(config, device="cpu"), download=download)
        except ImpossibleDesign as exc:
            impossible[name] = str(exc)
        except (ValueError, FileNotFoundError) as exc:
            exc.args = (f"grid point {name}: {exc}",)
            raise
    return impossible


def run_sweep(
    configs: list[RunConfig],
    budget: Budget,
    out: Path,
    *,
    progress: bool = True,
    download: bool = False,
    on_run: Callable[[int, int, str, str], None] | None = None,
    command: str | None = None,
) -> list[Path]:
    """Train every config (with the budget applied) one after another in this process into ``out``. A point
    another live process or job is training is left to it and waited for at the end (and trained here if
    its holder dies first)."""
    from ..runs.claims import ClaimedElsewhere

    points = prepare_sweep(configs, budget, out, command=command, download=download)
    left: dict[str, tuple[int, RunConfig]] = {}
    for i, (name, config) in enumerate(points, start=1):
        try:
            _, action = run_or_resume(config, out, name, progress=progress, download=download)
        except ClaimedElsewhere:
            left[name] = (i, config)
            action = "left to the process or job that holds it"
        if on_run is not None:
            on_run(i, len(points), name, action)
    while left:
        time.sleep(LEFT_POLL_S)
        for name, (i, config) in list(left.items()):
            try:
                _, action = run_or_resume(config, out, name, progress=progress, download=download)
            except ClaimedElsewhere:
                continue
            del left[name]
            if on_run is not None:
                on_run(i, len(points), name, action)
    return [out / name for name, _ in points]


def submit_sweep(
    configs: list[RunConfig],
    budget: Budget,
    out: Path,
    execution: ExecutorConfig,
    *,
    progress: bool = True,
    on_finish: Callable[[str, str], None] | None = None,
    command: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Hand the grid points that are neither complete nor running to jobs (processes here, or one SLURM job
    array), then, unless ``execution.wait`` is off, wait for them. Returns the names submitted and the final
    state of each (empty without waiting)."""
    from .executors import check_cluster, needs_submitting, require_submitit, submit, wait

    require_submitit()
    if execution.kind == "slurm":
        check_cluster(execution)  # before anything is written
    points = prepare_sweep(configs, budget, out, command=command)
    todo = [(name, config) for name, config in points if needs_submitting(out, name)]
    submitted = submit(todo, out, execution) if todo else []
    names = [s.name for s in submitted]
    if not execution.wait:
        return names, {}
    every = [name for name, _ in points]  # another sweep's jobs may be training some of them
    return names, wait(every, out, submitted, progress=progress, poll_s=execution.poll_s, on_finish=on_finish)
