"""``bench run``, ``bench sample`` and ``bench eval``: one run trained, sampled and measured, and a
finished run sampled or scored again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..config import Rule, SampleConfig
from ..process.sampling import SAMPLERS
from .cluster_options import executor_from_options, executor_options
from .group import main
from .options import (
    DATASET,
    SAMPLER,
    CommaList,
    GuidanceInterval,
    RuleType,
    config_option,
    given_sampling,
    positive_int,
    usage_errors,
)
from .run_options import (
    DEFAULTS,
    check_sigma_data_applies,
    config_from_options,
    device_option,
    extend_budget,
    given_design_settings,
    quiet_option,
    run_options,
)
from .sampling_options import stepping_from_options, with_stepping_options


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
@executor_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; print only the run folder.")
@usage_errors
def run(out: Path, run_id: str | None, resume: Path | None, quiet: bool, **values: Any) -> None:
    """Train a denoiser, sample it, measure it; results land in OUT/<run-id>/.

    Under torchrun (e.g. `torchrun --nproc-per-node 2 -m bench.cli run ...`) training uses
    DistributedDataParallel; --batch-size is per process. With --executor slurm the run is a SLURM job
    (on --nodes N with --gpus-per-node G: N x G processes), requeued from its checkpoint when preempted.
    """
    from ..runs import run as runner
    from ..runs.given_settings import check_given_settings
    from ..runs.row import design_line
    from ..runs.run_folder import RunFolder
    from ..runs.run_summary import summary

    execution = executor_from_options(values)
    if resume is not None:
        config = extend_budget(RunFolder(resume).read_config(), values)
    else:
        check_sigma_data_applies(values)
        config = config_from_options(values)
        check_given_settings(config, given_design_settings())
    if execution.in_process:
        try:
            run_dir = runner.execute(
                config, out=out, run_id=run_id, resume=resume, download=values["download"], progress=not quiet
            )
        except runner.AlreadyComplete as done:  # nothing to train: the run is left as it is
            click.echo(f"{done.path} is already complete; give --steps or --minutes to train it further")
            run_dir = done.path
    else:
        run_dir = run_as_job(config, out, run_id, resume, execution, quiet=quiet)
        if run_dir is None:
            return
    if quiet:
        click.echo(str(run_dir))
        return
    folder = RunFolder(run_dir)
    click.echo(summary(folder.read_metrics()))
    if design := design_line(folder.read_config_dict()):
        click.echo(f"design:    {design}")
    click.echo(f"\nrun folder: {run_dir}")
    click.echo(f"samples:    {folder.samples_png}")


def run_as_job(config, out: Path, run_id: str | None, resume: Path | None, execution, *, quiet: bool):
    """Submit the run as one job and, unless --no-wait, wait for it; its folder, or None when not waiting."""
    from ..cluster.executors import submit, wait
    from ..runs.run import new_run_id

    name = resume.name if resume is not None else (run_id or new_run_id(config))
    where = resume.parent if resume is not None else out
    (submitted,) = submit([(name, config)], where, execution, extend=resume is not None)
    click.echo(f"submitted {where / name} as job {submitted.job.job_id}", err=not quiet)
    if not execution.wait:
        click.echo(f"watch it with `squeue -j {submitted.job.job_id}`; its logs link from {where / name}")
        return None
    state = wait([name], where, [submitted], progress=not quiet, poll_s=execution.poll_s)[name]
    if state != "complete":
        raise click.ClickException(
            f"the run ended {state}; see the logs in {where / name}/{execution.kind}/ and continue it with "
            f"`bench run --resume {where / name} --executor {execution.kind}`"
        )
    return where / name


@main.command("sample")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--n", type=positive_int("n"), default=64, show_default=True, help="Number of samples.")
@click.option(
    "--method",
    type=SAMPLER,
    default=DEFAULTS.sample.method,
    show_default=True,
    help=f"A sampler plugin (bench list: {', '.join(SAMPLERS.names())}) or auto (the design's own).",
)
@config_option(
    "--steps",
    kind=SampleConfig,
    field="steps",
    default=50,
    help="Sampler steps (heun makes 2 network calls per step but the last).",
)
@config_option("--eta", kind=SampleConfig, field="eta", default=DEFAULTS.sample.eta)
@with_stepping_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-ema", is_flag=True, help="Sample the raw weights instead of their EMA.")
@config_option(
    "--class",
    "class_label",
    kind=SampleConfig,
    field="class_label",
    default=None,
    show_default=False,
    help="A conditional run's class index for every sample [default: balanced, sample i of class i mod K].",
)
@config_option(
    "--guidance-scale",
    kind=SampleConfig,
    field="guidance_scale",
    default=1.0,
    help="Classifier-free guidance for a conditional run (1: plain conditional).",
)
@click.option(
    "--guidance-interval",
    type=GuidanceInterval(),
    default=None,
    help="Guide only where SIGMA_LO < sigma <= SIGMA_HI.",
)
@device_option
@quiet_option
@usage_errors
def sample_cmd(
    run_dir: Path,
    n: int,
    method: str,
    steps: int,
    eta: float,
    seed: int,
    no_ema: bool,
    class_label: int | None,
    guidance_scale: float,
    guidance_interval: tuple[float, float] | None,
    device: str,
    quiet: bool,
    **stepping: Any,
) -> None:
    """Sample a finished (or checkpointed) run; writes RUN_DIR/samples/<name>.png and .npz (with the
    classes asked for, for a conditional run)."""
    from ..runs import resample
    paths = resample.sample_run(
        run_dir,
        n=n,
        method=method,
        steps=steps,
        eta=eta,
        seed=seed,
        use_ema=not no_ema,
        device=device,
        progress=not quiet,
        conditioning=resample.Conditioning(guidance_scale, guidance_interval, class_label),
        stepping=stepping_from_options(stepping),
        given=given_sampling(),
    )
    for path in paths:
        click.echo(str(path))


@main.command("eval")
@click.argument("run_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--samples",
    "samples_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Score samples made by other code: an .npz/.npy array or a folder of images.",
)
@click.option("--dataset", type=DATASET, default=None, help="The dataset to score --samples against.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option("--n", type=positive_int("n"), default=500, show_default=True, help="Samples to draw.")
@click.option("--method", type=SAMPLER, default=DEFAULTS.sample.method, show_default=True)
@click.option(
    "--steps",
    type=CommaList(positive_int("steps")),
    default="50",
    show_default=True,
    help="Sampler steps; several as 10,20,50 give one entry each (and one point each in bench compare's "
    "quality_vs_nfe.png).",
)
@config_option("--eta", kind=SampleConfig, field="eta", default=DEFAULTS.sample.eta)
@with_stepping_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--guidance-scale",
    "guidance_scales",
    type=CommaList(RuleType(Rule(float, low=0), "guidance scale")),
    default="1",
    show_default=True,
    help="Classifier-free guidance scales for a conditional run, e.g. 1,1.5,2,3,4: one entry each (and one "
    "point each in bench compare's quality_vs_guidance.png).",
)
@click.option(
    "--guidance-interval",
    type=GuidanceInterval(),
    default=None,
    help="Guide only where SIGMA_LO < sigma <= SIGMA_HI (the scales other than 1).",
)
@click.option(
    "--fid",
    is_flag=True,
    help="Also standard FID, Inception Score and KID in Inception space (torch-fidelity); samples are drawn "
    "in chunks kept under RUN_DIR/samples/, so a larger or interrupted evaluation reuses them.",
)
@click.option(
    "--inception-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The pt_inception-2015-12-05 weight file for --fid [default: $BENCH_FID_WEIGHTS, else the cached "
    "download].",
)
@click.option("--download-inception", is_flag=True, help="Fetch the --fid weights once into the cache.")
@click.option(
    "--solver-error",
    is_flag=True,
    help="Also each deterministic sampler's RMS distance to the ODE's converged solution from the same 100 "
    "noises (Heun, 511 calls, karras grid): its own error, whatever FD says.",
)
@device_option
@quiet_option
@usage_errors
def eval_cmd(
    run_dir: Path | None,
    samples_path: Path | None,
    dataset: str | None,
    data_root: str | None,
    n: int,
    method: str,
    steps: list[int],
    eta: float,
    seed: int,
    guidance_scales: list[float],
    guidance_interval: tuple[float, float] | None,
    fid: bool,
    inception_weights: Path | None,
    download_inception: bool,
    solver_error: bool,
    device: str,
    quiet: bool,
    **stepping: Any,
) -> None:
    """Score a run's samples (RUN_DIR), or any samples (--samples FILE --dataset NAME), with every metric
    beside the real-data floor and the mean-image ceiling."""
    from .. import datasets
    from ..environment import resolve_device
    from ..evaluation.scoring import load_external_samples, score_samples, standard_scores
    from ..metrics.fidelity import StandardInception, check_weights, find_weights
    from ..runs import resample

    if (run_dir is None) == (samples_path is None):
        raise click.UsageError("give either RUN_DIR or --samples (with --dataset), not both or neither")
    weights = find_weights(inception_weights, download=download_inception) if fid else None
    if weights is not None:
        check_weights(weights)  # a bad file is refused before any sampling
    if samples_path is not None:
        if dataset is None:
            raise click.UsageError("--samples needs --dataset NAME (the images to compare against)")
        data = datasets.load(dataset, root=data_root)
        samples = load_external_samples(samples_path)
        result = score_samples(samples, data, progress=not quiet)
        if weights is not None:
            extractor = StandardInception(weights, device=resolve_device(device))
            result.update(standard_scores(samples, data, extractor, progress=not quiet))
        click.echo(json.dumps(result, indent=2))
        return
    entries = resample.evaluate_run(
        run_dir,
        n=n,
        method=method,
        steps=steps,
        eta=eta,
        seed=seed,
        device=device,
        progress=not quiet,
        fid_weights=weights,
        guidance_scales=guidance_scales,
        guidance_interval=guidance_interval,
        stepping=stepping_from_options(stepping),
        given=given_sampling(),
        solver_error=solver_error,
    )
    for entry in entries:
        q, ref = entry.quality, entry.references
        scale = entry.sample.guidance_scale
        guided = f", guidance {scale:g}" if scale is not None else ""
        if entry.sample.guidance_interval is not None:
            guided += " in ({:g}, {:g}]".format(*entry.sample.guidance_interval)
        accuracy = f", class accuracy {q['class_accuracy']:.3f}" if "class_accuracy" in q else ""
        click.echo(
            f"{entry.sample.method} {entry.sample.steps} steps{guided}: fd {q['fd']:.3g} "
            f"(real {ref['real']['fd']:.3g}, mean image {ref['mean-image']['fd']:.3g}), "
            f"precision {q['precision']:.3f}, recall {q['recall']:.3f}{accuracy}"
            + (
                f"; FID {entry.fid:.4g}, IS {entry.inception_score['mean']:.4g}"
                if entry.fid is not None
                else ""
            )
            + (f"; RMS to the ODE's solution {entry.solver_error['rms']:.4g}" if entry.solver_error else "")
        )
