"""Checkpoints: plain dicts of tensors and JSON-like values, loaded with ``weights_only=True`` and checked
against the run they are asked to continue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .io import UnreadableTensorFile, load_tensors, torch_save_atomic

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
) -> dict:
    """What must match between a checkpoint and the model it is loaded into; ``num_classes`` only for a
    class-conditional model (so unconditional checkpoints keep the identity they always had)."""
    ident = {
        "format": FORMAT_VERSION,
        "denoiser": denoiser,
        "denoiser_options": dict(sorted(options.items())),
        "image_shape": list(image_shape),
        "num_timesteps": num_timesteps,
    }
    if num_classes is not None:
        ident["num_classes"] = num_classes
    return ident


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
        diffs = [
            f"{key}: checkpoint has {meta.get(key)!r}, the run asks for {wanted.get(key)!r}"
            for key in sorted(set(meta) | set(wanted))
            if meta.get(key) != wanted.get(key)
        ]
        if diffs:
            raise CheckpointError(f"checkpoint {str(path)!r} does not match this run: " + "; ".join(diffs))
    return ckpt
