"""The options of a run's training recipe: the schedule's length, the loss weighting and noise levels, the
budget, the optimizer and the speed switches. Each fills the config field of its name (``bench.config``)."""

from __future__ import annotations

import click

from ..config import NOISE_LEVELS, POSITIVE, PRECISIONS, DiffusionConfig, RunConfig, TrainConfig
from .options import RuleType, config_option

DEFAULTS = RunConfig()

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


def training_options() -> list:
    """The training recipe's options, in the order ``bench run --help`` lists them."""
    train = DEFAULTS.train
    return [
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
    ]
