"""Easy consistency tuning (ECT, Geng et al. 2024): consistency training in continuous time, started from a
diffusion model's weights (``--teacher``, used as the initialisation only) rather than from scratch.

Each example draws its noise level sigma_t log-normally (iCT's P_mean -1.1, P_std 2.0, within the schedule's
finite range, from 2 sigma_min) and the lower level by ECT's mapping function, r = t (1 - n(t) / q^a) with
n(t) = 1 + k sigmoid(-b t) (k = 8, b = 1, q = 2) and a the stage of training: the run's planned steps in
:data:`STAGES` equal stages. In stage 0 r falls below the schedule's smallest level (n(t) >= 1), so the
target is f(y_r, sigma_min) = y_r, the image itself plus sigma_min of noise: the diffusion model's own
denoising loss, which is where the tuning starts; each stage halves t - r towards the consistency condition.
The target is the student under stop-gradient at (y_r, r), y_t and y_r sharing their noise; the distance is
iCT's (pseudo-Huber or l2), weighted by 1 / (t - r).
"""

from __future__ import annotations

import math

import torch

from ...config import ConsistencyConfig, RunConfig
from ...process.denoiser import CONSISTENCY, Denoiser
from ...process.diffusion import Diffusion
from ...process.grids import Grid
from .base import (
    OBJECTIVES,
    Batch,
    Declaration,
    ObjectiveContext,
    StatelessObjective,
    StepCost,
    start_from_teacher,
)
from .consistency import (
    HUBER_C_PER_SQRT_DIM,
    ICT_P_MEAN,
    ICT_P_STD,
    as_column,
    at_level,
    pseudo_huber,
    squared_l2,
    target_output,
)

STAGES = 8
"""Stages of ECT's schedule over a run's planned steps: t - r halves from one to the next."""
LOWEST = 2.0
"""The lowest t drawn, in units of the schedule's sigma_min (where f is the identity and t - r would be 0)."""
MAPPING_K, MAPPING_B, MAPPING_Q = 8.0, 1.0, 2.0
"""ECT's mapping function n(t) = 1 + k sigmoid(-b t) and its ratio q per stage."""


def stage(step: int, total_steps: int) -> int:
    """The stage a of training step ``step`` of ``total_steps``: 0 .. STAGES - 1 in equal stretches."""
    return min(step * STAGES // max(total_steps, 1), STAGES - 1)


def lower_level(sigma: torch.Tensor, a: int, sigma_min: float) -> torch.Tensor:
    """ECT's r for t = ``sigma``: t (1 - n(t) / q^a), n(t) = 1 + k sigmoid(-b t), at least sigma_min (the
    level where f is the identity)."""
    n = 1.0 + MAPPING_K * torch.sigmoid(-MAPPING_B * sigma)
    return (sigma * (1.0 - n / MAPPING_Q**a)).clamp(min=sigma_min)


class ConsistencyTuning(StatelessObjective):
    """ECT's loss for one step: d(f(y_t, t), sg f(y_r, r)) / (t - r), y_t and y_r sharing their noise."""

    def __init__(
        self,
        config: ConsistencyConfig,
        diffusion: Diffusion,
        *,
        total_steps: int,
        image_shape: tuple[int, ...],
    ) -> None:
        self.config = config
        self.diffusion = diffusion
        self.total_steps = total_steps
        self.sigma_min, self.sigma_max = Grid("karras").sigma_range(diffusion)
        d = math.prod(image_shape)
        self.huber_c = config.huber_c if config.huber_c is not None else HUBER_C_PER_SQRT_DIM * math.sqrt(d)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return squared_l2(a, b) if self.config.distance == "l2" else pseudo_huber(a, b, self.huber_c)

    def loss(self, student: Denoiser, batch: Batch, step: int, generator: torch.Generator) -> torch.Tensor:
        x0 = batch.x0
        noise = torch.randn(x0.shape[0], generator=generator, device=x0.device, dtype=torch.float64)
        lowest, highest = math.log(LOWEST * self.sigma_min), math.log(self.sigma_max)
        sigma = (ICT_P_MEAN + ICT_P_STD * noise).clamp(lowest, highest).exp()
        sigma_r = lower_level(sigma, stage(step, self.total_steps), self.sigma_min)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        y, y_r = x0 + as_column(sigma, x0) * z, x0 + as_column(sigma_r, x0) * z
        t, t_r = self.diffusion.sigma_to_t(sigma), self.diffusion.sigma_to_t(sigma_r)
        target = target_output(student, y_r, sigma_r, t_r)
        online = student(at_level(y, sigma), t)[0]
        return self.distance(online, target) / (sigma - sigma_r).to(x0.device, torch.float32)


def tuning_cost(config: RunConfig) -> StepCost:
    """The target's forward on each example (the student itself, under stop-gradient)."""
    return StepCost(extra_forwards=1)


@OBJECTIVES.register(
    "consistency-tuning",
    declares=Declaration(
        predictions=(CONSISTENCY,),
        teacher="init",
        own_noise=True,
        fixed_plan="its t - r halves in stages of that plan",
        cost=tuning_cost,
        settings=("distill.teacher", "consistency.distance", "consistency.huber_c"),
    ),
)
def consistency_tuning(context: ObjectiveContext) -> ConsistencyTuning:
    """Easy consistency tuning (ECT, Geng et al. 2024): continuous-time CT from a diffusion run's weights."""
    start_from_teacher(context)
    return ConsistencyTuning(
        context.config.consistency,
        context.diffusion,
        total_steps=context.config.train.steps,
        image_shape=context.image_shape,
    )
