"""The options of a run, shared by ``bench run``, ``bench sweep`` and ``bench study``, and the RunConfig
they describe. An option's name is its config field's (``--sample-steps`` fills ``SampleConfig.steps``) and
its type checks the field's rule, so a new trainer option is one field in ``bench.config`` and one option
here: no validation or mapping line of its own."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import click

from ..config import (
    ConsistencyConfig,
    DiffusionConfig,
    DistillConfig,
    FlowMapConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from ..environment import DEVICES
from ..process.denoiser import LOSS_WEIGHTS, PREDICTIONS
from .objective_options import SECTIONS, consistency_options, flow_map_options
from .options import (
    DATASET,
    DENOISER,
    SCHEDULE,
    CommaList,
    KeyValue,
    command_line_given,
    config_option,
    from_options,
    given_sampling,
)
from .sampling_options import sampling_options
from .training_options import training_options

DEFAULTS = RunConfig()
SEEDS = CommaList(click.INT, item_error="seeds must be whole numbers, e.g. 0,1,2")

image_size_option = config_option(
    "--image-size",
    kind=RunConfig,
    field="image_size",
    default=None,
    show_default=False,
    help="Resize images to this size [default: the dataset's run size: 14 for mnist5k, else native].",
)
device_option = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")


def design_options(grid: bool) -> list:
    """What is trained: one denoiser, schedule and target for ``bench run``; comma-separated lists of them
    (and of seeds) for ``bench sweep``'s grid."""
    if not grid:
        return [
            click.option(
                "--denoiser",
                type=DENOISER,
                default=DEFAULTS.denoiser,
                show_default=True,
                help="Denoiser plugin (bench list).",
            ),
            click.option(
                "--schedule",
                type=SCHEDULE,
                default=DEFAULTS.diffusion.schedule,
                show_default=True,
                help="Schedule plugin.",
            ),
            click.option(
                "--target",
                type=click.Choice(PREDICTIONS),
                default=None,
                help="Override what the denoiser predicts (edm: EDM's preconditioned F; flow: flow "
                "matching's velocity eps - x0).",
            ),
            click.option(
                "--loss-weight",
                type=click.Choice(LOSS_WEIGHTS),
                default=DEFAULTS.train.loss_weight,
                show_default=True,
                help="Weight of each noise level in the loss: uniform (DDPM's L_simple), min-snr (Hang et "
                "al. 2023) or edm (Karras et al. 2022), each in its correct form for the target.",
            ),
            click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True),
        ]
    return [
        click.option(
            "--denoiser",
            type=CommaList(DENOISER),
            default=DEFAULTS.denoiser,
            show_default=True,
            help="Denoiser plugins, comma-separated (e.g. unet,transformer,direct).",
        ),
        click.option(
            "--schedule",
            type=CommaList(SCHEDULE),
            default=DEFAULTS.diffusion.schedule,
            show_default=True,
            help="Schedule plugins, comma-separated.",
        ),
        click.option(
            "--target",
            type=CommaList(allowed=PREDICTIONS),
            default=None,
            help=f"Prediction targets, comma-separated from {', '.join(PREDICTIONS)} (default: each "
            "denoiser's own).",
        ),
        click.option(
            "--loss-weight",
            type=CommaList(allowed=LOSS_WEIGHTS),
            default=DEFAULTS.train.loss_weight,
            show_default=True,
            help=f"Loss weightings, comma-separated from {', '.join(LOSS_WEIGHTS)}.",
        ),
        click.option(
            "--seeds", type=SEEDS, default="0", show_default=True, help="Seeds, comma-separated (e.g. 0,1,2)."
        ),
        config_option(
            "--budget-flops",
            kind=TrainConfig,
            field="budget_flops",
            default=None,
            show_default=False,
            help="Training budget in forward+backward FLOPs, the same for every design (steps per "
            "design follow from its measured FLOPs per image); replaces --steps.",
        ),
    ]


def run_options(fn=None, *, grid: bool = False):
    """The options ``bench run`` shares with ``bench sweep`` (``grid=True``: lists for the grid's axes).

    An option's name is its config field's (``--sample-steps`` fills ``SampleConfig.steps``), and its
    type checks the field's rule, so a new option is one field in ``bench.config`` and one line here.
    """
    if fn is None:
        return lambda f: run_options(f, grid=grid)
    options = [
        *design_options(grid),
        click.option(
            "--dataset", type=DATASET, default=DEFAULTS.dataset, show_default=True, help="Dataset plugin."
        ),
        click.option(
            "--data-root",
            type=click.Path(file_okay=False),
            default=None,
            help="Folder of torchvision datasets or of an image folder.",
        ),
        click.option(
            "--download",
            is_flag=True,
            help="Download what the run lacks (needs internet): the dataset, and with --fid the Inception "
            "weights.",
        ),
        image_size_option,
        click.option(
            "--conditional",
            is_flag=True,
            help="Train class-conditional on a labelled dataset: the network is called as net(x_t, t, y) "
            "(the denoiser must take labels: unet, transformer, direct).",
        ),
        config_option(
            "--label-dropout",
            kind=TrainConfig,
            field="label_dropout",
            default=None,
            show_default=False,
            help="With --conditional: the fraction of examples trained with the null class, the "
            "unconditional model classifier-free guidance needs [default: 0.1].",
        ),
        click.option(
            "--preset", default=None, help="Denoiser size preset (e.g. small, ddpm-cifar10, DiT-S/2)."
        ),
        click.option(
            "-o",
            "--option",
            "options",
            type=KeyValue(),
            multiple=True,
            help="Denoiser option, repeatable (e.g. -o base_channels=64 -o channel_mult=(1,2)).",
        ),
        *training_options(),
        *sampling_options(),
        *consistency_options(),
        *flow_map_options(),
        config_option(
            "--eval-every",
            kind=RunConfig,
            field="eval_every",
            default=None,
            show_default=False,
            help="Also score the EMA model every N training steps on 250 samples (classifier-space metrics), "
            "into eval.csv; bench compare draws them against the step.",
        ),
        click.option(
            "--fid/--no-fid",
            default=DEFAULTS.fid,
            show_default=True,
            help="Also standard FID, IS and KID in Inception space (torch-fidelity), at the end and with "
            "--eval-every.",
        ),
        click.option(
            "--inception-weights",
            type=click.Path(dir_okay=False),
            default=None,
            help="The pt_inception-2015-12-05 weights for --fid [default: $BENCH_FID_WEIGHTS, else the "
            "cached download].",
        ),
        click.option(
            "--eval/--no-eval",
            "evaluate",
            default=DEFAULTS.evaluate,
            show_default=True,
            help="Measure the samples' quality (--no-eval skips the metrics).",
        ),
        click.option(
            "--tensorboard/--no-tensorboard",
            default=DEFAULTS.tensorboard,
            show_default=True,
            help="Write TensorBoard event files into the run folder's tensorboard/ (loss, eval scores, "
            "sample grids, the design and its final scores); watch with `tensorboard --logdir results/`.",
        ),
        device_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def config_from_options(values: dict[str, Any]) -> RunConfig:
    """The RunConfig that ``run_options``' parsed values describe (validated by the configs themselves)."""
    from .. import datasets

    options = dict(values["options"])
    if values["preset"]:
        options["preset"] = values["preset"]
    if values["target"]:
        options["target"] = values["target"]
    if values["sigma_data"] is not None:
        options["sigma_data"] = values["sigma_data"]
    return from_options(
        RunConfig,
        values,
        denoiser_options=options,
        image_size=values["image_size"] or datasets.run_image_size(values["dataset"]),
        diffusion=from_options(DiffusionConfig, values),
        train=from_options(TrainConfig, values, label_dropout=label_dropout(values)),
        distill=from_options(DistillConfig, values),
        consistency=from_options(ConsistencyConfig, values, prefix="consistency_"),
        flow_map=from_options(FlowMapConfig, values, prefix="flow_map_"),
        sample=from_options(
            SampleConfig,
            values,
            prefix="sample_",
            batch_size=min(DEFAULTS.sample.batch_size, values["sample_n"]),
            given=given_sampling(prefix="sample_", steps="sample_steps"),
        ),
    )


def given_design_settings() -> list[str]:
    """The teacher's and the objectives' own settings typed on the command line, as config paths
    (``consistency.target_ema``), for :func:`bench.runs.given_settings.check_given_settings`."""
    sections = {"distill": (DistillConfig, ""), **SECTIONS}
    return [
        f"{section}.{field.name}"
        for section, (kind, prefix) in sections.items()
        for field in dataclasses.fields(kind)
        if command_line_given(prefix + field.name)
    ]


def label_dropout(values: dict[str, Any]) -> float:
    """--label-dropout trains the null class of a conditional model; without --conditional there is none."""
    if values.get("label_dropout") is None:
        return DEFAULTS.train.label_dropout
    if not values.get("conditional"):
        raise ValueError(
            "--label-dropout applies to class-conditional runs: add --conditional or leave it out"
        )
    return values["label_dropout"]


def check_sigma_data_applies(values: dict[str, Any]) -> None:
    """--sigma-data acts only on EDM's target or weighting; elsewhere it would change nothing but the
    design's name, so it is refused (``target`` and ``loss_weight`` may be a grid's lists)."""
    chosen = [values.get("target"), values.get("loss_weight")]
    named = {v for value in chosen for v in (value if isinstance(value, list) else [value])}
    if values.get("sigma_data") is not None and "edm" not in named:
        raise ValueError(
            "--sigma-data is EDM's: it acts only with --target edm or --loss-weight edm; give one of them "
            "or leave it out"
        )


def extend_budget(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """On --resume the saved config rules; only a budget given on the command line (--steps, --minutes)
    replaces the saved one, so a finished run can be trained further."""
    changes = {name: values[name] for name in ("steps", "minutes") if command_line_given(name)}
    return replace(config, train=replace(config.train, **changes)) if changes else config
