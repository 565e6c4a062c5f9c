"""Flow maps trained from scratch, without a teacher: MeanFlow (Geng et al. 2025) and shortcut models (Frans
et al. 2024), on a network wrapped with the ``flow-map`` prediction: u(z, r, t) is the average velocity of the
rectified-flow path z_t = (1 - t) x0 + t eps over [r, t], so that z_r = z_t - (t - r) u
(:meth:`bench.process.denoiser.Denoiser.flow_map`).

- MeanFlow: differentiating (t - r) u(z_t, r, t) = int_r^t v ds in t gives the MeanFlow identity
  u = v - (t - r) du/dt, with du/dt the total derivative along the path, (dz/dt, dr/dt, dt/dt) = (v, 0, 1).
  The target is v - (t - r) du/dt under stop-gradient, with the conditional velocity v = eps - x0 for v;
  du/dt by one forward-mode JVP, or by a central finite difference of two more forwards.
- Shortcut models: u at r = t is flow matching's velocity (regressed on eps - x0); for a step of 2h the target
  is the mean of two steps of h taken by the model itself under stop-gradient (its self-consistency), the
  steps powers of two of 1 / M down to the smallest, whose halves are velocities (a gap of 0).

The target's pieces (the derivative, the identity, the two half steps) are separate functions, so the oracle
tests can break each (a flipped sign, the stop-gradient removed) and watch the training fail.

The JVP and the targets run on the bare model, in float32, outside autocast and without gradients
(:mod:`.forward_mode`, which says why and how the JVP is routed past the fused kernels).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from ...config import FlowMapConfig, RunConfig
from ...process.denoiser import FLOW_MAP, Denoiser, average_velocity
from .base import OBJECTIVES, BareModelObjective, Batch, Declaration, ObjectiveContext, StepCost
from .forward_mode import check_jvp, derivative_cost, differentiable_forward, jvp, measured_derivative_cost

ADAPTIVE_C = 1e-3
"""MeanFlow's adaptive loss weight 1 / (e + c)^p: its c."""
DIFFERENCE_STEP = 1e-3
"""The finite difference's step in flow time: its truncation error is O(h^2) = 1e-6 of the curvature, its
float32 rounding about 1e-7 / h = 1e-4 of u."""

Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""u(z, t, r): a flow map's average velocity at flow times t >= r."""


def column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-item values shaped (B, 1, ..., 1) to broadcast against ``like``."""
    return values.to(like.dtype).reshape(-1, *[1] * (like.ndim - 1))


def total_derivative(
    u: Velocity, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor, v: torch.Tensor, method: str
) -> torch.Tensor:
    """du/dt along the path: the derivative of u(z, t, r) in the direction (v, 1, 0) of (z, t, r), by
    ``torch.func.jvp`` or by the central difference (u(z + h v, t + h, r) - u(z - h v, t - h, r)) / 2h."""
    if method == "jvp":
        return jvp(u, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    if method == "finite-difference":
        h = DIFFERENCE_STEP
        ahead, behind = u(z + h * v, t + h, r), u(z - h * v, t - h, r)
        return (ahead - behind) / (2 * h)
    raise ValueError(f"derivative must be jvp or finite-difference, got {method!r}")


def meanflow_target(v: torch.Tensor, dudt: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The MeanFlow identity's right-hand side: u = v - (t - r) du/dt."""
    return v - column(t - r, v) * dudt


def adaptive_loss(error: torch.Tensor, power: float) -> torch.Tensor:
    """Per example: the squared error e (summed over pixels) weighted by 1 / (e + c)^p under stop-gradient,
    divided by the pixel count so that p = 0 is the mean squared error of every other objective here."""
    squared = error.float().pow(2).flatten(1).sum(1)
    weight = (squared.detach() + ADAPTIVE_C).pow(-power) if power else 1.0
    return weight * squared / error[0].numel()


def logit_normal(n: int, mean: float, std: float, generator: torch.Generator, device) -> torch.Tensor:
    """Flow times sigmoid(mean + std n), n ~ N(0, 1) (SD3's and MeanFlow's draw), float32."""
    noise = torch.randn(n, generator=generator, device=device)
    return torch.sigmoid(mean + std * noise)


def meanflow_times(
    n: int, config: FlowMapConfig, generator: torch.Generator, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, r): two logit-normal draws, t the larger, and r = t on a random ``equal_fraction`` of them."""
    a = logit_normal(n, config.time_mean, config.time_std, generator, device)
    b = logit_normal(n, config.time_mean, config.time_std, generator, device)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    equal = torch.rand(n, generator=generator, device=device) < config.equal_fraction
    return t, torch.where(equal, t, r)


class FlowMapObjective(BareModelObjective):
    """What MeanFlow and shortcut share: the bare model for the targets, and the path's draws."""

    def __init__(self, config: FlowMapConfig) -> None:
        self.config = config

    @staticmethod
    def path(
        x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_t, v): a point of the path (1 - t) x0 + t eps and its conditional velocity eps - x0."""
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return x0 + column(t, x0) * (eps - x0), eps - x0


class MeanFlow(FlowMapObjective):
    """MeanFlow (Geng et al. 2025): u regressed on v - (t - r) du/dt under stop-gradient, adaptive weight."""

    stop_gradient = True  # the tests turn it off once, to see the oracle fail without it

    def loss(self, student: Denoiser, batch: Batch, step: int, generator: torch.Generator) -> torch.Tensor:
        x0 = batch.x0
        t, r = meanflow_times(x0.shape[0], self.config, generator, x0.device)
        z, v = self.path(x0, t, generator)
        target_net = self.bare(student) if self.stop_gradient else student
        grad = contextlib.nullcontext() if not self.stop_gradient else torch.no_grad()
        with grad, differentiable_forward(target_net.net):
            dudt = total_derivative(
                target_net.average_velocity, z.float(), t, r, v.float(), self.config.derivative
            )
        target = meanflow_target(v.float(), dudt.float(), t, r)
        u = student.average_velocity(z, t, r)
        return adaptive_loss(u.float() - target, self.config.adaptive_power)


def shortcut_draws(
    n: int, steps: int, generator: torch.Generator, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, d) of the self-consistency examples: a step d = 2^k / M (k = 0 .. log2 M, uniform), and t a
    uniform multiple of d in [d, 1], so that the two half steps stay on the grid the sampler walks."""
    levels = int(math.log2(steps)) + 1
    k = torch.randint(0, levels, (n,), generator=generator, device=device)
    d = (2.0**k) / steps
    multiples = torch.floor(torch.rand(n, generator=generator, device=device) / d) + 1  # 1 .. 1/d
    return (multiples * d).clamp(max=1.0), d


def half_gap(d: torch.Tensor, steps: int) -> torch.Tensor:
    """The gap the network is given for each half step of d: d / 2, or 0 (the velocity) for the smallest d,
    whose halves lie below the grid."""
    half = d / 2
    return torch.where(d <= 1.0 / steps, torch.zeros_like(half), half)


def shortcut_target(
    model: Denoiser, z: torch.Tensor, t: torch.Tensor, d: torch.Tensor, steps: int
) -> torch.Tensor:
    """The self-consistency target for a step d from z at t: the mean of the model's own two half steps,
    u1 = u(z, t, t - d/2), z' = z - d/2 u1, u2 = u(z', t - d/2, t - d), target (u1 + u2) / 2."""
    half, gap = d / 2, half_gap(d, steps)
    u1 = model.average_velocity(z, t, t - gap)
    z_mid = z - column(half, z) * u1
    u2 = model.average_velocity(z_mid, t - half, t - half - gap)
    return (u1 + u2) / 2


class Shortcut(FlowMapObjective):
    """Shortcut models (Frans et al. 2024): flow matching at a gap of 0 on the batch's first part, the
    self-consistency target for a step d on the rest (``consistency_fraction``)."""

    def loss(self, student: Denoiser, batch: Batch, step: int, generator: torch.Generator) -> torch.Tensor:
        x0, cfg = batch.x0, self.config
        n = x0.shape[0]
        consistent = round(cfg.consistency_fraction * n)
        t_flow = torch.rand(n - consistent, generator=generator, device=x0.device)
        t_self, d = shortcut_draws(consistent, cfg.shortcut_steps, generator, x0.device)
        t = torch.cat([t_flow, t_self])
        r = torch.cat([t_flow, t_self - d])
        z, v = self.path(x0, t, generator)
        target = v.float().clone()
        if consistent:
            with torch.no_grad():
                bare = self.bare(student)
                target[n - consistent :] = shortcut_target(
                    bare, z[n - consistent :], t_self, d, cfg.shortcut_steps
                ).float()
        u = student.average_velocity(z, t, r)
        return (u.float() - target).pow(2).flatten(1).mean(1)


def measured_meanflow_cost(config: RunConfig, model: nn.Module, image_shape: tuple[int, ...]) -> StepCost:
    """The derivative's forwards on every example, the JVP's counted on the run's own network."""
    return measured_derivative_cost(config, model, image_shape, meanflow_probe)


def meanflow_probe(model: nn.Module, z: torch.Tensor) -> tuple[Callable[[], object], Callable[[], object]]:
    """MeanFlow's forward and its JVP of du/dt at t = 0.5, r = 0.25 (:data:`forward_mode.Probe`)."""
    t = torch.full((z.shape[0],), 0.5, device=z.device)
    u = partial(average_velocity, model)
    return partial(u, z, t, t / 2), partial(total_derivative, u, z, t, t / 2, z, "jvp")


def shortcut_cost(config: RunConfig) -> StepCost:
    """The two half steps' forwards on the self-consistency share of the batch."""
    return StepCost(extra_forwards=2 * config.flow_map.consistency_fraction)


@OBJECTIVES.register(
    "meanflow",
    declares=Declaration(
        predictions=(FLOW_MAP,),
        second_time=True,
        jvp=True,
        own_noise=True,
        cost=derivative_cost,
        measured_cost=measured_meanflow_cost,
        settings=tuple(
            f"flow_map.{name}"
            for name in ("equal_fraction", "time_mean", "time_std", "derivative", "adaptive_power")
        ),
    ),
)
def meanflow(context: ObjectiveContext) -> MeanFlow:
    """MeanFlow (Geng et al. 2025): the average velocity from the MeanFlow identity, no teacher."""
    if context.config.flow_map.derivative == "jvp":
        check_jvp(context.model, context.image_shape, meanflow_probe, "MeanFlow")
    return MeanFlow(context.config.flow_map)


@OBJECTIVES.register(
    "shortcut",
    declares=Declaration(
        predictions=(FLOW_MAP,),
        second_time=True,
        own_noise=True,
        cost=shortcut_cost,
        settings=("flow_map.consistency_fraction", "flow_map.shortcut_steps"),
    ),
)
def shortcut(context: ObjectiveContext) -> Shortcut:
    """Shortcut models (Frans et al. 2024): flow matching plus self-consistency of two half steps."""
    return Shortcut(context.config.flow_map)
