"""The options of a run, shared by ``bench run``, ``bench sweep`` and ``bench study``, and the RunConfig
they describe. An option's name is its config field's (``--sample-steps`` fills ``SampleConfig.steps``) and
its type checks the field's rule, so a new trainer option is one field in ``bench.config`` and one option
here: no validation or mapping line of its own."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from ..config import (
    NOISE_LEVELS,
    POSITIVE,
    PRECISIONS,
    DiffusionConfig,
    DistillConfig,
    RunConfig,
    SampleConfig,
    Stepping,
    TrainConfig,
)
from ..denoiser import LOSS_WEIGHTS, PREDICTIONS
from ..environment import DEVICES
from ..grids import GRIDS
from .options import (
    DATASET,
    DENOISER,
    SAMPLER,
    SCHEDULE,
    CommaList,
    GuidanceInterval,
    KeyValue,
    RuleType,
    command_line_given,
    config_option,
    from_options,
)

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
                help="Override what the denoiser predicts (edm: EDM's preconditioned F).",
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


def stepping_options(prefix: str = "") -> list:
    """Where a sampler steps and EDM's churn (:class:`bench.config.Stepping`), shared by ``bench run``,
    ``sweep``, ``sample`` and ``eval``; each option fills the field of its name (after ``prefix``)."""
    defaults = Stepping()

    def option(name: str, help: str, **kwargs: Any) -> Any:
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        return config_option(
            flag, prefix + name, kind=Stepping, field=name, default=default, help=help, **kwargs
        )

    return [
        click.option(
            "--grid",
            prefix + "grid",
            type=click.Choice(GRIDS),
            default=defaults.grid,
            show_default=True,
            help="Where ddim, euler, heun and dpmpp-2m step: DDIM's uniform timesteps, EDM's karras (rho) "
            "or evenly spaced in log SNR (log-snr).",
        ),
        option("rho", "rho of --grid karras (EDM's eq. 5)."),
        option(
            "sigma_max",
            "Highest noise level of a karras or log-snr grid [default: the schedule's].",
            show_default=False,
        ),
        option(
            "sigma_min",
            "Lowest noise level of a karras or log-snr grid [default: the schedule's].",
            show_default=False,
        ),
        option("s_churn", "EDM's stochastic churn for euler and heun (Algorithm 2); 0 is the ODE sampler."),
        option("s_tmin", "Churn only where sigma >= S_tmin."),
        option("s_tmax", "Churn only where sigma <= S_tmax [default: no bound].", show_default=False),
        option("s_noise", "Scale of the churn's fresh noise (EDM's S_noise)."),
    ]


def with_stepping_options(fn: Any) -> Any:
    """Decorate a command with :func:`stepping_options` (its values arrive as keywords of their names)."""
    for option in reversed(stepping_options()):
        fn = option(fn)
    return fn


def stepping_from_options(values: dict[str, Any]) -> Stepping:
    """The grid and churn that ``stepping_options()`` parsed."""
    return from_options(Stepping, values)


def run_options(fn=None, *, grid: bool = False):
    """The options ``bench run`` shares with ``bench sweep`` (``grid=True``: lists for the grid's axes).

    An option's name is its config field's (``--sample-steps`` fills ``SampleConfig.steps``), and its
    type checks the field's rule, so a new option is one field in ``bench.config`` and one line here.
    """
    if fn is None:
        return lambda f: run_options(f, grid=grid)
    train, sample = DEFAULTS.train, DEFAULTS.sample
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
        config_option(
            "--timesteps",
            kind=DiffusionConfig,
            field="timesteps",
            default=DEFAULTS.diffusion.timesteps,
            help="Diffusion steps T.",
        ),
        click.option("--zero-terminal-snr", is_flag=True, help="Rescale the schedule so alpha_bar[T-1] = 0."),
        click.option(
            "--sigma-data",
            type=RuleType(POSITIVE, "sigma_data"),
            default=None,
            help="EDM's standard deviation of the data, for --target edm and --loss-weight edm [default: "
            "0.5, for images in [-1, 1]].",
        ),
        config_option(
            "--min-snr-gamma",
            kind=TrainConfig,
            field="min_snr_gamma",
            default=DEFAULTS.train.min_snr_gamma,
            help="gamma of --loss-weight min-snr: the SNR above which a noise level stops gaining weight.",
        ),
        click.option(
            "--noise-levels",
            type=click.Choice(NOISE_LEVELS),
            default=DEFAULTS.train.noise_levels,
            show_default=True,
            help="Noise levels trained on: uniform timesteps (DDPM), EDM's log-normal sigma or SD3's "
            "logit-normal flow time, mapped to real-valued timesteps.",
        ),
        config_option(
            "--p-mean",
            kind=TrainConfig,
            field="p_mean",
            default=DEFAULTS.train.p_mean,
            help="Mean of ln sigma for --noise-levels lognormal.",
        ),
        config_option(
            "--p-std",
            kind=TrainConfig,
            field="p_std",
            default=DEFAULTS.train.p_std,
            help="Standard deviation of ln sigma for --noise-levels lognormal.",
        ),
        config_option(
            "--logit-mean",
            kind=TrainConfig,
            field="logit_mean",
            default=DEFAULTS.train.logit_mean,
            help="Mean m of --noise-levels logit-normal: t = sigmoid(n), n ~ N(m, s^2) (SD3: 0).",
        ),
        config_option(
            "--logit-std",
            kind=TrainConfig,
            field="logit_std",
            default=DEFAULTS.train.logit_std,
            help="Standard deviation s of --noise-levels logit-normal (SD3: 1).",
        ),
        config_option(
            "--steps",
            kind=TrainConfig,
            field="steps",
            default=train.steps,
            help="Training budget in optimizer steps.",
        ),
        config_option(
            "--minutes",
            kind=TrainConfig,
            field="minutes",
            default=None,
            show_default=False,
            help="Training budget in minutes (first one wins).",
        ),
        config_option(
            "--batch-size",
            kind=TrainConfig,
            field="batch_size",
            default=train.batch_size,
            help="Batch size per process (global = this x processes).",
        ),
        config_option("--lr", kind=TrainConfig, field="lr", default=train.lr, help="AdamW learning rate."),
        config_option("--warmup-steps", kind=TrainConfig, field="warmup_steps", default=train.warmup_steps),
        config_option("--ema-decay", kind=TrainConfig, field="ema_decay", default=train.ema_decay),
        config_option("--grad-clip", kind=TrainConfig, field="grad_clip", default=train.grad_clip),
        click.option(
            "--precision", type=click.Choice(PRECISIONS), default=train.precision, show_default=True
        ),
        click.option(
            "--compile/--no-compile",
            default=train.compile,
            show_default=True,
            help="torch.compile the model.",
        ),
        click.option(
            "--hflip/--no-hflip",
            default=DEFAULTS.train.hflip,
            show_default=True,
            help="Mirror each training image left-right with probability 1/2 (DDPM's CIFAR-10 recipe).",
        ),
        channels_last_option,
        fused_norm_option,
        click.option(
            "--tune-malloc/--no-tune-malloc",
            default=DEFAULTS.tune_malloc,
            show_default=True,
            help="On CPU (glibc): keep freed activation memory for reuse instead of returning it to "
            "the OS every step.",
        ),
        click.option(
            "--tf32/--no-tf32",
            default=DEFAULTS.tf32,
            show_default=True,
            help="Allow TF32 matmuls and convolutions on CUDA GPUs (no effect on CPU).",
        ),
        config_option(
            "--checkpoint-every", kind=TrainConfig, field="checkpoint_every", default=train.checkpoint_every
        ),
        click.option(
            "--sampler",
            "sample_method",
            type=SAMPLER,
            default=sample.method,
            show_default=True,
            help="A sampler plugin (ancestral, ddim, euler, heun, dpmpp-2m, one_shot) or auto (one_shot for "
            "pure-noise designs, else ddim).",
        ),
        config_option(
            "--sample-steps",
            kind=SampleConfig,
            field="steps",
            default=sample.steps,
            help="Sampler steps (network calls per image: one per step; heun 2 per step but the last).",
        ),
        config_option(
            "--eta",
            "sample_eta",
            kind=SampleConfig,
            field="eta",
            default=sample.eta,
            help="DDIM noise: 0 deterministic, 1 DDPM-like.",
        ),
        *stepping_options(prefix="sample_"),
        config_option(
            "--guidance-scale",
            "sample_guidance_scale",
            kind=SampleConfig,
            field="guidance_scale",
            default=sample.guidance_scale,
            help="With --conditional: classifier-free guidance, uncond + s (cond - uncond); 1 is plain "
            "conditional sampling, and each guided call costs two network calls.",
        ),
        click.option(
            "--guidance-interval",
            "sample_guidance_interval",
            type=GuidanceInterval(),
            default=None,
            help="Guide only where SIGMA_LO < sigma <= SIGMA_HI (Kynkaanniemi et al. 2024), plain "
            "conditional (one call) elsewhere; sigma = sqrt((1 - alpha_bar) / alpha_bar).",
        ),
        config_option(
            "--n-samples",
            "sample_n",
            kind=SampleConfig,
            field="n",
            default=sample.n,
            help="Samples drawn for the grid and the metrics.",
        ),
        click.option(
            "--teacher",
            type=click.Path(file_okay=False),
            default=None,
            help="For designs trained on a teacher's pairs (direct-distilled): a complete run folder whose "
            "deterministic DDIM sampler maps each noise to its image.",
        ),
        config_option(
            "--teacher-steps",
            kind=DistillConfig,
            field="teacher_steps",
            default=DEFAULTS.distill.teacher_steps,
            help="DDIM steps the teacher takes to make each pair.",
        ),
        config_option(
            "--pairs",
            kind=DistillConfig,
            field="pairs",
            default=DEFAULTS.distill.pairs,
            help="Teacher pairs to make (once, cached in the run folder).",
        ),
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
        sample=from_options(
            SampleConfig,
            values,
            prefix="sample_",
            batch_size=min(DEFAULTS.sample.batch_size, values["sample_n"]),
        ),
    )


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
