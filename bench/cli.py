"""The ``bench`` command line: parses and validates options, then calls the library functions that the
tests call directly. Usage errors exit with code 2 and name the bad option and what is allowed."""

from __future__ import annotations

import ast
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from .config import AUTO_SAMPLER, PRECISIONS, DiffusionConfig, RunConfig, TrainConfig
from .environment import DEVICES

DEFAULTS = RunConfig()


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as a Python literal when it is one (``3``, ``0.1``, ``(1,2,2)``,
    ``True``), else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="'-o' / '--option'")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip().replace("-", "_"), value


def check_name(registry_get, value: str, option: str) -> str:
    try:
        registry_get(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    return value


def positive_int(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


def usage_errors(fn):
    """Run ``fn`` and turn the library's ValueErrors about input into click usage errors (exit code 2)."""
    try:
        return fn()
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="ddpm-bench")
def main() -> None:
    """Benchmark denoiser designs for DDPM diffusion models: train, sample, measure, compare."""


@main.command("list")
@click.option("--shape", default="1,28,28", show_default=True, help="Image shape C,H,W for parameter counts.")
def list_plugins(shape: str) -> None:
    """List every registered schedule, denoiser, sampler and dataset plugin."""
    from .listing import plugin_table

    try:
        image_shape = tuple(int(s) for s in shape.split(","))
    except ValueError:
        raise click.BadParameter(f"expected C,H,W integers, got {shape!r}", param_hint="'--shape'") from None
    click.echo(plugin_table(image_shape))


def grid_options() -> list:
    """``bench sweep``'s grid: comma-separated lists where ``bench run`` takes one value."""
    return [
        click.option(
            "--denoiser",
            default=DEFAULTS.denoiser,
            show_default=True,
            help="Denoiser plugins, comma-separated (e.g. unet,transformer,direct).",
        ),
        click.option(
            "--schedule",
            default=DEFAULTS.diffusion.schedule,
            show_default=True,
            help="Schedule plugins, comma-separated.",
        ),
        click.option(
            "--target",
            default=None,
            help="Prediction targets, comma-separated from eps, x0, v (default: each denoiser's own).",
        ),
        click.option("--seeds", default="0", show_default=True, help="Seeds, comma-separated (e.g. 0,1,2)."),
        click.option(
            "--budget-flops",
            type=float,
            default=None,
            help="Training budget in forward+backward FLOPs, the same for every design (steps per design "
            "follow from its measured FLOPs per image); replaces --steps.",
        ),
    ]


image_size_option = click.option(
    "--image-size",
    type=int,
    default=None,
    callback=positive_int,
    help="Resize images to this size [default: the dataset's run size: 14 for mnist5k, else native].",
)
channels_last_option = click.option(
    "--channels-last/--no-channels-last",
    default=DEFAULTS.channels_last,
    show_default=True,
    help="Keep convolution weights and activations in NHWC (faster with oneDNN and cuDNN).",
)
fused_norm_option = click.option(
    "--fused-norm/--no-fused-norm",
    default=DEFAULTS.fused_norm,
    show_default=True,
    help="GroupNorm+SiLU in one C kernel on CPU for channels-last activations (built on first use with the "
    "system C compiler; PyTorch's operators where it does not apply).",
)


def run_options(fn=None, *, grid: bool = False):
    """The options ``bench run`` shares with ``bench sweep`` (``grid=True``: lists for the grid's axes)."""
    if fn is None:
        return lambda f: run_options(f, grid=grid)
    single = [
        click.option(
            "--denoiser", default=DEFAULTS.denoiser, show_default=True, help="Denoiser plugin (bench list)."
        ),
        click.option(
            "--schedule", default=DEFAULTS.diffusion.schedule, show_default=True, help="Schedule plugin."
        ),
    ]
    options = [
        *(grid_options() if grid else single),
        click.option("--dataset", default=DEFAULTS.dataset, show_default=True, help="Dataset plugin."),
        click.option(
            "--data-root",
            type=click.Path(file_okay=False),
            default=None,
            help="Folder of torchvision datasets or of an image folder.",
        ),
        click.option(
            "--download", is_flag=True, help="Let torchvision download the dataset (needs internet)."
        ),
        image_size_option,
        click.option(
            "--preset", default=None, help="Denoiser size preset (e.g. small, ddpm-cifar10, DiT-S/2)."
        ),
        *(
            []
            if grid
            else [
                click.option(
                    "--target",
                    type=click.Choice(["eps", "x0", "v"]),
                    default=None,
                    help="Override what the denoiser predicts.",
                )
            ]
        ),
        click.option(
            "-o",
            "--option",
            "options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Denoiser option, repeatable (e.g. -o base_channels=64 -o channel_mult=(1,2)).",
        ),
        click.option(
            "--timesteps",
            type=int,
            default=DEFAULTS.diffusion.timesteps,
            show_default=True,
            callback=positive_int,
            help="Diffusion steps T.",
        ),
        click.option("--zero-terminal-snr", is_flag=True, help="Rescale the schedule so alpha_bar[T-1] = 0."),
        click.option(
            "--steps",
            type=int,
            default=DEFAULTS.train.steps,
            show_default=True,
            callback=positive_int,
            help="Training budget in optimizer steps.",
        ),
        click.option(
            "--minutes", type=float, default=None, help="Training budget in minutes (first one wins)."
        ),
        click.option(
            "--batch-size",
            type=int,
            default=DEFAULTS.train.batch_size,
            show_default=True,
            callback=positive_int,
            help="Batch size per process (global = this x processes).",
        ),
        click.option(
            "--lr", type=float, default=DEFAULTS.train.lr, show_default=True, help="AdamW learning rate."
        ),
        click.option("--warmup-steps", type=int, default=DEFAULTS.train.warmup_steps, show_default=True),
        click.option("--ema-decay", type=float, default=DEFAULTS.train.ema_decay, show_default=True),
        click.option("--grad-clip", type=float, default=DEFAULTS.train.grad_clip, show_default=True),
        click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True),
        click.option(
            "--compile/--no-compile", default=False, show_default=True, help="torch.compile the model."
        ),
        channels_last_option,
        fused_norm_option,
        click.option(
            "--tune-malloc/--no-tune-malloc",
            default=DEFAULTS.tune_malloc,
            show_default=True,
            help="On CPU (glibc): keep freed activation memory for reuse instead of returning it to the OS "
            "every step.",
        ),
        click.option(
            "--tf32/--no-tf32",
            default=DEFAULTS.tf32,
            show_default=True,
            help="Allow TF32 matmuls and convolutions on CUDA GPUs (no effect on CPU).",
        ),
        click.option(
            "--checkpoint-every",
            type=int,
            default=DEFAULTS.train.checkpoint_every,
            show_default=True,
            callback=positive_int,
        ),
        click.option(
            "--sampler",
            default=AUTO_SAMPLER,
            show_default=True,
            help="ancestral, ddim, one_shot, or auto (one_shot for pure-noise designs, else ddim).",
        ),
        click.option(
            "--sample-steps",
            type=int,
            default=DEFAULTS.sample.steps,
            show_default=True,
            callback=positive_int,
            help="DDIM steps.",
        ),
        click.option(
            "--eta",
            type=float,
            default=DEFAULTS.sample.eta,
            show_default=True,
            help="DDIM noise: 0 deterministic, 1 DDPM-like.",
        ),
        click.option(
            "--n-samples",
            type=int,
            default=DEFAULTS.sample.n,
            show_default=True,
            callback=positive_int,
            help="Samples drawn for the grid and the metrics.",
        ),
        click.option("--no-eval", is_flag=True, help="Skip the quality metrics."),
        *([] if grid else [click.option("--seed", type=int, default=0, show_default=True)]),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def config_from_options(kw: dict[str, Any]) -> RunConfig:
    """Build (and validate) a RunConfig from ``run_options``' values."""
    import denoisers
    import schedules

    from . import datasets
    from .sampling import SAMPLERS

    check_name(denoisers.get, kw["denoiser"], "'--denoiser'")
    check_name(schedules.get, kw["schedule"], "'--schedule'")
    check_name(datasets.get, kw["dataset"], "'--dataset'")
    if kw["sampler"] != AUTO_SAMPLER:
        check_name(SAMPLERS.get, kw["sampler"], "'--sampler'")
    options = dict(parse_option(o) for o in kw["options"])
    if kw["preset"]:
        options["preset"] = kw["preset"]
    if kw["target"]:
        options["target"] = kw["target"]
    return usage_errors(
        lambda: RunConfig(
            denoiser=kw["denoiser"],
            denoiser_options=options,
            dataset=kw["dataset"],
            data_root=kw["data_root"],
            image_size=kw["image_size"] or datasets.run_image_size(kw["dataset"]),
            diffusion=DiffusionConfig(kw["schedule"], kw["timesteps"], kw["zero_terminal_snr"]),
            train=TrainConfig(
                steps=kw["steps"],
                minutes=kw["minutes"],
                batch_size=kw["batch_size"],
                lr=kw["lr"],
                warmup_steps=kw["warmup_steps"],
                ema_decay=kw["ema_decay"],
                grad_clip=kw["grad_clip"],
                precision=kw["precision"],
                compile=kw["compile"],
                checkpoint_every=kw["checkpoint_every"],
            ),
            sample=replace(
                DEFAULTS.sample,
                method=kw["sampler"],
                steps=kw["sample_steps"],
                eta=kw["eta"],
                n=kw["n_samples"],
                batch_size=min(DEFAULTS.sample.batch_size, kw["n_samples"]),
            ),
            evaluate=not kw["no_eval"],
            seed=kw["seed"],
            device=kw["device"],
            channels_last=kw["channels_last"],
            fused_norm=kw["fused_norm"],
            tune_malloc=kw["tune_malloc"],
            tf32=kw["tf32"],
        )
    )


def extend_budget(config: RunConfig, kw: dict[str, Any]) -> RunConfig:
    """On --resume the saved config rules; only a budget given on the command line (--steps, --minutes)
    replaces the saved one, so a finished run can be trained further."""
    ctx = click.get_current_context()
    changes = {
        name: kw[name]
        for name in ("steps", "minutes")
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }
    if not changes:
        return config
    return replace(config, train=usage_errors(lambda: replace(config.train, **changes)))


@main.command()
@run_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Folder that receives the run folder.",
)
@click.option(
    "--run-id", default=None, help="Name of the run folder (default: time, design and a random tag)."
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in this folder with its saved config.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; print only the run folder.")
def run(out: Path, run_id: str | None, resume: Path | None, quiet: bool, **kw: Any) -> None:
    """Train a denoiser, sample it, measure it; results land in OUT/<run-id>/.

    Under torchrun (e.g. `torchrun --nproc-per-node 2 -m bench.cli run ...`) training uses
    DistributedDataParallel; --batch-size is per process.
    """
    from . import run as runner
    from .checkpoint import CheckpointError
    from .run_folder import RunFolder

    if resume is not None:
        config = usage_errors(lambda: RunFolder(resume).read_config())
        config = extend_budget(config, kw)
    else:
        config = config_from_options(kw)
    try:
        run_dir = runner.execute(
            config, out=out, run_id=run_id, resume=resume, download=kw["download"], progress=not quiet
        )
    except CheckpointError as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt as exc:
        click.echo(f"interrupted: {exc}", err=True)
        sys.exit(130)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    if not quiet:
        click.echo(f"run folder: {run_dir}")
        click.echo(f"samples:    {RunFolder(run_dir).samples_png}")
    else:
        click.echo(str(run_dir))


@main.command("sample")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--n", type=int, default=64, show_default=True, callback=positive_int, help="Number of samples."
)
@click.option("--method", default=AUTO_SAMPLER, show_default=True, help="ancestral, ddim, one_shot or auto.")
@click.option("--steps", type=int, default=50, show_default=True, callback=positive_int, help="DDIM steps.")
@click.option("--eta", type=float, default=DEFAULTS.sample.eta, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-ema", is_flag=True, help="Sample the raw weights instead of their EMA.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def sample_cmd(
    run_dir: Path,
    n: int,
    method: str,
    steps: int,
    eta: float,
    seed: int,
    no_ema: bool,
    device: str,
    quiet: bool,
) -> None:
    """Sample a finished (or checkpointed) run; writes RUN_DIR/samples/<name>.png and .npz."""
    from . import run as runner
    from .checkpoint import CheckpointError

    try:
        paths = runner.sample_run(
            run_dir,
            n=n,
            method=method,
            steps=steps,
            eta=eta,
            seed=seed,
            use_ema=not no_ema,
            device=device,
            progress=not quiet,
        )
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from None
    for path in paths:
        click.echo(str(path))


def parse_steps(text: str) -> list[int | None]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint="'--steps'"
        ) from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {text!r}", param_hint="'--steps'")
    return values


@main.command("eval")
@click.argument("run_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--samples",
    "samples_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Score samples made by other code: an .npz/.npy array or a folder of images.",
)
@click.option("--dataset", default=None, help="The dataset to score --samples against.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option("--n", type=int, default=500, show_default=True, callback=positive_int, help="Samples to draw.")
@click.option("--method", default=AUTO_SAMPLER, show_default=True)
@click.option(
    "--steps", default="50", show_default=True, help="DDIM steps; several as 10,20,50 give one entry each."
)
@click.option("--eta", type=float, default=DEFAULTS.sample.eta, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def eval_cmd(
    run_dir: Path | None,
    samples_path: Path | None,
    dataset: str | None,
    data_root: str | None,
    n: int,
    method: str,
    steps: str,
    eta: float,
    seed: int,
    device: str,
    quiet: bool,
) -> None:
    """Score a run's samples (RUN_DIR), or any samples (--samples FILE --dataset NAME), with every metric
    beside the real-data floor and the mean-image ceiling."""
    import json

    from . import datasets
    from . import run as runner
    from .checkpoint import CheckpointError
    from .scoring import load_external_samples, score_samples

    if (run_dir is None) == (samples_path is None):
        raise click.UsageError("give either RUN_DIR or --samples (with --dataset), not both or neither")
    if samples_path is not None:
        if dataset is None:
            raise click.UsageError("--samples needs --dataset NAME (the images to compare against)")
        check_name(datasets.get, dataset, "'--dataset'")

        def score():
            data = datasets.load(dataset, root=data_root)
            return score_samples(load_external_samples(samples_path), data, progress=not quiet)

        result = usage_errors(score)
        click.echo(json.dumps(result, indent=2))
        return
    try:
        entries = runner.evaluate_run(
            run_dir,
            n=n,
            method=method,
            steps=parse_steps(steps),
            eta=eta,
            seed=seed,
            device=device,
            progress=not quiet,
        )
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from None
    for entry in entries:
        q, ref = entry.quality, entry.references
        click.echo(
            f"{entry.sample.method} {entry.sample.steps} steps: fd {q['fd']:.3g} "
            f"(real {ref['real']['fd']:.3g}, mean image {ref['mean-image']['fd']:.3g}), "
            f"precision {q['precision']:.3f}, recall {q['recall']:.3f}"
        )


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
@click.option("--dataset", default=DEFAULTS.dataset, show_default=True)
@click.option("--schedule", default=DEFAULTS.diffusion.schedule, show_default=True)
@click.option(
    "--steps",
    type=int,
    default=DEFAULTS.train.steps,
    show_default=True,
    callback=positive_int,
    help="Training budget of every design, in optimizer steps.",
)
@image_size_option
@channels_last_option
@fused_norm_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
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
    from . import datasets
    from .study import run_direct_study

    check_name(datasets.get, dataset, "'--dataset'")
    import schedules as schedule_plugins

    check_name(schedule_plugins.get, schedule, "'--schedule'")
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
    try:
        written = run_direct_study(base, out, progress=not quiet)
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    for path in written:
        click.echo(f"wrote {path}")


def comma_list(text: str | None, option: str, allowed: list[str] | None = None) -> list[str]:
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not items:
        raise click.BadParameter(f"expected a comma-separated list, got {text!r}", param_hint=option)
    if allowed is not None:
        bad = [item for item in items if item not in allowed]
        if bad:
            raise click.BadParameter(
                f"{', '.join(bad)} not allowed; choose from {', '.join(allowed)}", param_hint=option
            )
    return items


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
def sweep(out: Path, quiet: bool, **kw: Any) -> None:
    """Train a grid of designs one after another under one fair budget, then write OUT/report/.

    Run folders are named by grid point (e.g. unet-linear-s0): the same command again skips complete runs
    and resumes a half-done one. The budget is --steps, --minutes or --budget-flops, the same for every
    design; the report's budget column says which.
    """
    import denoisers as denoiser_plugins
    import schedules as schedule_plugins

    from . import compare_report
    from .sweep import grid, run_sweep

    names = comma_list(kw.pop("denoiser"), "'--denoiser'")
    for name in names:
        check_name(denoiser_plugins.get, name, "'--denoiser'")
    schedule_names = comma_list(kw.pop("schedule"), "'--schedule'")
    for name in schedule_names:
        check_name(schedule_plugins.get, name, "'--schedule'")
    target_text = kw.pop("target")
    targets: list[str | None] = (
        comma_list(target_text, "'--target'", ["eps", "x0", "v"]) if target_text else [None]
    )
    try:
        seeds = [int(s) for s in comma_list(kw.pop("seeds"), "'--seeds'")]
    except ValueError:
        raise click.BadParameter("seeds must be whole numbers, e.g. 0,1,2", param_hint="'--seeds'") from None
    budget = sweep_budget(kw.pop("budget_flops"), kw)
    base = config_from_options(
        {**kw, "denoiser": names[0], "schedule": schedule_names[0], "target": None, "seed": seeds[0]}
    )
    configs = usage_errors(
        lambda: grid(base, denoisers=names, schedules=schedule_names, seeds=seeds, targets=targets)
    )

    def on_run(i: int, total: int, name: str, action: str) -> None:
        click.echo(f"[{i}/{total}] {name}: {action if action == 'skipped' else 'complete'}")

    click.echo(f"sweep of {len(configs)} runs into {out}; budget: {budget.describe()}")
    try:
        run_sweep(configs, budget, out, progress=not quiet, download=kw["download"], on_run=on_run)
    except KeyboardInterrupt as exc:
        click.echo(f"interrupted: {exc}; run the same command again to continue the sweep", err=True)
        sys.exit(130)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError) as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    for path in compare_report.write_folder_report(out, out / "report"):
        click.echo(f"wrote {path}")


def sweep_budget(budget_flops: float | None, kw: dict[str, Any]):
    """The one budget of a sweep, from whichever of --budget-flops, --minutes, --steps was given."""
    from .sweep import Budget

    ctx = click.get_current_context()
    steps_given = ctx.get_parameter_source("steps") == click.core.ParameterSource.COMMANDLINE
    given = [
        name
        for name, on in (
            ("--budget-flops", budget_flops is not None),
            ("--minutes", kw["minutes"] is not None),
            ("--steps", steps_given),
        )
        if on
    ]
    if len(given) > 1:
        raise click.UsageError(f"give one training budget, not {' and '.join(given)}")
    if budget_flops is not None:
        return usage_errors(lambda: Budget("flops", budget_flops))
    if kw["minutes"] is not None:
        return usage_errors(lambda: Budget("minutes", kw["minutes"]))
    return Budget("steps", kw["steps"])


@main.command("compare")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--where", multiple=True, metavar="KEY=VALUE", help="Keep runs whose column equals VALUE (repeatable)."
)
@click.option("--sort", "sort_by", default=None, help="Sort the table by this column.")
@click.option("--columns", default=None, help="Comma-separated measurement columns to show.")
@click.option("--metric", default="fd", show_default=True, help="The quality column for the plots.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: <first path>/comparison).",
)
def compare_cmd(
    paths: tuple[Path, ...],
    where: tuple[str, ...],
    sort_by: str | None,
    columns: str | None,
    metric: str,
    out: Path | None,
) -> None:
    """Compare every run folder found below PATHS: a table in the terminal and a report folder."""
    import warnings

    from . import compare, compare_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collection = compare.collect(list(paths))
    for run_dir, reason in collection.skipped:
        click.echo(f"skipped {run_dir}: {reason}", err=True)
    bench_files = compare.find_benchmark_files(list(paths))
    if bench_files:
        timings = compare.benchmark_table(bench_files)
        click.echo("step timings (pytest-benchmark):")
        click.echo(compare.format_table(timings).to_string(index=False))
        if collection.runs.empty:
            return
    if collection.runs.empty:
        raise click.UsageError(
            f"no complete run folders (with config.json and metrics.json) under {', '.join(map(str, paths))}"
        )
    try:
        runs = compare.apply_filters(collection.runs, list(where))
        if runs.empty:
            raise ValueError(f"no run matches --where {' '.join(where)}")
        table = compare.summarize(runs)
        if sort_by:
            if sort_by not in table.columns:
                raise ValueError(
                    f"unknown column {sort_by!r} for --sort; columns: {', '.join(table.columns)}"
                )
            table = table.sort_values(sort_by)
        chosen = [c.strip() for c in columns.split(",")] if columns else None
        selected, refs = compare.select_columns(table, chosen), compare.references(runs)
        numeric, shown = compare.numeric_table(selected, refs), compare.format_table(selected, refs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(shown.to_string(index=False))
    out = out or (paths[0] if paths[0].is_dir() else paths[0].parent) / "comparison"
    for path in compare_report.write_report(out, runs, numeric, shown, metric):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
