"""Progressive distillation (Salimans & Ho 2022, Algorithm 2): a student learns to take, in one
deterministic DDIM step, the two steps its teacher takes, and so samples in about half the teacher's calls;
repeated, each round's student teaching the next, it reaches a few calls.

The student's DDIM grid must be every other point of the teacher's. DDIM's uniform grid of S points
(:func:`bench.process.grids.ddim_timesteps`) is followed by one last call at t = 0 that returns the image, so:

- a teacher of S = 2N - 1 steps (odd, >= 3) has, at its even points, exactly the student's grid of N steps;
  each student step but the last is two teacher steps, and the last (t = 0 to the image) is one, the
  teacher's own; N = (S + 1) / 2 calls;
- a teacher of S = 2 steps (T-1 and 0) halves to one call from T-1 straight to the image.

Every student step is trained, the last one too (Salimans & Ho's Algorithm 2 draws from all of them): the
student starts from its teacher's weights, but its network is shared across timesteps, so training the
other steps would move its step at t = 0 away from the teacher's unless that step is trained as well.

So the rounds from a 33-step teacher are 33 -> 17 -> 9 -> 5 -> 3 -> 2 -> 1 calls. The student's target is
the x0 that makes its DDIM step from z_t land where the teacher's two steps do, x~ = (z_t'' - (sigma_t'' /
sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t) (eq. 7; alpha = sqrt(alpha_bar), sigma =
sqrt(1 - alpha_bar)), and the loss is ``max(SNR, 1) ||x0_hat - x~||^2`` (the paper's truncated-SNR
weighting), which stays finite where SNR is about 0.
"""

from __future__ import annotations

import torch
from torch import nn

from ...process.denoiser import PREDICTIONS, Denoiser
from ...process.diffusion import Diffusion
from ...process.grids import ddim_timesteps
from .base import (
    OBJECTIVES,
    Batch,
    Declaration,
    ObjectiveContext,
    StatelessObjective,
    StepCost,
    start_from_teacher,
)

CLEAN = -1
"""The end of the last DDIM step: the image itself (alpha_bar = 1), not a timestep."""


def student_steps(teacher_steps: int) -> int:
    """The student's DDIM steps for a teacher of ``teacher_steps``: (S + 1) / 2 for odd S >= 3, 1 for 2."""
    if teacher_steps == 2:
        return 1
    if teacher_steps < 3 or teacher_steps % 2 == 0:
        raise ValueError(
            f"progressive distillation halves the teacher's DDIM grid: it needs an odd --teacher-steps >= 3 "
            f"(2N - 1 steps -> N, e.g. 33, 17, 9, 5, 3) or 2 (-> 1), got {teacher_steps}"
        )
    return (teacher_steps + 1) // 2


def halving_steps(num_timesteps: int, teacher_steps: int) -> tuple[list[int], list[int], list[int]]:
    """(start, middle, end) timesteps of each student step, ``CLEAN`` for the image: two teacher steps
    through the middle, or for the student's last step of an odd teacher (t = 0 to the image) the teacher's
    one step, written with ``CLEAN`` as its middle."""
    student_steps(teacher_steps)
    grid = ddim_timesteps(num_timesteps, teacher_steps)
    if teacher_steps == 2:
        return [grid[0]], [grid[1]], [CLEAN]
    return [*grid[0:-1:2], grid[-1]], [*grid[1::2], CLEAN], [*grid[2::2], CLEAN]


def coefficients(diffusion: Diffusion, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(alpha_bar), sqrt(1 - alpha_bar)) per item, (1, 0) at ``CLEAN``."""
    clean = (t == CLEAN).view(-1, *[1] * (x.ndim - 1))
    a, b = diffusion.coefficients(t.clamp(min=0), x)
    return torch.where(clean, 1.0, a), torch.where(clean, 0.0, b)


def ddim_step(teacher: Denoiser, z: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) of the teacher from t to t_next (per item)."""
    x0, eps = teacher(z, t)
    a, b = coefficients(teacher.diffusion, t_next, z)
    return a * x0 + b * eps


class ProgressiveObjective(StatelessObjective):
    """The loss of one round of progressive distillation: two teacher calls per example (its two DDIM
    steps), and no state of its own (the teacher is fixed), so the checkpoint holds nothing for it."""

    def __init__(self, diffusion: Diffusion, teacher: Denoiser, teacher_steps: int) -> None:
        self.diffusion = diffusion
        self.teacher = teacher
        starts, middles, ends = halving_steps(diffusion.num_timesteps, teacher_steps)
        self.steps = torch.tensor([starts, middles, ends], dtype=torch.long)

    def bind(self, model: nn.Module) -> None:
        self.steps = self.steps.to(next(model.parameters()).device)

    def target(
        self, z_t: torch.Tensor, t: torch.Tensor, t_mid: torch.Tensor, t_end: torch.Tensor
    ) -> torch.Tensor:
        """The x0 whose DDIM step from (z_t, t) to t_end lands where the teacher's two steps do (its one
        step, where the middle is ``CLEAN``: its image). Every example makes two teacher calls, so that a
        batch is one shape; the second call of a one-step example is not used."""
        with torch.no_grad():
            z_mid = ddim_step(self.teacher, z_t, t, t_mid)
            z_end = ddim_step(self.teacher, z_mid, t_mid.clamp(min=0), t_end)
            one_step = (t_mid == CLEAN).view(-1, *[1] * (z_t.ndim - 1))
            z_end = torch.where(one_step, z_mid, z_end)
        a, b = self.diffusion.coefficients(t, z_t)
        a_end, b_end = coefficients(self.diffusion, t_end, z_t)
        ratio = b_end / b
        return (z_end - ratio * z_t) / (a_end - ratio * a)

    def loss(self, student: Denoiser, batch: Batch, step: int, generator: torch.Generator) -> torch.Tensor:
        """max(SNR, 1) ||x0_hat(z_t) - x~||^2 per example, at a student step drawn uniformly."""
        x0 = batch.x0
        k = torch.randint(0, self.steps.shape[1], (x0.shape[0],), generator=generator, device=x0.device)
        t, t_mid, t_end = self.steps[:, k]
        z_t = self.diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=generator, device=x0.device))
        target = self.target(z_t, t, t_mid, t_end)
        x0_hat = student(z_t, t)[0]
        weight = self.diffusion.snr_at(t).clamp(min=1.0).to(x0.device, torch.float32)
        return weight * (x0_hat.float() - target.float()).pow(2).flatten(1).mean(1)


@OBJECTIVES.register(
    "progressive-distillation",
    declares=Declaration(
        # eps cannot give x0 where SNR is about 0, at the first step from pure noise
        predictions=tuple(p for p in PREDICTIONS if p != "eps"),
        teacher="ode-steps",
        own_noise=True,
        cost=lambda config: StepCost(teacher_calls=2),
        student_steps=student_steps,
        settings=("distill.teacher", "distill.teacher_steps", "distill.teacher_clip_x0"),
    ),
)
def progressive_distillation(context: ObjectiveContext) -> ProgressiveObjective:
    """Progressive distillation (Salimans & Ho 2022): one student DDIM step learns two of the teacher's.

    The student starts from the teacher's weights."""
    start_from_teacher(context)
    assert context.teacher is not None
    return ProgressiveObjective(context.diffusion, context.teacher, context.config.distill.teacher_steps)
