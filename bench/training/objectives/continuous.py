"""Continuous-time consistency training (sCT, Lu & Song 2024): consistency training in the limit of
adjacent levels, where the target's difference becomes the consistency function's total derivative along
the path, taken by a JVP, in TrigFlow's variables, with the paper's tangent normalisation and warm-up.

TrigFlow writes the noisy image as x_s = cos(s) x0 + sin(s) z, z ~ N(0, sd^2 I), s in [0, pi/2]: EDM's
y = x_s / cos s at sigma = sd tan s, so this project's x_t = sqrt(ab) y = x_s / sqrt(cos^2 s + sd^2 sin^2 s).
The network is wrapped with the ``trigflow`` prediction (:data:`bench.process.denoiser.TRIGFLOW`): f = cos s
x_s - sd sin s F(x_s / sd, s), conditioned on s itself, not on the schedule's timestep (whose derivative in s
grows without bound towards pure noise: the instability the paper's identity time transformation removes).
The objective reads F back from the wrapper's x0 estimate, F = (cos s x_s - f) / (sd sin s), as
NVlabs/FastGen's ``TrigFlowPrecond`` reads an EDM network; for ``trigflow`` this is the network's output
exactly, and it is the same loss for any wrapper whose x0 estimate is a consistency function (the oracle
tests run it on the ``consistency`` parametrisation's exact Gaussian f).

One step (the paper's Algorithm 1, without its learned adaptive weight):

- sigma log-normal (P_mean -1.0, P_std 1.4, the paper's CIFAR-10 setting) within the schedule's finite
  range, s = arctan(sigma / sd), x_s and its conditional velocity dx/ds = cos s z - sin s x0 (the one-sample
  estimate of the probability-flow ODE's, as in every consistency training);
- the tangent g = -cos^2 s (sd F^- - dx/ds) - w cos s sin s (x_s + sd dF^-/ds), which at w = 1 is
  cos s df^-/ds, the consistency function's total derivative along the path; dF^-/ds by ``torch.func.jvp``
  with the paper's tangents (cos s sin s dx/ds, cos s sin s), or by a central difference along the path;
  w rises from 0 to 1 over ``tangent_warmup`` steps (at w = 0 the loss is TrigFlow's diffusion loss);
- g normalised as g / (||g|| + c), and the loss ||F - F^- - g||^2 per pixel, weighted by 1 / sigma (the
  paper's prior weighting 1 / (sd tan s)), F^- the same forward under stop-gradient.

The learned adaptive weight e^w(s) / D ... - w(s) is left out: it is a second network trained beside the
model by the same optimiser, which the trainer here does not have; the prior weighting is what it refines.
The JVP runs on the bare model, in float32, without gradients (:mod:`.forward_mode`).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from ...config import ConsistencyConfig, RunConfig
from ...process.denoiser import TRIG_TIME_SCALE, TRIGFLOW, Denoiser
from ...process.diffusion import Diffusion
from ...process.grids import Grid
from .base import OBJECTIVES, BareModelObjective, Batch, Declaration, ObjectiveContext, StepCost
from .flow_map import column
from .forward_mode import check_jvp, derivative_cost, differentiable_forward, jvp, measured_derivative_cost

SCT_P_MEAN, SCT_P_STD = -1.0, 1.4
"""sCT's log-normal draw of sigma = sd tan s (Lu & Song 2024, CIFAR-10)."""
DIFFERENCE_STEP = 3e-3
"""The central difference's step in s (at most s / 2, so that s - h stays above 0): against the JVP, within
0.5% on a random small U-Net from s = 0.05 to 1.5 (tests/test_sct.py); a step of 1e-4 is off by 12% at
s = 0.05, float32's rounding over a difference that small."""


def trig_path(
    x0: torch.Tensor, z: torch.Tensor, s: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, ...]:
    """(x_s, dx/ds) of TrigFlow's path x_s = cos s x0 + sin s sd z, z ~ N(0, I)."""
    cos, sin = column(s.cos(), x0), column(s.sin(), x0)
    return cos * x0 + sin * sigma_data * z, cos * sigma_data * z - sin * x0


def trigflow_output(denoiser: Denoiser, x_s: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """TrigFlow's F at (x_s, s) of a consistency model: F = (cos s x_s - f) / (sd sin s), with f the wrapper's
    x0 estimate at x_t = x_s / sqrt(cos^2 s + sd^2 sin^2 s) and the real timestep of sigma = sd tan s (which
    the ``trigflow`` wrapper turns back into s for its network). Differentiable in x_s and s, forward and
    backward."""
    sd = denoiser.sigma_data
    t = denoiser.diffusion.sigma_to_t(sd * torch.tan(s))
    cos, sin = column(s.cos(), x_s), column(s.sin(), x_s)
    x_t = x_s * (cos * cos + sd * sd * sin * sin).rsqrt()
    f = denoiser(x_t, t)[0]
    return (cos * x_s - f) / (sd * sin)


def scaled_derivative(
    denoiser: Denoiser, x0: torch.Tensor, z: torch.Tensor, s: torch.Tensor, method: str
) -> torch.Tensor:
    """cos s sin s dF/ds along the path: by ``torch.func.jvp`` in the direction (cos s sin s dx/ds, cos s sin
    s), the paper's scaling, or by the central difference (F(x_{s+h}, s + h) - F(x_{s-h}, s - h)) / 2h times
    cos s sin s, both points on the path of the same (x0, z)."""
    sd = denoiser.sigma_data
    x_s, velocity = trig_path(x0, z, s, sd)
    scale = s.cos() * s.sin()
    if method == "jvp":
        function = partial(trigflow_output, denoiser)
        return jvp(function, (x_s, s), (column(scale, x_s) * velocity, scale))
    if method == "finite-difference":
        h = torch.clamp(s / 2, max=DIFFERENCE_STEP)
        ahead = trigflow_output(denoiser, trig_path(x0, z, s + h, sd)[0], s + h)
        behind = trigflow_output(denoiser, trig_path(x0, z, s - h, sd)[0], s - h)
        return (ahead - behind) * column(scale / (2 * h), ahead)
    raise ValueError(f"derivative must be jvp or finite-difference, got {method!r}")


def tangent(
    F: torch.Tensor,
    scaled_dF: torch.Tensor,
    x_s: torch.Tensor,
    velocity: torch.Tensor,
    s: torch.Tensor,
    sigma_data: float,
    warmup: float,
) -> torch.Tensor:
    """sCT's g = -cos^2 s (sd F - dx/ds) - w (cos s sin s x_s + sd cos s sin s dF/ds), w the warm-up."""
    cos, sin = column(s.cos(), F), column(s.sin(), F)
    return -cos * cos * (sigma_data * F - velocity) - warmup * (cos * sin * x_s + sigma_data * scaled_dF)


def normalised(g: torch.Tensor, c: float) -> torch.Tensor:
    """The paper's tangent normalisation g / (||g|| + c), the norm over each example's pixels."""
    return g / (g.flatten(1).norm(dim=1).reshape(-1, *[1] * (g.ndim - 1)) + c)


def warmup_weight(step: int, warmup_steps: int) -> float:
    """w at training step ``step``: rising linearly from 0 to 1 over ``warmup_steps`` (1 from the start for
    0)."""
    return 1.0 if warmup_steps == 0 else min(1.0, step / warmup_steps)


class ContinuousConsistency(BareModelObjective):
    """sCT's loss for one step: ||F - F^- - g / (||g|| + c)||^2 per pixel, weighted by 1 / sigma."""

    def __init__(self, config: ConsistencyConfig, diffusion: Diffusion, derivative: str) -> None:
        self.config = config
        self.derivative = derivative
        self.sigma_min, self.sigma_max = Grid("karras").sigma_range(diffusion)

    def loss(self, student: Denoiser, batch: Batch, step: int, generator: torch.Generator) -> torch.Tensor:
        x0, sd = batch.x0, student.sigma_data
        noise = torch.randn(x0.shape[0], generator=generator, device=x0.device, dtype=torch.float64)
        lowest, highest = math.log(self.sigma_min), math.log(self.sigma_max)
        sigma = (SCT_P_MEAN + SCT_P_STD * noise).clamp(lowest, highest).exp()
        s = torch.atan(sigma / sd)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_s, velocity = trig_path(x0, z, s, sd)
        bare = self.bare(student)
        with torch.no_grad(), differentiable_forward(bare.net):
            scaled_dF = scaled_derivative(bare, x0.float(), z.float(), s, self.derivative)
        F = trigflow_output(student, x_s, s).float()
        F_target = F.detach()
        warmup = warmup_weight(step, self.config.tangent_warmup)
        g = tangent(F_target, scaled_dF.float(), x_s.float(), velocity.float(), s, sd, warmup)
        g = normalised(g, self.config.tangent_c)
        error = (F - F_target - g).pow(2).flatten(1).mean(1)
        return error / sigma.to(error.device, error.dtype)


def sct_probe(model: nn.Module, z: torch.Tensor) -> tuple[object, object]:
    """sCT's network forward and its JVP in (x_s / sd, s) at s = pi / 4 (:data:`forward_mode.Probe`), the
    network called as the ``trigflow`` wrapper calls it; the wrapper's arithmetic around it is elementwise,
    none of the FLOPs the counter counts."""
    s = torch.full((z.shape[0],), math.pi / 4, device=z.device)

    def network(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return model(x, TRIG_TIME_SCALE * s)

    return partial(network, z, s), partial(jvp, network, (z, s), (z, torch.ones_like(s)))


def measured_sct_cost(config: RunConfig, model: nn.Module, image_shape: tuple[int, ...]) -> StepCost:
    """The derivative's forwards on every example, the JVP's counted on the run's own network."""
    return measured_derivative_cost(config, model, image_shape, sct_probe)


@OBJECTIVES.register(
    "continuous-consistency",
    declares=Declaration(
        predictions=(TRIGFLOW,),
        jvp=True,
        own_noise=True,
        cost=derivative_cost,
        measured_cost=measured_sct_cost,
        settings=("consistency.tangent_warmup", "consistency.tangent_c", "flow_map.derivative"),
    ),
)
def continuous_consistency(context: ObjectiveContext) -> ContinuousConsistency:
    """Continuous-time consistency training (sCT, Lu & Song 2024): TrigFlow's tangent by a JVP, no teacher."""
    derivative = context.config.flow_map.derivative
    if derivative == "jvp":
        check_jvp(context.model, context.image_shape, sct_probe, "sCT")
    return ContinuousConsistency(context.config.consistency, context.diffusion, derivative)
