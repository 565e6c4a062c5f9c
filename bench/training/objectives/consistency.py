"""Consistency models' two objectives (Song et al. 2023; Song & Dhariwal 2023), in EDM's variables y =
x_t / sqrt(alpha_bar) and sigma, on a network wrapped with the ``consistency`` prediction (so f(y,
sigma_min) = y by construction, :class:`bench.process.denoiser.Denoiser`).

Both compare the student at a noise level sigma_{n+1} with a target at the next lower level sigma_n of a
rho = 7 grid of N levels over the schedule's finite range:

- consistency distillation (CD): y_{n+1} = x0 + sigma_{n+1} z, and y^_n one step of the teacher's
  probability-flow ODE from it (Heun, or DDIM, which is Euler's step in y); the target is an EMA of the
  student (rate mu), the student starts from the teacher's weights, the distance is l2 or pseudo-Huber;
- improved consistency training (iCT): no teacher; y_n = x0 + sigma_n z shares the noise of y_{n+1} (the
  one-sample estimate of the ODE step), the target is the student itself under stop-gradient, the distance
  pseudo-Huber with c = 0.00054 sqrt(d), the weight 1 / (sigma_{n+1} - sigma_n), n drawn with log-normal
  probabilities (P_mean -1.1, P_std 2.0) and N doubling from ``levels_start`` to ``levels_end`` over
  training.

The step from (n + 1) to n, the target's call and the distance are separate functions, so the oracle tests
can break each (a step going the wrong way, a target without stop-gradient) and watch the training fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...config import ConsistencyConfig, RunConfig
from ...process.denoiser import CONSISTENCY, Denoiser
from ...process.diffusion import Diffusion
from ...process.grids import RHO, Grid, get_sigmas_karras
from ..ema import EMA
from .base import OBJECTIVES, Batch, Declaration, ObjectiveContext, StepCost, start_from_teacher

ICT_P_MEAN, ICT_P_STD = -1.1, 2.0
"""iCT's log-normal choice of levels (Song & Dhariwal 2023, section 3.5)."""
HUBER_C_PER_SQRT_DIM = 0.00054
"""iCT's pseudo-Huber constant per sqrt(dimension): c = 0.03 for CIFAR-10's d = 3,072."""
TEACHER_CALLS = {"heun": 2, "ddim": 1}
"""Teacher network calls per example of one CD step."""


def consistency_levels(diffusion: Diffusion, n: int, rho: float = RHO) -> torch.Tensor:
    """``n`` noise levels sigma_0 < ... < sigma_{n-1} of EDM's rho grid over the schedule's finite range
    (sigma_0 = sigma at t = 0, the sigma_min where f is the identity), float64."""
    if n < 2:
        raise ValueError(f"a consistency grid needs N >= 2 levels, got {n}")
    sigma_min, sigma_max = Grid("karras", rho).sigma_range(diffusion)
    return get_sigmas_karras(n, sigma_min, sigma_max, rho).flip(0)


def ict_levels(step: int, total_steps: int, start: int, end: int) -> int:
    """iCT's N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2 floor(s1 / s0) + 1)) (Song &
    Dhariwal 2023, eq. 8): N doubles from s0 + 1 in equal stretches of training and reaches s1 + 1 by the end,
    whether or not s1 / s0 is a power of two (the logarithm is not rounded)."""
    stretch = max(math.floor(total_steps / (math.log2(max(end // start, 1)) + 1)), 1)
    return min(start * 2 ** (step // stretch), end) + 1


def lognormal_level_weights(sigmas: torch.Tensor) -> torch.Tensor:
    """iCT's probability of each interval [sigma_n, sigma_{n+1}]: the mass a log-normal (P_mean, P_std) puts
    between its ends, erf((ln sigma_{n+1} - P_mean) / (sqrt 2 P_std)) - erf((ln sigma_n - P_mean) / (sqrt 2
    P_std)), normalised."""
    cdf = torch.erf((sigmas.log() - ICT_P_MEAN) / (math.sqrt(2.0) * ICT_P_STD))
    mass = (cdf[1:] - cdf[:-1]).clamp(min=0)
    return mass / mass.sum()


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||a - b||^2 + c^2) - c per example (Song & Dhariwal 2023, eq. 11)."""
    return ((a - b).float().pow(2).flatten(1).sum(1) + c * c).sqrt() - c


def squared_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b||^2 per example, as a mean over pixels (the scale of the regression losses)."""
    return (a - b).float().pow(2).flatten(1).mean(1)


def as_column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).reshape(-1, *[1] * (like.ndim - 1))


def at_level(x0_or_y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = y / sqrt(1 + sigma^2): the network's input scale for a y at noise level sigma."""
    return x0_or_y * (1.0 + as_column(sigma, x0_or_y).pow(2)).rsqrt()


def ode_step(
    teacher: Denoiser,
    y: torch.Tensor,
    sigma: torch.Tensor,
    t: torch.Tensor,
    sigma_next: torch.Tensor,
    t_next: torch.Tensor,
    solver: str,
) -> torch.Tensor:
    """One step of the teacher's probability-flow ODE dy/dsigma = (y - D(y; sigma)) / sigma from ``sigma``
    down to ``sigma_next`` (both per example): Euler's step (= DDIM's, eta 0) or Heun's (EDM's
    Algorithm 1)."""
    s, s_next = as_column(sigma, y), as_column(sigma_next, y)
    d = (y - teacher(at_level(y, sigma), t)[0]) / s
    y_next = y + (s_next - s) * d
    if solver == "heun":
        d_next = (y_next - teacher(at_level(y_next, sigma_next), t_next)[0]) / s_next
        y_next = y + (s_next - s) * (d + d_next) / 2
    return y_next


def target_output(target: Denoiser, y: torch.Tensor, sigma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The target's f(y, sigma), under stop-gradient: what the student at the level above is pulled to."""
    with torch.no_grad():
        return target(at_level(y, sigma), t)[0]


@dataclass
class Levels:
    """The drawn pair of adjacent levels per example: sigma_n < sigma_{n+1}, and their timesteps."""

    sigma: torch.Tensor
    t: torch.Tensor
    sigma_next: torch.Tensor
    t_next: torch.Tensor


class ConsistencyObjective:
    """The loss of one training step of CD (``teacher`` given) or iCT (none), and the state it keeps (the
    CD target network, an EMA of the student, which :meth:`state_dict` puts in the checkpoint). Beside the
    student's forward and backward, each example costs the target's forward and, for CD, the teacher's
    calls of its ODE step (:func:`consistency_cost`)."""

    def __init__(
        self,
        kind: str,
        config: ConsistencyConfig,
        diffusion: Diffusion,
        *,
        total_steps: int,
        image_shape: tuple[int, ...],
        teacher: Denoiser | None = None,
    ) -> None:
        if kind not in ("consistency-distillation", "consistency-training"):
            raise ValueError(f"unknown consistency objective {kind!r}")
        self.distilled = kind == "consistency-distillation"
        if self.distilled and teacher is None:
            raise ValueError("consistency distillation needs a teacher")
        self.config = config
        self.diffusion = diffusion
        self.teacher = teacher
        self.total_steps = total_steps
        d = math.prod(image_shape)
        self.huber_c = config.huber_c if config.huber_c is not None else HUBER_C_PER_SQRT_DIM * math.sqrt(d)
        self.target: EMA | None = None
        self._grids: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def bind(self, model: nn.Module) -> None:
        """Start CD's target network theta^- from ``model`` (the student, on its device), an EMA of it with
        the paper's mu from the first step (no warm-up); iCT has none."""
        if self.distilled:
            self.target = EMA(model, self.config.target_ema, warmup=False)

    def levels_at(self, step: int) -> int:
        """N at training step ``step``: fixed for CD, iCT's doubling schedule for CT."""
        if self.distilled:
            return self.config.levels
        return ict_levels(step, self.total_steps, self.config.levels_start, self.config.levels_end)

    def grid(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas, timesteps) of the N-level grid, ascending, float64 on ``device`` (computed once per N)."""
        if n not in self._grids:
            sigmas = consistency_levels(self.diffusion, n)
            self._grids[n] = (sigmas.to(device), self.diffusion.sigma_to_t(sigmas).to(device))
        return self._grids[n]

    def draw_levels(self, step: int, batch: int, generator: torch.Generator, device: torch.device) -> Levels:
        """n per example: uniform over the N - 1 intervals for CD, iCT's log-normal weights for CT."""
        sigmas, ts = self.grid(self.levels_at(step), device)
        if self.distilled:
            n = torch.randint(0, sigmas.numel() - 1, (batch,), generator=generator, device=device)
        else:
            weights = lognormal_level_weights(sigmas)
            n = torch.multinomial(weights, batch, replacement=True, generator=generator)
        return Levels(sigmas[n], ts[n], sigmas[n + 1], ts[n + 1])

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.config.distance == "l2":
            return squared_l2(a, b)
        return pseudo_huber(a, b, self.huber_c)

    def loss(self, student: Denoiser, batch: Batch, step: int, generator: torch.Generator) -> torch.Tensor:
        """The per-example loss lambda(sigma_n) d(f(y_{n+1}, sigma_{n+1}), f^-(y_n, sigma_n))."""
        x0 = batch.x0
        lv = self.draw_levels(step, x0.shape[0], generator, x0.device)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        y_next = x0 + as_column(lv.sigma_next, x0) * z
        if self.distilled:
            assert self.teacher is not None and self.target is not None
            with torch.no_grad():
                y = ode_step(
                    self.teacher, y_next, lv.sigma_next, lv.t_next, lv.sigma, lv.t, self.config.teacher_solver
                )
            target = target_output(self.student_like(student, self.target.module), y, lv.sigma, lv.t)
        else:
            y = x0 + as_column(lv.sigma, x0) * z
            target = target_output(student, y, lv.sigma, lv.t)
        online = student(at_level(y_next, lv.sigma_next), lv.t_next)[0]
        loss = self.distance(online, target)
        if not self.distilled:
            loss = loss / (lv.sigma_next - lv.sigma).to(loss.device, loss.dtype)
        return loss

    @staticmethod
    def student_like(student: Denoiser, net: nn.Module) -> Denoiser:
        """The student's wrapper around another network (the CD target)."""
        return Denoiser(net, student.diffusion, student.prediction, sigma_data=student.sigma_data)

    def after_step(self) -> None:
        """CD's target update theta^- <- mu theta^- + (1 - mu) theta after the optimiser step."""
        if self.target is not None:
            self.target.update()

    def state_dict(self) -> dict:
        return {"target": self.target.state_dict()} if self.target is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.target is not None:
            self.target.load_state_dict(state["target"])


def consistency_cost(config: RunConfig) -> StepCost:
    """The target's forward on each example, and for CD the teacher's calls of its ODE step (none for
    iCT, whose target is the student itself)."""
    return StepCost(extra_forwards=1)


def distillation_cost(config: RunConfig) -> StepCost:
    return StepCost(extra_forwards=1, teacher_calls=TEACHER_CALLS[config.consistency.teacher_solver])


@OBJECTIVES.register(
    "consistency-distillation",
    declares=Declaration(
        predictions=(CONSISTENCY,),
        teacher="ode-steps",
        own_noise=True,
        cost=distillation_cost,
        settings=(
            *("distill.teacher", "distill.teacher_clip_x0", "consistency.levels"),
            *("consistency.teacher_solver", "consistency.target_ema", "consistency.distance"),
            *("consistency.huber_c", "consistency.student_init"),
        ),
    ),
)
def consistency_distillation(context: ObjectiveContext) -> ConsistencyObjective:
    """Consistency distillation (CD, Song et al. 2023): f agrees across one teacher ODE step; needs --teacher.

    The student starts from the teacher's weights unless ``--student-init random``."""
    if context.config.consistency.student_init == "teacher":
        start_from_teacher(context, hint=", or pass --student-init random")
    return consistency_objective("consistency-distillation", context)


@OBJECTIVES.register(
    "consistency-training",
    declares=Declaration(
        predictions=(CONSISTENCY,),
        own_noise=True,
        fixed_plan="its number of noise levels doubles in stretches of that plan",
        cost=consistency_cost,
        settings=(
            *("consistency.levels_start", "consistency.levels_end"),
            *("consistency.distance", "consistency.huber_c"),
        ),
    ),
)
def consistency_training(context: ObjectiveContext) -> ConsistencyObjective:
    """Improved consistency training (iCT, Song & Dhariwal 2023): f agrees across levels, no teacher."""
    return consistency_objective("consistency-training", context)


def consistency_objective(kind: str, context: ObjectiveContext) -> ConsistencyObjective:
    return ConsistencyObjective(
        kind,
        context.config.consistency,
        context.diffusion,
        total_steps=context.config.train.steps,
        image_shape=context.image_shape,
        teacher=context.teacher,
    )
