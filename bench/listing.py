"""The text of ``bench list``: every plugin of every kind with its one-line description."""

from __future__ import annotations

import torch

import denoisers
import schedules
from denoisers.common import count_parameters

from . import datasets
from .registry import Registry
from .sampling import SAMPLERS


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
    return "\n".join(lines)
