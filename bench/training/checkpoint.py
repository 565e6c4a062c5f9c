"""Checkpoints: plain dicts of tensors and JSON-like values, loaded with ``weights_only=True`` and checked
against the run they are asked to continue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import UnreadableTensorFile, load_tensors, torch_save_atomic

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or made for another model."""


def identity(
    denoiser: str,
    options: dict[str, Any],
    image_shape: tuple[int, ...],
    num_timesteps: int,
    num_classes: int | None = None,
    norm_groups: list[list[int]] | None = None,
) -> dict:
    """What must match between a checkpoint and the model it is loaded into; ``num_classes`` only for a
    class-conditional model (so unconditional checkpoints keep the identity they always had).

    ``norm_groups``, the (channels, groups) of each GroupNorm, is part of it because the group count has no
    parameter of its own: a network built with other groups loads the same tensors without complaint and
    computes something else (see :func:`legacy_norm_groups`)."""
    ident = {
        "format": FORMAT_VERSION,
        "denoiser": denoiser,
        "denoiser_options": dict(sorted(options.items())),
        "image_shape": list(image_shape),
        "num_timesteps": num_timesteps,
    }
    if num_classes is not None:
        ident["num_classes"] = num_classes
    if norm_groups:
        ident["norm_groups"] = [list(pair) for pair in norm_groups]
    return ident


def norm_groups(model: nn.Module) -> list[list[int]]:
    """(channels, groups) of every GroupNorm of ``model``, in module order."""
    return [[m.num_channels, m.num_groups] for m in model.modules() if isinstance(m, nn.GroupNorm)]


def legacy_norm_groups(groups: list[list[int]]) -> list[list[int]]:
    """The groups a checkpoint written before its identity named them was trained with: DDPM's 32 where the
    channels allow, else the largest divisor of the channels below 32, even when that left one channel per
    group (which the U-Net no longer does)."""
    return [[c, max(g for g in range(1, min(32, c) + 1) if c % g == 0)] for c, _ in groups]


def as_json(value: dict) -> dict:
    return json.loads(json.dumps(value, sort_keys=True))


def save_checkpoint(path: Path, meta: dict, state: dict) -> None:
    torch_save_atomic(path, {"meta": meta, **state})


def load_checkpoint(
    path: Path, expected: dict | None = None, map_location: str | torch.device = "cpu"
) -> dict:
    """Load a checkpoint safely (no arbitrary unpickling) and check that it fits ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        ckpt = load_tensors(path, map_location=map_location)
    except UnreadableTensorFile as exc:
        raise CheckpointError(f"checkpoint {exc}; expected a {CHECKPOINT_NAME} from bench run") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("meta"), dict) or "model" not in ckpt:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a ddpm-bench checkpoint (no meta/model entries)"
        )
    if expected is not None:
        # compared as JSON: a config read back from config.json has lists where the run had tuples
        meta, wanted = as_json(ckpt["meta"]), as_json(expected)
        if "norm_groups" in wanted and "norm_groups" not in meta:  # written before the groups were kept
            meta["norm_groups"] = legacy_norm_groups(wanted["norm_groups"])
            differ = sorted({(c, old, new) for (c, old), (_, new) in zip(meta["norm_groups"],
                             wanted["norm_groups"], strict=True) if old != new})  # fmt: skip
            if differ:
                said = ", ".join(f"{c} channels: {old} groups, now {new}" for c, old, new in differ)
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was written by an earlier version whose GroupNorms had one "
                    f"channel per group ({said}); its weights would load into this network but compute "
                    "something else. Train the run again"
                )
        diffs = [
            f"{key}: checkpoint has {meta.get(key)!r}, the run asks for {wanted.get(key)!r}"
            for key in sorted(set(meta) | set(wanted))
            if meta.get(key) != wanted.get(key)
        ]
        if diffs:
            raise CheckpointError(f"checkpoint {str(path)!r} does not match this run: " + "; ".join(diffs))
    return ckpt
