"""The options of the consistency designs (``consistency``, ``consistency-distilled``): the grid of noise
levels, CD's teacher step and target network, the distance and the student's start. Each fills the
``bench.config.ConsistencyConfig`` field of its name."""

from __future__ import annotations

import click

from ..config import CONSISTENCY_SOLVERS, DISTANCES, ConsistencyConfig, RunConfig
from .options import config_option

DEFAULTS = RunConfig().consistency


def consistency_options() -> list:
    """The consistency designs' options, in the order ``bench run --help`` lists them."""

    def option(name: str, help: str, **kwargs) -> click.Option:
        field = name.removeprefix("--").replace("-", "_")
        return config_option(
            name,
            f"consistency_{field}",
            kind=ConsistencyConfig,
            field=field,
            default=getattr(DEFAULTS, field),
            help=help,
            **kwargs,
        )

    return [
        option("--levels", "Consistency distillation's N: noise levels of its rho = 7 grid (>= 2)."),
        option("--levels-start", "Consistency training's s0: N = s0 + 1 noise levels at the start."),
        option("--levels-end", "Consistency training's s1: N doubles from s0 + 1 up to s1 + 1 levels."),
        option(
            "--teacher-solver",
            "Consistency distillation's ODE step of the teacher: heun (2 calls) or ddim (1, Euler's step).",
            type=click.Choice(CONSISTENCY_SOLVERS),
        ),
        option("--target-ema", "Consistency distillation's target-network EMA rate mu, in [0, 1)."),
        option(
            "--distance",
            "The consistency distance: pseudo-huber (iCT) or l2 (LPIPS needs ImageNet weights, not offline).",
            type=click.Choice(DISTANCES),
        ),
        option("--huber-c", "Pseudo-Huber's c (> 0); default 0.00054 sqrt(pixels x channels)."),
        option(
            "--student-init",
            "Consistency distillation's student starts from the teacher's weights or from random ones.",
            type=click.Choice(("teacher", "random")),
        ),
    ]
