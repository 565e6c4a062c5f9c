"""Analytic oracles for the one-step designs: consistency distillation (CD), consistency training (iCT) and
reflow, on Gaussian data x0 ~ N(M, S^2) per dimension, whose exact answers are closed forms written here,
not taken from the code under test.

Consistency. In EDM's y = x_t / sqrt(alpha_bar), the exact denoiser is D(y; sigma) = M + S^2 / (S^2 +
sigma^2) (y - M), so the probability-flow ODE dy/dsigma = (y - D) / sigma = (y - M) sigma / (S^2 + sigma^2)
is linear in y - M, and the exact consistency function (the ODE's map from sigma down to sigma_min) is

    f*(y, sigma) = M + (y - M) sqrt(S^2 + sigma_min^2) / sqrt(S^2 + sigma^2).

On a grid of N levels the objectives' fixed points are not f* but the composition of the grid's steps: one
Euler step from sigma_a to sigma_b multiplies y - M by e = 1 + h g(sigma_a), with h = sigma_b - sigma_a and
g(sigma) = sigma / (S^2 + sigma^2), and one Heun step by 1 + h (g(sigma_a) + g(sigma_b) e) / 2. So level k's
fixed point is affine, M + (y - M) prod_{j <= k} factor_j, and so is f*: a student affine in y at each level
(:class:`PerLevelAffine`) represents both exactly, and training is judged by the slope and intercept of its
f at each level, which makes the check sharp (no sampling noise in the comparison).

- CD, exact teacher, l2: the target at level n is deterministic given y_{n+1}, so the fixed point f_{n+1} =
  f_n o (teacher step) has zero loss on every example; CD converges to the composed teacher steps (Heun's or
  Euler's) to optimiser precision.
- CT, l2: the target f_n(x0 + sigma_n z) is random given y_{n+1} = x0 + sigma_{n+1} z, and for an affine f_n
  the l2 minimiser is f_n(E[x0 + sigma_n z | y_{n+1}]) = f_n(one Euler step with the exact denoiser): CT
  converges to the composed Euler steps, up to the sampling noise of its targets.

Reflow (rectified-flow schedule). The 1-rectified flow is the exact velocity E[eps - x0 | x_t]; its
deterministic map x_T -> x0 is affine (every DDIM step with the Gaussian oracle is), x0 = c + k x_T with k ~
S. On such pairs the velocity of the straight line, x_T - x0 = (1 - k) x_T - c, is an affine function of the
point on the line at every t, so the 2-rectified flow is straight: one Euler call lands on its own ODE
endpoint. The 1-rectified flow's one call from pure noise returns E[x0] = M, k |x_T| from its endpoint.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bench.training.objectives.consistency as consistency
import schedules
from bench.config import ConsistencyConfig
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.sampling import sample
from bench.training.objectives import Batch
from bench.training.objectives.consistency import ConsistencyObjective, at_level, consistency_levels
from bench.training.objectives.regression import training_loss
from tests.oracles import GAUSSIAN, M, S, ddim_moments_exact, gaussian_oracle

CD_LEVELS = 18
"""Song et al.'s N on CIFAR-10; on the linear schedule (sigma 0.01 .. 157) the composed Heun map is 0.020
from f* (largest slope gap over levels) and the composed Euler map 0.073."""
CT_LEVELS = 10
"""iCT's N = s0 + 1, fixed (s0 = s1 = 9: levels_start = levels_end): its least likely interval still gets
0.18% of the log-normal draws, about 7 examples per batch of 4,096, so every level is trained. Composed Euler
is 0.13 from f*, composed Heun 0.06."""
CD_TOL = 1e-6
"""CD's fixed point has zero loss on every example, so Adam drives the coefficients to it to ~1e-8 within
600 steps (2.4e-8 at worst over seeds 0-3; float64 network, and the distance is taken in float32 but on the
float64 difference, so it has no floor). 1e-6 is 4 orders of magnitude below the gap between the Heun and
the Euler composition."""
CT_TOL = 5e-3
"""CT's targets are noisy (one-sample estimates of the ODE step), so the coefficients scatter around the
fixed point: the largest error (slope or intercept, over levels) was 1.1e-3 to 1.8e-3 for seeds 0-3 after
2,000 steps of 4,096 examples with a decaying learning rate. 5e-3 leaves a 2.8x margin and is still 35x
below the gap to the Heun composition (0.175) and 25x below the gap to f* (0.13)."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny tensors run orders of magnitude slower on two threads of a shared CPU than on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def linear() -> Diffusion:
    return Diffusion(schedules.make("linear", 1000))


# ----------------------------------------------------------------------------------- closed forms
def step_factor(sigma_from: float, sigma_to: float, solver: str) -> float:
    """The factor one step of the exact ODE multiplies y - M by: Euler's (= DDIM's) or Heun's."""

    def g(sigma: float) -> float:
        return sigma / (S**2 + sigma**2)

    h = sigma_to - sigma_from
    euler = 1.0 + h * g(sigma_from)
    return euler if solver == "ddim" else 1.0 + h * (g(sigma_from) + g(sigma_to) * euler) / 2


def composed_slopes(sigmas: torch.Tensor, solver: str) -> torch.Tensor:
    """The slope in y of the grid's steps composed from each level down to sigma_0 (1 at level 0)."""
    s = sigmas.tolist()
    slopes = [1.0]
    for k in range(1, len(s)):
        slopes.append(slopes[-1] * step_factor(s[k], s[k - 1], solver))
    return torch.tensor(slopes, dtype=torch.float64)


def exact_slopes(sigmas: torch.Tensor) -> torch.Tensor:
    """The slope of f*(., sigma_k) at each level: sqrt(S^2 + sigma_min^2) / sqrt(S^2 + sigma_k^2)."""
    return ((S**2 + sigmas[0] ** 2) / (S**2 + sigmas**2)).sqrt()


def intercepts(slopes: torch.Tensor) -> torch.Tensor:
    """Every map here is M + slope (y - M): its intercept is M (1 - slope)."""
    return M * (1.0 - slopes)


# ------------------------------------------------------------------------------------- the student
class PerLevelAffine(nn.Module):
    """F = A[k] input + B[k], k the level of the grid nearest to the (real-valued) timestep: with the
    consistency wrapper f = c_skip y + c_out F is affine in y at each level, and any affine map with f(y,
    sigma_min) = y is reachable."""

    def __init__(self, timesteps: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("timesteps", timesteps.double().clone())
        self.A = nn.Parameter(torch.zeros(timesteps.numel(), dtype=torch.float64))
        self.B = nn.Parameter(torch.zeros(timesteps.numel(), dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = (t.double().view(-1, 1) - self.timesteps.view(1, -1)).abs().argmin(1)
        shape = (-1, *[1] * (x.ndim - 1))
        return self.A[k].view(shape) * x + self.B[k].view(shape)


def grid(diffusion: Diffusion, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    sigmas = consistency_levels(diffusion, n)
    return sigmas, diffusion.sigma_to_t(sigmas)


def affine_coefficients(
    student: Denoiser, sigmas: torch.Tensor, timesteps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(slope, intercept) of the student's f(., sigma_k) at each level, from f at y = 0 and y = 1 (called on
    x_t = y / sqrt(1 + sigma^2), as the objectives and the samplers call it)."""
    y = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    slopes, icpts = [], []
    with torch.no_grad():
        for sigma, t in zip(sigmas.tolist(), timesteps.tolist(), strict=True):
            f, _ = student(y / math.sqrt(1.0 + sigma**2), torch.full((2,), t, dtype=torch.float64))
            icpts.append(f[0, 0].item())
            slopes.append((f[1, 0] - f[0, 0]).item())
    return torch.tensor(slopes, dtype=torch.float64), torch.tensor(icpts, dtype=torch.float64)


def train_consistency(
    diffusion: Diffusion,
    kind: str,
    levels: int,
    *,
    steps: int,
    batch: int,
    lr: float = 0.05,
    solver: str = "heun",
    teacher_prediction: str = "eps",
    target_ema: float = 0.9,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train a :class:`PerLevelAffine` student with the library's objective (l2 distance; CD with the exact
    denoiser as teacher, iCT with N fixed), Adam with a learning rate decaying linearly to 0; returns the grid
    and the student's (slope, intercept) per level."""
    sigmas, timesteps = grid(diffusion, levels)
    net = PerLevelAffine(timesteps)
    student = Denoiser(net, diffusion, "consistency")
    distilled = kind == "consistency-distillation"
    teacher = Denoiser(gaussian_oracle(diffusion, teacher_prediction), diffusion, teacher_prediction)
    config = ConsistencyConfig(
        levels=levels,
        levels_start=levels - 1,
        levels_end=levels - 1,
        teacher_solver=solver,
        target_ema=target_ema,
        distance="l2",
    )
    objective = ConsistencyObjective(
        kind, config, diffusion, total_steps=steps, image_shape=(1,), teacher=teacher if distilled else None
    )
    objective.bind(net)
    assert objective.levels_at(0) == objective.levels_at(steps - 1) == levels
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - i / steps)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x0 = M + S * torch.randn(batch, 1, generator=generator, dtype=torch.float64)
        loss = objective.loss(student, Batch(x0), step, generator).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        objective.after_step()
    slope, icpt = affine_coefficients(student, sigmas, timesteps)
    return sigmas, slope, icpt


def train_cd(diffusion: Diffusion, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return train_consistency(
        diffusion, "consistency-distillation", CD_LEVELS, steps=600, batch=256, **options
    )


def train_ct(diffusion: Diffusion, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    options = {"steps": 2000, "batch": 4096, "lr": 0.02, **options}
    return train_consistency(diffusion, "consistency-training", CT_LEVELS, **options)


def largest_gap(slope: torch.Tensor, icpt: torch.Tensor, expected_slopes: torch.Tensor) -> float:
    """The largest error over levels of the slope or the intercept against M + expected (y - M)."""
    return max(
        (slope - expected_slopes).abs().max().item(),
        (icpt - intercepts(expected_slopes)).abs().max().item(),
    )


# ----------------------------------------------------------------------------- consistency models
@pytest.mark.parametrize(("solver", "prediction"), [("heun", "eps"), ("ddim", "x0")])
def test_teacher_step_is_the_closed_form_step_of_the_exact_ode(linear, solver, prediction):
    """One ``ode_step`` of the exact denoiser from each level to the next lower one is M + factor (y - M)
    with the closed-form Euler or Heun factor (tolerance 1e-12: float64 round-off through x_t = y / sqrt(1 +
    sigma^2) and the log-sigma interpolation's t <-> sigma round trip)."""
    sigmas, ts = grid(linear, CD_LEVELS)
    teacher = Denoiser(gaussian_oracle(linear, prediction), linear, prediction)
    y = M + 3.0 * torch.randn(
        CD_LEVELS - 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    stepped = consistency.ode_step(teacher, y, sigmas[1:], ts[1:], sigmas[:-1], ts[:-1], solver)
    s = sigmas.tolist()
    factors = [step_factor(s[k + 1], s[k], solver) for k in range(CD_LEVELS - 1)]
    factors = torch.tensor(factors, dtype=torch.float64)
    torch.testing.assert_close(stepped, M + factors.view(-1, 1) * (y - M), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("solver", "prediction"), [("heun", "eps"), ("ddim", "x0")])
def test_consistency_distillation_converges_to_the_composed_teacher_steps(linear, solver, prediction):
    """CD with the exact denoiser as teacher drives the affine student to the teacher's steps composed from
    each level down to sigma_min (Heun's, or Euler's for the ddim solver), slope and intercept at every level
    within CD_TOL = 1e-6; hence to f* within the grid's own bias |composed - f*| (computed here: 0.020 for
    Heun, 0.073 for Euler at N = 18) + 1e-6. The other solver's composition is far off (> 0.04), so the
    check tells the solvers apart."""
    sigmas, slope, icpt = train_cd(linear, solver=solver, teacher_prediction=prediction)
    fixed_point = composed_slopes(sigmas, solver)
    assert largest_gap(slope, icpt, fixed_point) < CD_TOL
    bias = (fixed_point - exact_slopes(sigmas)).abs()
    assert bool(((slope - exact_slopes(sigmas)).abs() <= bias + CD_TOL).all())
    assert bool(((icpt - intercepts(exact_slopes(sigmas))).abs() <= M * bias + CD_TOL).all())
    other = composed_slopes(sigmas, "ddim" if solver == "heun" else "heun")
    assert largest_gap(slope, icpt, other) > 0.04


def test_consistency_training_converges_to_the_composed_euler_steps(linear):
    """iCT with l2 and an affine student converges to the composed Euler (DDIM) steps of the exact
    denoiser: E[f(y_n) | y_{n+1}] = f(E[y_n | y_{n+1}]) for affine f, and E[y_n | y_{n+1}] is Euler's step
    with E[x0 | y_{n+1}] = D. Tolerance CT_TOL = 5e-3 on every level's slope and intercept (the targets'
    sampling noise; see CT_TOL); hence f* within the Euler grid's bias (up to 0.13 at N = 10) + CT_TOL. The
    Heun composition, 0.17 away, is not what CT learns."""
    sigmas, slope, icpt = train_ct(linear)
    euler = composed_slopes(sigmas, "ddim")
    assert largest_gap(slope, icpt, euler) < CT_TOL
    bias = (euler - exact_slopes(sigmas)).abs()
    assert bool(((slope - exact_slopes(sigmas)).abs() <= bias + CT_TOL).all())
    assert largest_gap(slope, icpt, composed_slopes(sigmas, "heun")) > 10 * CT_TOL


# ------------------------------------------------------------------------ broken objectives must fail
def target_without_stop_gradient(target: Denoiser, y: torch.Tensor, sigma, t) -> torch.Tensor:
    """``target_output`` with the gradient let through the target's call."""
    return target(at_level(y, sigma), t)[0]


def test_consistency_training_without_stop_gradient_misses_the_fixed_point(linear, monkeypatch):
    """iCT's target is the student itself; without stop-gradient the loss also pulls each level towards the
    level above it (a regression of f_n(y_n) on the noisier y_{n+1}), so training settles elsewhere: the
    error stays above 4 CT_TOL = 0.02 (it is 0.11 for seeds 0-3, where the correct run is within 1.8e-3)."""
    monkeypatch.setattr(consistency, "target_output", target_without_stop_gradient)
    sigmas, slope, icpt = train_ct(linear, steps=1000, lr=0.05)
    assert largest_gap(slope, icpt, composed_slopes(sigmas, "ddim")) > 4 * CT_TOL


def test_consistency_distillation_with_the_teacher_step_reversed_misses_the_fixed_point(linear, monkeypatch):
    """The teacher stepping from sigma_{n+1} up by sigma_{n+1} - sigma_n instead of down to sigma_n (the
    original step's increment negated): the student converges to a different composition, off by > 0.05 in
    slope or intercept (it is about 3; the correct run is within CD_TOL = 1e-6)."""
    original = consistency.ode_step

    def reversed_step(teacher, y, sigma, t, sigma_next, t_next, solver):
        return 2 * y - original(teacher, y, sigma, t, sigma_next, t_next, solver)

    monkeypatch.setattr(consistency, "ode_step", reversed_step)
    sigmas, slope, icpt = train_cd(linear)
    assert largest_gap(slope, icpt, composed_slopes(sigmas, "heun")) > 0.05


def test_consistency_distillation_without_stop_gradient_still_has_the_same_fixed_point(linear, monkeypatch):
    """What this oracle cannot see: CD's target made the online student, without stop-gradient. With an
    exact (deterministic) teacher and l2, the loss sum_n E (f_{n+1}(y_{n+1}) - f_n(step(y_{n+1})))^2 is a
    convex quadratic in the affine student's coefficients whose only zero is the composed teacher map (f_0
    is the identity, so each level is pinned by the one below), so gradient descent reaches it with or
    without stop-gradient. A missing stop-gradient is caught by the CT test above, whose target is random
    given y_{n+1}. Without stop-gradient the run converges more slowly (the levels pull on each other), so it
    gets 2,000 steps at twice the learning rate, and then reaches the fixed point within CD_TOL (2e-11)."""
    monkeypatch.setattr(consistency, "target_output", target_without_stop_gradient)
    monkeypatch.setattr(ConsistencyObjective, "student_like", staticmethod(lambda student, net: student))
    sigmas, slope, icpt = train_consistency(
        linear, "consistency-distillation", CD_LEVELS, steps=2000, batch=256, lr=0.1
    )
    assert largest_gap(slope, icpt, composed_slopes(sigmas, "heun")) < CD_TOL


# ------------------------------------------------------------------------------------------- reflow
RF_T = 50
"""Rectified-flow timesteps: DDIM with all 50 steps is within 4% (in slope) of the exact ODE map."""
PAIRS = 4096
SAMPLE_TOL = 1e-5
"""``sample`` runs in float32 (it casts x_T), so maps through it hold to float32 round-off, ~1e-7 here."""


@pytest.fixture(scope="module")
def flow() -> Diffusion:
    return Diffusion(schedules.make("rectified-flow", RF_T))


@pytest.fixture(scope="module")
def one_rectified(flow) -> Denoiser:
    """The 1-rectified flow: the exact velocity E[eps - x0 | x_t] of N(M, S^2) data."""
    return Denoiser(GAUSSIAN.network(flow, "flow"), flow, "flow")


@pytest.fixture(scope="module")
def pairs(flow, one_rectified) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_T, x0): noise and the 1-rectified flow's deterministic endpoint from it (DDIM, all T steps)."""
    x_T = torch.randn(PAIRS, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = sample(one_rectified, (PAIRS, 1), method="ddim", steps=RF_T, eta=0.0, x_T=x_T).double()
    return x_T, x0


def ddim_map(flow: Diffusion) -> tuple[float, float]:
    """(slope, intercept) of the 1-rectified flow's all-T-step DDIM map, propagated step by step from the
    closed-form oracle (tests.oracles.ddim_moments_exact: the discretisation, not the ODE)."""
    intercept, slope = ddim_moments_exact(flow, RF_T)
    return slope, intercept


class PerTimestepAffine(nn.Module):
    """u = A[t] input + B[t] over the T integer timesteps."""

    def __init__(self, T: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.zeros(T, dtype=torch.float64))
        self.B = nn.Parameter(torch.zeros(T, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shape = (-1, *[1] * (x.ndim - 1))
        return self.A[t].view(shape) * x + self.B[t].view(shape)


def train_reflow(flow: Diffusion, x_T: torch.Tensor, x0: torch.Tensor, *, steps: int = 1000) -> Denoiser:
    """The 2-rectified flow: regression of the velocity on (x_T, x0) pairs at uniform integer t, the loss the
    trainer uses for the reflow design (x_t built from x0 and eps = x_T)."""
    net = PerTimestepAffine(RF_T)
    student = Denoiser(net, flow, "flow")
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - i / steps)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        index = torch.randint(0, x_T.shape[0], (512,), generator=generator)
        t = torch.randint(0, RF_T, (512,), generator=generator)
        loss = training_loss(student, x0[index], t, eps=x_T[index]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return student


def one_and_many(denoiser: Denoiser, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler (DDIM) call from pure noise, and the all-T-step ODE endpoint."""
    one = sample(denoiser, tuple(z.shape), method="ddim", steps=1, eta=0.0, x_T=z).double()
    many = sample(denoiser, tuple(z.shape), method="ddim", steps=RF_T, eta=0.0, x_T=z).double()
    return one, many


def straightness(student: Denoiser, z: torch.Tensor, x0: torch.Tensor) -> float:
    """Liu et al.'s E_t E||(x_T - x0) - u(x_t, t)||^2 on the line x_t = (1 - t) x0 + t x_T between the noise
    and the flow's own endpoint, over all T timesteps (t_flow = (i + 1) / T): 0 exactly when the flow's
    trajectories are these lines. The line and the velocity are written here, calling the network itself."""
    t_flow = torch.arange(1, RF_T + 1, dtype=torch.float64) / RF_T
    points = (1 - t_flow) * x0 + t_flow * z  # (n, T)
    t = torch.arange(RF_T).repeat(z.shape[0])
    with torch.no_grad():
        u = student.net(points.reshape(-1, 1), t).reshape(points.shape)
    return ((z - x0) - u).pow(2).mean().item()


def test_one_rectified_flow_pairs_follow_the_closed_form_ddim_map(flow, pairs):
    """The pairs' x0 is the all-T-step DDIM map of the exact flow, c + k x_T, computed step by step here
    (SAMPLE_TOL 1e-5), and that map is within the first-order discretisation bias of the exact ODE's
    M + S^2 / sqrt(S^2 + sigma_0^2) x_T: 5% in slope, 0.01 in intercept."""
    x_T, x0 = pairs
    k, c = ddim_map(flow)
    torch.testing.assert_close(x0, c + k * x_T, rtol=0, atol=SAMPLE_TOL)
    ode_slope = S**2 / math.sqrt(S**2 + flow.sigmas[0].item() ** 2)
    assert abs(k / ode_slope - 1) < 0.05 and abs(c - M) < 0.01


def test_one_rectified_flow_one_call_lands_at_the_mean(flow, one_rectified):
    """From pure noise the exact velocity is x_T - M, so one Euler call returns E[x0] = M (to 1e-6, float32
    round-off), k |x_T| from the flow's own endpoint, with k the DDIM map's slope (~ S: see above); and it is
    not straight: its straightness on the line to its own endpoint is above 0.05 (about 0.12)."""
    z = torch.randn(256, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    one, many = one_and_many(one_rectified, z)
    torch.testing.assert_close(one, torch.full_like(one, M), rtol=0, atol=1e-6)
    k, _ = ddim_map(flow)
    torch.testing.assert_close((one - many).abs(), k * z.abs(), rtol=0, atol=SAMPLE_TOL)
    assert straightness(one_rectified, z, many) > 0.05


def test_reflow_makes_one_euler_call_land_on_the_flows_own_endpoint(flow, pairs):
    """The 2-rectified flow trained on the 1-rectified flow's pairs: its one Euler call lands on its own
    all-T-step endpoint (SAMPLE_TOL 1e-5, against k |z| ~ 0.3 |z| for the 1-rectified flow), that endpoint is
    the 1-rectified flow's (reflow keeps the coupling: SAMPLE_TOL), and its straightness is ~0 (< 1e-10: the
    pairs carry float32 round-off, ~1e-7, whose square is the floor)."""
    x_T, x0 = pairs
    student = train_reflow(flow, x_T, x0)
    z = torch.randn(256, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    one, many = one_and_many(student, z)
    torch.testing.assert_close(one, many, rtol=0, atol=SAMPLE_TOL)
    k, c = ddim_map(flow)
    torch.testing.assert_close(many, c + k * z, rtol=0, atol=SAMPLE_TOL)
    assert straightness(student, z, many) < 1e-10


def test_reflow_on_independent_pairs_stays_curved(flow, pairs):
    """Break: the 2-rectified flow trained on independent pairs (x0 shuffled against x_T) learns the
    1-rectified flow again (the regression's minimiser on an independent coupling), whose one call lands
    near M: on average more than 0.5 S E|z| from its own endpoint (about 0.93 S E|z|), and its straightness
    stays above 0.05 (about 0.11)."""
    x_T, x0 = pairs
    shuffled = x0[torch.randperm(PAIRS, generator=torch.Generator().manual_seed(5))]
    student = train_reflow(flow, x_T, shuffled)
    z = torch.randn(256, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    one, many = one_and_many(student, z)
    assert (one - many).abs().mean().item() > 0.5 * S * z.abs().mean().item()
    assert straightness(student, z, many) > 0.05
