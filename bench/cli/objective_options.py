"""The options of the objectives only some designs train with: the consistency designs' (``consistency``,
``consistency-distilled``: the grid of noise levels, CD's teacher step and target network, the distance and
the student's start; sCT's tangent) and the flow maps' (``meanflow``, ``shortcut``: their draws of two
times, MeanFlow's derivative, which sCT reads too, and loss weight, shortcut's share and steps). Each fills
the config field of its name; given to a design that does not read it, it is a usage error
(:mod:`bench.runs.given_settings`)."""

from __future__ import annotations

import click

from ..config import CONSISTENCY_SOLVERS, DERIVATIVES, DISTANCES, ConsistencyConfig, FlowMapConfig, RunConfig
from .options import config_option

DEFAULTS = RunConfig()
SECTIONS = {"consistency": (ConsistencyConfig, "consistency_"), "flow_map": (FlowMapConfig, "flow_map_")}
"""Each objective section of the config, with the prefix of its options' parameter names."""


def section_option(section: str, name: str, help: str, **kwargs) -> click.Option:
    """The option ``name`` of a config section: ``--target-ema`` fills ``consistency.target_ema``."""
    kind, prefix = SECTIONS[section]
    field = name.removeprefix("--").replace("-", "_")
    return config_option(
        name,
        prefix + field,
        kind=kind,
        field=field,
        default=getattr(getattr(DEFAULTS, section), field),
        help=help,
        **kwargs,
    )


def consistency_options() -> list:
    """The consistency designs' options, in the order ``bench run --help`` lists them."""

    def option(name: str, help: str, **kwargs) -> click.Option:
        return section_option("consistency", name, help, **kwargs)

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
        option("--tangent-warmup", "sCT's warm-up: steps for its tangent's 2nd term to reach 1 (0: none)."),
        option("--tangent-c", "sCT's tangent normalisation g / (||g|| + c): its c (> 0)."),
    ]


def flow_map_options() -> list:
    """The flow-map designs' options (``meanflow``, ``shortcut``), in the order ``bench run --help`` lists
    them."""

    def option(name: str, help: str, **kwargs) -> click.Option:
        return section_option("flow_map", name, help, **kwargs)

    return [
        option("--equal-fraction", "MeanFlow's share of draws with r = t (flow matching there), in [0, 1]."),
        option("--time-mean", "MeanFlow's logit-normal mean of its two flow times (the larger is t)."),
        option("--time-std", "MeanFlow's logit-normal standard deviation of its two flow times (> 0)."),
        option(
            "--derivative",
            "MeanFlow's du/dt and sCT's dF/dt: jvp (forward-mode AD) or finite-difference (2 more forwards).",
            type=click.Choice(DERIVATIVES),
        ),
        option("--adaptive-power", "MeanFlow's adaptive loss weight 1 / (error + 0.001)^p: p (0 is l2)."),
        option("--consistency-fraction", "Shortcut's share of the batch with the self-consistency target."),
        option("--shortcut-steps", "Shortcut's M: steps are powers of two of 1 / M (a power of two >= 2)."),
    ]
