"""Samplers for any :class:`bench.process.denoiser.Denoiser`, in k-diffusion's shape.

Every sampler is a plain function registered by name, with one signature:

    sampler(denoiser, x_T, timesteps, *, generator, progress, **its_own_settings) -> x_0

``timesteps`` is the descending grid of timesteps to visit, computed once by :func:`sample` from ``steps``
and a :class:`bench.process.grids.Grid` (DDIM's evenly spaced integers by default; real-valued timesteps for
EDM's ``karras`` and the ``log-snr`` grid). A sampler that can walk any grid says so at registration
(``grid=True``), and then takes the grid's settings (``grid``, ``rho``, ``sigma_max``, ``sigma_min``) beside
its own. Each sampler declares only the settings it uses (``eta`` for DDIM, ``variance`` for ancestral, EDM's
churn for Euler and Heun) as keyword arguments with defaults, and names them at registration
(``settings=(...)``), so callers know what to pass. It also declares its cost: ``nfe``, the network calls per
image for a number of steps (one per step unless it says otherwise), ``calls``, the timesteps of the grid it
calls the network at (each once unless it says otherwise; what classifier-free guidance with an interval needs
to count its calls), and ``min_steps``. ``denoiser(x_t, t)`` returns (x0_hat, eps_hat) whatever the network
predicts (guided or not), so a sampler is only its update rule. :func:`sample` checks the options, draws x_T
and runs a sampler under ``torch.inference_mode()``.

The ODE solvers (``euler``, ``heun``, ``dpmpp-2m``) integrate the probability-flow ODE on the sigma grid of
the timesteps, sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), followed by sigma = 0; each is written in
the variables of its paper, and all three end, as DDIM does, with the x0 estimate at the last timestep.
Euler and Heun also take EDM's stochastic churn (Algorithm 2: ``s_churn``, ``s_tmin``, ``s_tmax``,
``s_noise``), whose fresh noise comes from the sampler's generator; churn 0 is the ODE sampler, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm

from .denoiser import Denoiser, ImpossibleDesign
from .diffusion import Diffusion
from .flow_map import check_flow_map  # importing it registers the flow-map sampler
from .grids import (
    CHURN_SETTINGS,
    Grid,
    alpha_bar_of,
    check_churn,
    gammas,
    pop_grid,
    sigma_of,
    vp_coefficients,
)
from .sampler_registry import (  # noqa: F401  (the registry's helpers are part of this module's API)
    SAMPLERS,
    TO_THE_DATA,
    Sampler,
    called_timesteps,
    check_steps,
    follows_the_ode,
    grid_points,
    guided_network_calls,
    network_calls,
    sampler_settings,
    takes_grid,
)


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device and moved to ``x``'s, so a
    CPU generator gives the same samples on any device."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


@SAMPLERS.register("ancestral", settings=("variance",))
def ancestral(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: list[int],
    *,
    variance: str = "beta",
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDPM Algorithm 2 over all T steps: x_{t-1} = posterior mean at x0_hat + sigma_t z."""
    diffusion = denoiser.diffusion
    T = diffusion.num_timesteps
    if timesteps != list(range(T - 1, -1, -1)):
        raise ValueError(
            f"the ancestral sampler runs all T={T} steps, got steps={len(timesteps)}; "
            "use method='ddim' (eta=1 for a stochastic sampler) for fewer steps"
        )
    sigmas = (0.5 * diffusion.reverse_log_variance(variance)).exp().tolist()
    coef_x0 = diffusion.posterior_mean_coef_x0.tolist()
    coef_xt = diffusion.posterior_mean_coef_xt.tolist()
    for t in tqdm(timesteps, desc="ancestral", disable=not progress, leave=False):
        x0_hat, _ = denoiser(x, t)
        x = coef_x0[t] * x0_hat + coef_xt[t] * x
        if t > 0:  # no noise at the last step (Algorithm 2, line 3)
            x = x + sigmas[t] * randn_like(x, generator)
    return x


@SAMPLERS.register("ddim", settings=("eta",), grid=True)
def ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: list[int] | list[float],
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) on the given timesteps; eta=0 deterministic, eta=1 DDPM-like."""
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    alpha_bar = [alpha_bar_of(denoiser.diffusion, t) for t in timesteps] + [1.0]
    for i, t in enumerate(tqdm(timesteps, desc="ddim", disable=not progress, leave=False)):
        x0_hat, eps_hat = denoiser(x, t)
        ab_t, ab_s = alpha_bar[i], alpha_bar[i + 1]
        sigma = eta * ((1 - ab_s) / (1 - ab_t)) ** 0.5 * (1 - ab_t / ab_s) ** 0.5
        x = ab_s**0.5 * x0_hat + max(1 - ab_s - sigma**2, 0.0) ** 0.5 * eps_hat
        if sigma > 0:
            x = x + sigma * randn_like(x, generator)
    return x


@SAMPLERS.register("one_shot", default_steps=1)
def one_shot(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: list[int],
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """One network call: x_T straight to x0_hat (the direct "predict the image from pure noise" design)."""
    if len(timesteps) != 1:
        raise ValueError(f"the one_shot sampler makes exactly one step, got steps={len(timesteps)}")
    x0_hat, _ = denoiser(x, timesteps[0])
    return x0_hat


@SAMPLERS.register(
    "consistency",
    finite_start=True,
    **TO_THE_DATA,
)
def consistency(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: list[int] | list[float],
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): one call per step, re-noising between.

    x0 = f(x_T, T), then at each next level tau of the grid, noise x0 back to tau, y = x0 + sqrt(tau^2 -
    sigma_min^2) z, and map it to the data again, x0 = f(y, tau). For N steps the grid has N + 1 points and
    its last, t = 0 (sigma_min, where f is the identity), is not called: N network calls, and with one step
    exactly the ``one_shot`` call."""
    diffusion = denoiser.diffusion
    check_finite_start("consistency", sigma_of(diffusion, timesteps[0]))
    sigma_min = float(diffusion.sigmas[0])
    x0, _ = denoiser(x, timesteps[0])
    for t in tqdm(timesteps[1:-1], desc="consistency", disable=not progress, leave=False):
        sigma = sigma_of(diffusion, t)
        y = x0 + max(sigma**2 - sigma_min**2, 0.0) ** 0.5 * randn_like(x0, generator)
        x0, _ = denoiser(y * (1.0 + sigma**2) ** -0.5, t)
    return x0


# ----------------------------------------------------------------------- ODE solvers in EDM's sigma
def sigma_grid(denoiser: Denoiser, timesteps: list[int] | list[float]) -> list[float]:
    """sigma of each timestep of the grid, then 0 (where the ODE ends at the data)."""
    return [sigma_of(denoiser.diffusion, t) for t in timesteps] + [0.0]


def denoise_y(denoiser: Denoiser, y: torch.Tensor, sigma: float, t: int | float) -> torch.Tensor:
    """D(y; sigma): the x0 estimate at y = x_t / sqrt(alpha_bar_t), called as the network was trained, on
    x_t = y / sqrt(1 + sigma^2)."""
    x0_hat, _ = denoiser(y * (1.0 + sigma**2) ** -0.5, t)
    return x0_hat


def to_d(y: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's slope dy/dsigma = (y - D(y; sigma)) / sigma (Karras et al. 2022, eq. 3)."""
    return (y - denoised) / sigma


def check_finite_start(method: str, first_sigma: float) -> None:
    """Euler and Heun integrate in y = x_t / sqrt(alpha_bar), infinite where a grid starts at pure noise;
    a consistency model is trained on the schedule's finite noise levels only."""
    if math.isinf(first_sigma) and method == "consistency":
        raise ImpossibleDesign(
            "the consistency sampler's first call would be at pure noise (sigma = inf, t = T-1 of a "
            "zero-terminal-SNR schedule such as rectified-flow), a level consistency models are not trained "
            "at (their grid spans the schedule's finite noise levels); use --grid karras or log-snr, which "
            "start at the largest finite one"
        )
    if math.isinf(first_sigma):
        raise ImpossibleDesign(
            f"sampler {method!r} integrates in y = x_t / sqrt(alpha_bar), which is infinite where its grid "
            "starts at pure noise (t = T-1 of a zero-terminal-SNR schedule such as rectified-flow); use ddim "
            "or dpmpp-2m, or a karras or log-snr grid, which starts at the largest finite noise level"
        )


def check_start(diffusion: Diffusion, prediction: str, method: str, grid: Grid) -> None:
    """Refuse a sampling that cannot take its first step: an eps prediction at pure noise (x0 = (x_t -
    sqrt(1 - ab) eps) / sqrt(ab) with ab = 0), or a sampler that integrates in y from a grid that starts
    there. Checked before a run trains, and again by :func:`sample`."""
    if diffusion.zero_terminal_snr and prediction == "eps":
        raise ImpossibleDesign(
            "a zero-terminal-SNR schedule (rectified-flow, or --zero-terminal-snr) has alpha_bar[T-1] = 0, "
            "where x0 cannot be recovered from an eps prediction; use target v, x0, edm or flow"
        )
    check_flow_map(prediction, method)
    if SAMPLERS.metadata(method).get("finite_start") and grid.kind == "uniform":
        check_finite_start(method, float(diffusion.sigmas[-1]))


def churn(
    denoiser: Denoiser,
    y: torch.Tensor,
    sigma: float,
    t: int | float,
    gamma: float,
    s_noise: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, float, int | float]:
    """EDM's Algorithm 2, lines 5-6: raise the noise level to sigma_hat = sigma (1 + gamma) and add the
    matching fresh noise, y_hat = y + sqrt(sigma_hat^2 - sigma^2) S_noise z; returns (y_hat, sigma_hat, its
    real-valued timestep). sigma_hat is kept within the schedule's range, where the network was trained.
    With gamma = 0 nothing is drawn and (y, sigma, t) come back as they are."""
    if gamma <= 0:
        return y, sigma, t
    diffusion = denoiser.diffusion
    t_hat = float(diffusion.sigma_to_t(torch.tensor([sigma * (1 + gamma)], dtype=torch.float64))[0])
    sigma_hat = sigma_of(diffusion, t_hat)
    y_hat = y + max(sigma_hat**2 - sigma**2, 0.0) ** 0.5 * s_noise * randn_like(y, generator)
    return y_hat, sigma_hat, t_hat


@SAMPLERS.register("euler", settings=CHURN_SETTINGS, grid=True, finite_start=True, ode=True)
def euler(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: list[int] | list[float],
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float | None = None,
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Euler steps of the probability-flow ODE in EDM's sigma (first order; equal to DDIM with eta = 0);
    with ``s_churn`` > 0, EDM's Algorithm 2 with Euler steps (k-diffusion's ``sample_euler``)."""
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
    sigmas = sigma_grid(denoiser, timesteps)
    check_finite_start("euler", sigmas[0])
    y = x * (1.0 + sigmas[0] ** 2) ** 0.5
    steps = zip(timesteps, gammas(sigmas, s_churn, s_tmin, s_tmax), strict=True)
    bar = tqdm(steps, desc="euler", total=len(timesteps), disable=not progress, leave=False)
    for i, (t, gamma) in enumerate(bar):
        y, sigma, t = churn(denoiser, y, sigmas[i], t, gamma, s_noise, generator)
        d = to_d(y, sigma, denoise_y(denoiser, y, sigma, t))
        y = y + (sigmas[i + 1] - sigma) * d
    return y


@SAMPLERS.register(
    "heun",
    settings=CHURN_SETTINGS,
    grid=True,
    finite_start=True,
    ode=True,
    nfe=lambda steps: 2 * steps - 1,
    calls=lambda grid: grid + grid[1:],
    min_steps=2,
)
def heun(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: list[int] | list[float],
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float | None = None,
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """EDM's 2nd-order Heun sampler (Karras et al. 2022, Algorithm 2; Algorithm 1 with S_churn = 0).

    Each step may first raise the noise level by gamma and add the matching fresh noise (:func:`churn`, no
    network call), then takes an Euler step to the next sigma and corrects it with the slope there (two
    network calls); the last step, to sigma = 0, stays Euler: 2N - 1 calls for N steps."""
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
    sigmas = sigma_grid(denoiser, timesteps)
    check_finite_start("heun", sigmas[0])
    y = x * (1.0 + sigmas[0] ** 2) ** 0.5
    steps = zip(timesteps, gammas(sigmas, s_churn, s_tmin, s_tmax), strict=True)
    bar = tqdm(steps, desc="heun", total=len(timesteps), disable=not progress, leave=False)
    for i, (t, gamma) in enumerate(bar):
        y, sigma, t = churn(denoiser, y, sigmas[i], t, gamma, s_noise, generator)
        sigma_next = sigmas[i + 1]
        d = to_d(y, sigma, denoise_y(denoiser, y, sigma, t))
        y_next = y + (sigma_next - sigma) * d
        if sigma_next > 0:  # the second-order correction (Algorithm 2, lines 9-11)
            d_next = to_d(y_next, sigma_next, denoise_y(denoiser, y_next, sigma_next, timesteps[i + 1]))
            y_next = y + (sigma_next - sigma) * (d + d_next) / 2
        y = y_next
    return y


@SAMPLERS.register("dpmpp-2m", grid=True, ode=True)
def dpmpp_2m(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps: list[int] | list[float],
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, second order, one network call per step.

    Written in the paper's variables, x_t = alpha_t x_0 + sigma_t eps with lambda = log(alpha_t / sigma_t)
    (= -log of EDM's sigma), which stay finite at a zero-terminal-SNR start (alpha = 0, lambda = -inf). The
    first step is first order (no previous estimate yet), and so is the last, to sigma = 0, where h is
    infinite and the update returns the x0 estimate, as k-diffusion's ``sample_dpmpp_2m`` and diffusers'
    ``DPMSolverMultistepScheduler`` (``final_sigmas_type="zero"``) do. (Lu et al.'s own code can also lower
    the order of the step into the grid's last timestep when there are fewer than 10 steps; against the
    exact denoiser of Gaussian data on the linear schedule that doubled the endpoint error at 5-10 steps,
    so it is not done here.)"""
    coefficients = [vp_coefficients(denoiser.diffusion, t) for t in timesteps] + [(1.0, 0.0, math.inf)]
    alphas, sigmas, lambdas = (list(c) for c in zip(*coefficients, strict=True))
    old_denoised, h_last = None, None
    for i, t in enumerate(tqdm(timesteps, desc="dpmpp-2m", disable=not progress, leave=False)):
        denoised, _ = denoiser(x, t)
        h = lambdas[i + 1] - lambdas[i]
        if old_denoised is None or math.isinf(h):
            combined = denoised
        else:
            r = h_last / h
            combined = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - alphas[i + 1] * math.expm1(-h) * combined
        old_denoised, h_last = denoised, h
    return x


def sample(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    method: str = "ancestral",
    steps: int | None = None,
    clip_x0: bool | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    x_T: torch.Tensor | None = None,
    progress: bool = False,
    **settings: Any,
) -> torch.Tensor:
    """Draw ``shape[0]`` samples from ``denoiser`` with the sampler ``method``.

    ``steps`` sets the number of grid points (by default every timestep, or what the sampler registered as
    ``default_steps``), and for a sampler that walks any grid the settings ``grid``, ``rho``, ``sigma_max``
    and ``sigma_min`` (:class:`bench.process.grids.Grid`) where they lie; by default DDIM's evenly spaced
    timesteps (:func:`ddim_timesteps`). The sampler's own settings (``eta=``, ``variance=``, ``s_churn=``) are
    passed as keywords; one it does not declare is an error. Sampling is deterministic given ``generator``;
    ``x_T`` replaces the initial noise when given. ``clip_x0``, when given, overrides the denoiser's clipping
    of x0 to [-1, 1]."""
    sampler = SAMPLERS.get(method)
    unknown = sorted(set(settings) - set(sampler_settings(method)))
    if unknown:
        allowed = ", ".join(sampler_settings(method)) or "none"
        raise ValueError(
            f"sampler {method!r} takes no setting {', '.join(map(repr, unknown))}; its settings: {allowed}"
        )
    if clip_x0 is not None:
        denoiser = replace(denoiser, clip_x0=clip_x0)
    diffusion = denoiser.diffusion
    T = diffusion.num_timesteps
    if steps is None:
        steps = SAMPLERS.metadata(method).get("default_steps", T)
    grid = pop_grid(settings)
    check_start(diffusion, denoiser.prediction, method, grid)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in 1..T={T}, got {steps!r}")
    check_steps(method, steps)
    points = grid_points(method, steps)
    if points > T:
        raise ValueError(
            f"sampler {method!r} walks a grid of {points} points for {steps} steps, more than the schedule's "
            f"T={T} timesteps: give at most {steps - (points - T)} steps"
        )
    timesteps = grid.timesteps(diffusion, points)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or min(shape) < 1:
        raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape!r}")
    device = (
        torch.device(device)
        if device is not None
        else (x_T.device if x_T is not None else torch.device("cpu"))
    )
    with torch.inference_mode():
        if x_T is None:
            x = torch.randn(shape, generator=generator, device=generator.device if generator else device).to(
                device
            )
        elif tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        else:
            x = x_T.to(device=device, dtype=torch.float32)
        return sampler(denoiser, x, timesteps, generator=generator, progress=progress, **settings)
