"""Flow maps against the closed form of Gaussian data on the rectified-flow path.

For x0 ~ N(m, s^2) (each pixel) the path z_t = (1 - t) x0 + t eps has the marginal N((1 - t) m, sig_t^2) with
sig_t^2 = (1 - t)^2 s^2 + t^2, and the probability-flow ODE moves each point at its standardised place:
z_r = (1 - r) m + sig_r / sig_t (z_t - (1 - t) m). The average velocity over [r, t] is then affine in z_t,

    u(z, r, t) = (z - z_r) / (t - r)
               = -m + (z - (1 - t) m) ((t + r) - s^2 (2 - t - r)) / (sig_t (sig_t + sig_r)),

written without the division by t - r (sig_t^2 - sig_r^2 = (t - r)((t + r) - s^2 (2 - t - r))), so it is
smooth at r = t, where it is the velocity. :class:`GaussianFlowMap` is this u with m and s as parameters:
with the data's it is the exact flow map, from (0, 1) it is a student affine in z_t for each (r, t) that the
library's MeanFlow objective trains.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import schedules
from bench.config import FlowMapConfig
from bench.process.denoiser import FLOW_MAP, FLOW_TIME_SCALE, Denoiser
from bench.process.diffusion import Diffusion
from bench.process.sampling import network_calls, sample
from bench.training.objectives import Batch
from bench.training.objectives import flow_map as objectives

M, S = 0.3, 0.5
"""The data: each pixel N(M, S^2)."""


class GaussianFlowMap(nn.Module):
    """u(z, r, t) of N(m, s^2) data, called as a flow-map network: net(z, scale t, gap=scale (t - r))."""

    second_time = True

    def __init__(self, m: float = M, s: float = S) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.tensor(float(m), dtype=torch.float64))  # cast to z's dtype at use
        self.log_s = nn.Parameter(torch.tensor(math.log(s), dtype=torch.float64))

    def forward(self, z: torch.Tensor, t_net: torch.Tensor, gap: torch.Tensor | None = None) -> torch.Tensor:
        t = (t_net / FLOW_TIME_SCALE).reshape(-1, *[1] * (z.ndim - 1)).to(z.dtype)
        gap = torch.zeros_like(t_net) if gap is None else gap
        r = t - (gap / FLOW_TIME_SCALE).reshape(t.shape).to(z.dtype)
        s2 = torch.exp(2 * self.log_s).to(z.dtype)
        m = self.m.to(z.dtype)

        def sig(a: torch.Tensor) -> torch.Tensor:
            return ((1 - a) ** 2 * s2 + a**2).sqrt()

        return -m + (z - (1 - t) * m) * ((t + r) - s2 * (2 - t - r)) / (sig(t) * (sig(t) + sig(r)))


def flow_map_of(net: nn.Module, schedule: str = "rectified-flow") -> Denoiser:
    return Denoiser(net, Diffusion(schedules.make(schedule, 1000)), FLOW_MAP)


def exact_z_r(z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Where the ODE takes z from t to r, written from the standardised place (not from u)."""

    def sig(a: torch.Tensor) -> torch.Tensor:
        return ((1 - a) ** 2 * S**2 + a**2).sqrt()

    t, r = t.reshape(-1, 1, 1, 1), r.reshape(-1, 1, 1, 1)
    return (1 - r) * M + sig(r) / sig(t) * (z - (1 - t) * M)


def times(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    r = t * torch.rand(n, generator=g, dtype=torch.float64)
    return t, r


def test_the_oracle_is_the_flow_map_it_claims():
    """z - (t - r) u(z, r, t) is where the ODE goes, and at r = t u is d z_t / dt along the trajectory."""
    oracle = flow_map_of(GaussianFlowMap())
    t, r = times()
    z = torch.randn(64, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(oracle.flow_map(z, t, r), exact_z_r(z, t, r), rtol=0, atol=1e-12)
    h = 1e-6
    velocity = oracle.average_velocity(z, t, t)
    slope = (exact_z_r(z, t, t + h) - exact_z_r(z, t, t - h)) / (-2 * h)  # d z_r / dr at r = t, reversed
    torch.testing.assert_close(velocity, -slope, rtol=0, atol=1e-8)


@pytest.mark.parametrize(("method", "tolerance"), [("jvp", 1e-12), ("finite-difference", 1e-5)])
def test_the_closed_form_satisfies_the_meanflow_identity(method, tolerance):
    """u = v - (t - r) du/dt, with v the velocity at (z, t) and du/dt the library's total derivative along
    (v, 0, 1); with the sign of (t - r) flipped the identity fails by far more than the tolerance."""
    oracle = flow_map_of(GaussianFlowMap())
    t, r = times()
    z = torch.randn(64, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        v = oracle.average_velocity(z, t, t)
        dudt = objectives.total_derivative(oracle.average_velocity, z, t, r, v, method)
        u = oracle.average_velocity(z, t, r)
    torch.testing.assert_close(objectives.meanflow_target(v, dudt, t, r), u, rtol=0, atol=tolerance)
    flipped = v + objectives.column(t - r, v) * dudt
    assert (flipped - u).abs().max() > 1e3 * tolerance + 1e-3


def train_meanflow(*, derivative: str = "jvp", steps: int = 250, batch: int = 2048) -> tuple[float, float]:
    """The student GaussianFlowMap(0, 1), trained by the library's MeanFlow objective on single-sample
    conditional velocities of N(M, S^2) data (2x2 images); its (m, s) at the end."""
    torch.manual_seed(0)
    student = GaussianFlowMap(0.0, 1.0)
    denoiser = flow_map_of(student)
    loss_fn = objectives.MeanFlow(FlowMapConfig(derivative=derivative))
    loss_fn.bind(student)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        x0 = M + S * torch.randn(batch, 1, 2, 2, generator=g)
        loss = loss_fn.loss(denoiser, Batch(x0), step, g).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = 0.02 * (1 - step / steps)
    return student.m.item(), math.exp(student.log_s.item())


CONVERGED = 0.01
"""How close the trained (m, s) come to the data's: seen 0.0003 and 0.001 with 250 steps of 2,048 images."""


@pytest.mark.parametrize("derivative", ["jvp", "finite-difference"])
def test_meanflow_trains_an_affine_student_to_the_closed_form(derivative):
    m, s = train_meanflow(derivative=derivative)
    assert abs(m - M) < CONVERGED and abs(s - S) < CONVERGED, (m, s)


def test_meanflow_without_its_stop_gradient_or_with_the_sign_flipped_does_not_converge(monkeypatch):
    """Each break once: the target differentiated (no stop-gradient) lands at s = 0.41, the identity with
    +(t - r) du/dt at s = 0.45 (seen), both far outside CONVERGED."""
    monkeypatch.setattr(objectives.MeanFlow, "stop_gradient", False)
    m, s = train_meanflow()
    assert abs(s - S) > 4 * CONVERGED, (m, s)
    monkeypatch.undo()
    monkeypatch.setattr(
        objectives, "meanflow_target", lambda v, dudt, t, r: v + objectives.column(t - r, v) * dudt
    )
    m, s = train_meanflow()
    assert abs(s - S) > 4 * CONVERGED, (m, s)


@pytest.mark.parametrize("steps", [8, 32, 128])
def test_the_shortcut_target_at_the_exact_flow_map_is_the_flow_map(steps):
    """The mean of two exact half steps is the exact step of twice the size, for every d the objective
    draws whose halves are steps of the grid; the smallest d's halves are velocities (two Euler steps, as the
    paper's d = 0 queries), off by O(d)."""
    oracle = flow_map_of(GaussianFlowMap())
    g = torch.Generator().manual_seed(3)
    t, d = objectives.shortcut_draws(256, steps, g, "cpu")
    t, d = t.double(), d.double()
    z = torch.randn(256, 1, 2, 2, dtype=torch.float64, generator=g)
    with torch.no_grad():
        target = objectives.shortcut_target(oracle, z, t, d, steps)
        exact = oracle.average_velocity(z, t, t - d)
    on_grid = d > 1.0 / steps
    assert on_grid.any() and (~on_grid).any()
    torch.testing.assert_close(target[on_grid], exact[on_grid], rtol=0, atol=1e-12)
    smallest = (target[~on_grid] - exact[~on_grid]).abs().max().item()
    assert smallest < 5 / steps, smallest
    assert (d <= t + 1e-12).all() and (t <= 1).all()


@pytest.mark.parametrize("calls", [1, 2, 4])
def test_the_flow_map_sampler_with_the_exact_map_reproduces_the_data(calls):
    """From pure noise (t = 1 on rectified flow), 1, 2 or 4 jumps of the exact u give N(M, S^2): mean and std
    within 5 standard errors of 20,000 samples (the map has no discretisation error)."""
    oracle = flow_map_of(GaussianFlowMap())
    n = 20_000
    x = sample(
        oracle, (n, 1, 1, 1), method="flow-map", steps=calls, generator=torch.Generator().manual_seed(4)
    )
    assert network_calls("flow-map", calls) == calls
    assert abs(x.mean().item() - M) < 5 * S / math.sqrt(n)
    assert abs(x.std().item() - S) < 5 * S / math.sqrt(2 * n)


def test_the_flow_map_sampler_jumps_exactly_where_the_ode_goes():
    """Each jump of the sampler is z - (t_k - t_{k+1}) u: with the same noise, the exact map's samples equal
    the closed-form endpoint (1 - 0) M + sig_0 / sig_1 z = M + S z to rounding, for 1 and 3 calls."""
    oracle = flow_map_of(GaussianFlowMap())
    x_T = torch.randn(64, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for calls in (1, 3):
        x = sample(oracle, tuple(x_T.shape), method="flow-map", steps=calls, x_T=x_T.float())
        torch.testing.assert_close(x.double(), M + S * x_T.float().double(), rtol=0, atol=1e-5)


def test_a_flow_map_refuses_times_out_of_order():
    oracle = flow_map_of(GaussianFlowMap())
    z = torch.zeros(2, 1, 2, 2)
    for t, r in (([0.5, 0.5], [0.6, 0.1]), ([0.5, 1.2], [0.1, 0.1]), ([0.5, 0.5], [-0.1, 0.1])):
        with pytest.raises(ValueError, match="0 <= r <= t <= 1"):
            oracle.flow_map(z, torch.tensor(t), torch.tensor(r))
