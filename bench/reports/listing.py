"""The text of ``bench list``: every plugin of every kind with its one-line description, and what each
training objective declares it needs and costs."""

from __future__ import annotations

import torch

import denoisers
import schedules
from denoisers.common import count_parameters

from .. import datasets
from ..config import NOISE_LEVELS, RunConfig
from ..process.denoiser import LOSS_WEIGHTS, PREDICTIONS
from ..process.grids import GRIDS
from ..process.sampling import SAMPLERS
from ..registry import Registry
from ..runs.experiment import auto_method
from ..training.objectives import OBJECTIVES, TEACHER_USES, Declaration, StepCost, declaration, needs_teacher

DESIGN_CHOICES = {
    "targets (--target, -o target=)": {
        "eps": "the noise (DDPM, Ho et al. 2020)",
        "x0": "the clean image",
        "v": "v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022)",
        "edm": "EDM's preconditioned F (Karras et al. 2022, Table 1)",
        "flow": "the velocity eps - x0 of the path (1 - t) x0 + t eps (flow matching, rectified flow)",
    },
    "loss weights (--loss-weight)": {
        "uniform": "each target's own L_simple",
        "min-snr": "min(SNR, gamma) in x0 space (Hang et al. 2023)",
        "edm": "SNR + 1 / sigma_data^2 in x0 space (Karras et al. 2022)",
    },
    "noise levels (--noise-levels)": {
        "uniform": "uniform integer timesteps (DDPM)",
        "lognormal": "ln sigma ~ N(p_mean, p_std^2) (EDM)",
        "logit-normal": "logit(t) ~ N(logit_mean, logit_std^2), t = sigma / (1 + sigma) (SD3)",
    },
    "sampling grids (--grid)": {
        "uniform": "DDIM's evenly spaced timesteps from T-1 to 0",
        "karras": "EDM's rho = 7 noise levels (Karras et al. 2022, eq. 5)",
        "log-snr": "evenly spaced in log SNR (DPM-Solver's logSNR)",
    },
}
"""The design choices that are not plugins, each named as the CLI takes it (checked against the code's own
lists by the tests, so a new choice cannot be left out)."""
CHOICE_NAMES = {
    "targets (--target, -o target=)": PREDICTIONS,
    "loss weights (--loss-weight)": LOSS_WEIGHTS,
    "noise levels (--noise-levels)": NOISE_LEVELS,
    "sampling grids (--grid)": GRIDS,
}


def _section(title: str, rows: list[tuple[str, ...]]) -> list[str]:
    lines = [f"{title}:"]
    if not rows:
        return [*lines, "  (none registered)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[-1]]))
    return lines


def _simple(registry: Registry) -> list[tuple[str, str]]:
    return [(p.name, p.description) for p in registry.plugins()]


def denoiser_rows(image_shape: tuple[int, int, int]) -> list[tuple[str, str, str, str]]:
    """Name, parameters at ``image_shape`` (built on the meta device: no memory, no time), target, text."""
    rows = []
    for plugin in denoisers.REGISTRY.plugins():
        try:
            with torch.device("meta"):
                net = plugin.obj(image_shape)
            params = f"{count_parameters(net) / 1e6:.2f}M params"
            recipe = denoisers.recipe_of(net)
            target = f"predicts {recipe.prediction}, samples with {auto_method(recipe)}"
            if denoisers.accepts_labels(plugin.name):
                target += ", takes labels"
            if needs_teacher(recipe):
                target += ", needs --teacher"
        except (ValueError, TypeError) as exc:
            params, target = "n/a", f"({exc})"
        rows.append((plugin.name, params, target, plugin.description))
    return rows


def needs(declared: Declaration) -> str:
    """What an objective trains and takes, in a few words: ``trains consistency, teacher's ODE steps``."""
    parts = [f"trains {'/'.join(declared.predictions)}"]
    if declared.teacher is not None:
        parts.append(f"teacher's {TEACHER_SHORT[declared.teacher]}")
    if declared.pairs:
        parts.append("takes teacher pairs")
    if declared.labels:
        parts.append("takes labels")
    if declared.second_time:
        parts.append("a second time input")
    if declared.jvp:
        parts.append("forward-mode AD (JVP)")
    return ", ".join(parts)


TEACHER_SHORT = {"ode-steps": "ODE steps", "init": "weights"}
assert set(TEACHER_SHORT) == set(TEACHER_USES)


def calls(cost: StepCost) -> str:
    """Network calls per example beyond the student's forward and backward: ``+1 forward, +2 teacher``."""
    parts = []
    if cost.extra_forwards:
        parts.append(f"+{cost.extra_forwards:g} forward{'s' if cost.extra_forwards > 1 else ''}")
    if cost.teacher_calls:
        parts.append(f"+{cost.teacher_calls:g} teacher")
    return ", ".join(parts) or "none"


def objective_rows() -> list[tuple[str, str, str, str]]:
    """Name, what it trains and needs, its extra network calls per example (with the default settings), its
    description; a plugin whose declaration cannot be read shows why."""
    rows = []
    for plugin in OBJECTIVES.plugins():
        try:
            declared = declaration(plugin.name)
            rows.append((plugin.name, needs(declared), calls(declared.cost(RunConfig())), plugin.description))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            rows.append((plugin.name, "n/a", "n/a", f"({exc})"))
    return rows


def plugin_table(image_shape: tuple[int, int, int] = (1, 28, 28)) -> str:
    lines: list[str] = []
    lines += _section("schedules", _simple(schedules.REGISTRY))
    lines += [""] + _section(f"denoisers (at {'x'.join(map(str, image_shape))})", denoiser_rows(image_shape))
    lines += [
        f"    {name} presets: {', '.join(denoisers.presets(name))}"
        for name in denoisers.names()
        if denoisers.presets(name)
    ]
    lines += [""] + _section("samplers", _simple(SAMPLERS))
    lines += [""] + _section(
        "objectives (what each trains and needs; network calls per example beyond a forward and backward)",
        objective_rows(),
    )
    lines += [""] + _section("datasets", _simple(datasets.DATASETS))
    for title, choices in DESIGN_CHOICES.items():
        lines += [""] + _section(title, list(choices.items()))
    return "\n".join(lines)
