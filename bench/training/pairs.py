"""Coupled pairs for one-step distillation (Luhman & Luhman 2021): a trained teacher run maps seeded pure
noises x_T to images with deterministic DDIM (eta = 0), and a student learns that map in one call.

With independent pairs (x_T drawn apart from x0) the MSE optimum of a network that sees only x_T is E[x0],
the mean image. With coupled pairs x0 = DDIM(x_T) is a function of x_T, so the optimum is that function.
The difference between ``direct`` and ``direct-distilled`` is this and nothing else.

Pairs are made once per run folder and cached in its ``pairs.pt`` (tensors and plain settings, loaded with
``weights_only=True``), chunk by chunk: each chunk's noise comes from a generator seeded by the run's seed
and the chunk's index, so an interrupted run continues where it stopped and ends with the same pairs, bit
for bit, as one that was never interrupted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import DistillConfig
from ..io import load_tensors, torch_save_atomic
from ..process.denoiser import Denoiser
from ..process.sampling import sample

CHUNK = 250
HELD_OUT = 500  # noises never trained on, for the student's distance to its teacher's map


class TeacherError(ValueError):
    """A --teacher that cannot teach: not a complete run, damaged, or for other images."""


@dataclass(frozen=True)
class Teacher:
    """A finished run's EMA model, ready to sample deterministically."""

    path: Path
    denoiser: Denoiser
    step: int
    forward_flops: float
    image_shape: tuple[int, ...]
    device: torch.device


def noise(seed: int, chunk: int, n: int, shape: tuple[int, ...], *, held_out: bool = False) -> torch.Tensor:
    """The x_T of one chunk: training chunks and held-out chunks come from disjoint seeded streams."""
    generator = torch.Generator().manual_seed(2 * (seed * 1_000_003 + chunk) + int(held_out))
    return torch.randn((n, *shape), generator=generator)


def teacher_images(teacher: Teacher, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """What the teacher's deterministic DDIM (eta = 0) makes of each noise, on CPU."""
    shape = tuple(x_T.shape)
    x0 = sample(teacher.denoiser, shape, method="ddim", steps=steps, eta=0.0, x_T=x_T, device=teacher.device)
    return x0.float().cpu()


@dataclass(frozen=True)
class Pairs:
    x_T: torch.Tensor
    x0: torch.Tensor
    settings: dict
    seconds: float  # teacher sampling time, summed over the sessions that made them


def make_pairs(
    teacher: Teacher, config: DistillConfig, *, seed: int, path: Path, progress: bool = True
) -> Pairs:
    """``config.pairs`` (x_T, DDIM(x_T)) pairs, made in chunks and cached in ``path`` after each chunk."""
    shape = teacher.image_shape
    settings = {
        "teacher": str(teacher.path),
        "teacher_step": teacher.step,
        "teacher_steps": config.teacher_steps,
        "eta": 0.0,
        "clip_x0": teacher.denoiser.clip_x0,
        "pairs": config.pairs,
        "seed": seed,
        "chunk": CHUNK,
        "image_shape": list(shape),
    }
    x_T, x0, seconds = [], [], 0.0
    if path.is_file():
        saved = load_tensors(path)
        made_with = {"clip_x0": True, **saved["settings"]}  # pairs of before the setting were clipped
        if made_with != settings:
            raise ValueError(
                f"{path} holds pairs made with other settings ({made_with}), not {settings}; remove it to "
                "make them again"
            )
        x_T, x0, seconds = list(saved["x_T"]), list(saved["x0"]), float(saved["seconds"])
    chunks = math.ceil(config.pairs / CHUNK)
    bar = tqdm(total=chunks, initial=len(x_T), desc="teacher pairs", unit="chunk", disable=not progress)
    for c in range(len(x_T), chunks):
        start = time.perf_counter()
        noises = noise(seed, c, min(CHUNK, config.pairs - c * CHUNK), shape)
        x_T.append(noises)
        x0.append(teacher_images(teacher, noises, config.teacher_steps))
        seconds += time.perf_counter() - start
        torch_save_atomic(path, {"settings": settings, "x_T": x_T, "x0": x0, "seconds": seconds})
        bar.update(1)
    bar.close()
    return Pairs(torch.cat(x_T), torch.cat(x0), settings, seconds)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the per-image RMS pixel distance (images in [-1, 1])."""
    return (a - b).pow(2).flatten(1).mean(1).sqrt().mean().item()


def distillation_metrics(
    teacher: Teacher, pairs: Pairs, student: Denoiser, mean_image: torch.Tensor, *, seed: int
) -> dict:
    """How well one student call reproduces the teacher's map on held-out noises, beside what one DDIM step
    of the teacher and the mean image give; and what the pairs cost."""
    config_steps = pairs.settings["teacher_steps"]
    x_T = noise(seed, 0, HELD_OUT, teacher.image_shape, held_out=True)
    target = teacher_images(teacher, x_T, config_steps)
    one_step = teacher_images(teacher, x_T, 1)
    one_call = (
        sample(student, tuple(x_T.shape), method="one_shot", x_T=x_T, device=teacher.device).float().cpu()
    )
    return {
        "teacher": pairs.settings["teacher"],
        "teacher_step": pairs.settings["teacher_step"],
        "teacher_steps": config_steps,
        "pairs": pairs.x0.shape[0],
        "pair_seconds": pairs.seconds,
        "pair_flops": pairs.x0.shape[0] * config_steps * teacher.forward_flops,
        "held_out": HELD_OUT,
        "rms_to_teacher": rms(one_call.clamp(-1, 1), target),
        "rms_teacher_1_step_to_teacher": rms(one_step, target),
        "rms_mean_image_to_teacher": rms(mean_image.expand_as(target), target),
    }
