"""The options of how a run (or a later ``bench sample`` / ``bench eval``) samples: the sampler, its steps
and settings, where it steps (the grid) and EDM's churn, classifier-free guidance, and a teacher's pairs.
Each fills the config field of its name (``bench.config``), after a prefix where one is given."""

from __future__ import annotations

from typing import Any

import click

from ..config import DistillConfig, RunConfig, SampleConfig, Stepping
from ..config.sampling import samplers_that
from ..process.grids import GRIDS
from ..process.sampling import SAMPLERS
from .options import SAMPLER, GuidanceInterval, config_option, from_options

DEFAULTS = RunConfig()


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
            help=f"Where {samplers_that(grid=True)} step: DDIM's uniform timesteps, EDM's karras (rho) "
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


def sampling_options() -> list:
    """A run's sampling options (``--sample-steps`` fills ``SampleConfig.steps``), in the order ``bench run
    --help`` lists them."""
    sample = DEFAULTS.sample
    return [
        click.option(
            "--sampler",
            "sample_method",
            type=SAMPLER,
            default=sample.method,
            show_default=True,
            help=f"A sampler plugin ({', '.join(SAMPLERS.names())}) or auto (the design's own: one_shot for "
            "pure-noise designs, consistency for consistency models, else ddim).",
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
            help="For designs that learn from a teacher (direct-distilled, reflow: its pairs; "
            "consistency-distilled: its ODE steps): a complete run folder of an iterative design.",
        ),
        config_option(
            "--teacher-steps",
            kind=DistillConfig,
            field="teacher_steps",
            default=DEFAULTS.distill.teacher_steps,
            help="DDIM steps the teacher takes to make each pair; for progressive-distilled, the teacher's "
            "steps to halve (odd 2N - 1 -> N calls, or 2 -> 1).",
        ),
        config_option(
            "--pairs",
            kind=DistillConfig,
            field="pairs",
            default=DEFAULTS.distill.pairs,
            help="Teacher pairs to make (once, cached in the run folder).",
        ),
        config_option(
            "--teacher-clip-x0/--no-teacher-clip-x0",
            kind=DistillConfig,
            field="teacher_clip_x0",
            default=DEFAULTS.distill.teacher_clip_x0,
            help="Clip the teacher's x0 estimate to [-1, 1] in its pairs and ODE steps (off: the "
            "probability-flow ODE itself, as the papers distil it).",
        ),
    ]
