"""The command line's plumbing: options land in the config field of the same name (no hand-written
mapping), option types check the config's own rules, and the library's input errors become usage errors."""

import re

import click
import pytest

from bench.cli import main
from bench.cli.options import usage_errors
from bench.cli.run_options import config_from_options
from bench.config import SampleConfig, TrainConfig


def parse_run(*args: str) -> dict:
    command = main.commands["run"]
    with command.make_context("run", list(args)) as ctx:
        return dict(ctx.params)


def test_every_run_option_lands_in_its_config_field():
    params = parse_run(
        "--steps", "7", "--minutes", "2.5", "--batch-size", "9", "--lr", "0.5", "--warmup-steps", "3",
        "--ema-decay", "0.9", "--grad-clip", "0.25", "--precision", "bf16", "--compile",
        "--checkpoint-every", "4", "--timesteps", "77", "--zero-terminal-snr", "--schedule", "cosine",
        "--sampler", "ddim", "--sample-steps", "6", "--eta", "0.5", "--n-samples", "11", "--no-eval",
        "--seed", "5", "--device", "cpu", "--no-channels-last", "--no-fused-norm", "--no-tune-malloc",
        "--no-tf32", "--image-size", "12", "--target", "v", "--preset", "small", "-o", "dropout=0.1",
        "--loss-weight", "min-snr", "--min-snr-gamma", "3", "--noise-levels", "lognormal", "--p-mean", "-0.5",
        "--p-std", "2", "--sigma-data", "0.25",
    )  # fmt: skip
    config = config_from_options(params)
    assert config.train == TrainConfig(
        steps=7, minutes=2.5, batch_size=9, lr=0.5, warmup_steps=3, ema_decay=0.9, grad_clip=0.25,
        precision="bf16", compile=True, checkpoint_every=4, loss_weight="min-snr", min_snr_gamma=3.0,
        noise_levels="lognormal", p_mean=-0.5, p_std=2.0,
    )  # fmt: skip
    assert config.sample == SampleConfig(method="ddim", steps=6, eta=0.5, n=11, batch_size=11)
    assert (config.diffusion.schedule, config.diffusion.timesteps, config.diffusion.zero_terminal_snr) == (
        "cosine",
        77,
        True,
    )
    assert config.denoiser_options == {"dropout": 0.1, "preset": "small", "target": "v", "sigma_data": 0.25}
    assert (config.evaluate, config.seed, config.device, config.image_size) == (False, 5, "cpu", 12)
    assert not (config.channels_last or config.fused_norm or config.tune_malloc or config.tf32)


def test_defaults_are_the_config_defaults():
    config = config_from_options(parse_run())
    assert config.train == TrainConfig() and config.sample == SampleConfig(batch_size=250)
    assert config.image_size == 14  # mnist5k's registered run size


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ema-decay", "1"], "ema_decay must be in [0, 1), got 1.0"),
        (["--warmup-steps", "-1"], "warmup_steps must be >= 0, got -1"),
        (["--eta", "2"], "eta must be in [0, 1], got 2.0"),
        (["--timesteps", "x"], "timesteps must be a positive integer, got 'x'"),
        (["--image-size", "0"], "image_size must be a positive integer, got 0"),
        (["--sampler", "eulr"], "unknown sampler 'eulr'"),
        (["--loss-weight", "snr"], "'snr' is not one of 'uniform', 'min-snr', 'edm'"),
        (["--noise-levels", "normal"], "'normal' is not one of 'uniform', 'lognormal'"),
        (["--p-std", "0"], "p_std must be a positive number, got 0.0"),
        (["--min-snr-gamma", "-1"], "min_snr_gamma must be a positive number, got -1.0"),
        (["--target", "edm", "--sigma-data", "0"], "sigma_data must be a positive number, got 0.0"),
    ],
)
def test_option_types_check_the_config_rules(args, message):
    with pytest.raises(click.BadParameter, match=re.escape(message)):
        parse_run(*args)


def test_usage_errors_maps_library_errors_to_exit_codes():
    @click.command()
    @click.argument("kind")
    @usage_errors(interrupted="stopped: {exc}")
    def command(kind: str) -> None:
        raise {
            "value": ValueError("bad value"),
            "runtime": RuntimeError("broke"),
            "ctrl-c": KeyboardInterrupt("x"),
        }[kind]

    from click.testing import CliRunner

    runner = CliRunner()
    codes = {kind: runner.invoke(command, [kind]) for kind in ("value", "runtime", "ctrl-c")}
    assert codes["value"].exit_code == 2 and "bad value" in codes["value"].output
    assert codes["runtime"].exit_code == 1 and "broke" in codes["runtime"].output
    assert codes["ctrl-c"].exit_code == 130 and "stopped: x" in codes["ctrl-c"].output
