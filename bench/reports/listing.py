"""The text of ``bench list``: every plugin of every kind with its one-line description."""

from __future__ import annotations

import torch

import denoisers
import schedules
from denoisers.common import count_parameters

from .. import datasets
from ..config import NOISE_LEVELS
from ..process.denoiser import LOSS_WEIGHTS, PREDICTIONS
from ..process.grids import GRIDS
from ..process.sampling import SAMPLERS
from ..registry import Registry

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
            target = f"predicts {recipe.prediction}, {recipe.sampler}"
            if denoisers.accepts_labels(plugin.name):
                target += ", takes labels"
            if recipe.needs_teacher:
                target += ", needs --teacher"
        except (ValueError, TypeError) as exc:
            params, target = "n/a", f"({exc})"
        rows.append((plugin.name, params, target, plugin.description))
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
    lines += [""] + _section("datasets", _simple(datasets.DATASETS))
    for title, choices in DESIGN_CHOICES.items():
        lines += [""] + _section(title, list(choices.items()))
    return "\n".join(lines)
