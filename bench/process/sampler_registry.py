"""The sampler registry and what each sampler declares at registration: its settings, whether it walks any
grid, its network calls per step count, the grid points it needs, the timesteps it calls the network at and
the fewest steps it takes. Asked by the run's config, its metrics and the studies without running a
sampler; the samplers themselves register in :mod:`bench.process.sampling`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..registry import Registry
from .denoiser import Guidance
from .diffusion import Diffusion
from .grids import GRID_SETTINGS, sigma_of

Sampler = Callable[..., torch.Tensor]

SAMPLERS: Registry[Sampler] = Registry("sampler", "bench.samplers")

TO_THE_DATA = {
    "grid": True,
    "default_steps": 1,
    "grid_points": lambda steps: steps + 1,
    "calls": lambda grid: grid[:-1],
}
"""The registration of a sampler meant for one call or a few that ends at the data (consistency sampling,
a flow map's jumps): N calls walk a grid of N + 1 points, whose last is not called."""


def sampler_settings(method: str) -> tuple[str, ...]:
    """The settings (keyword arguments) the sampler ``method`` declared at registration, and the grid's when
    it walks any grid (``grid=True``)."""
    own = tuple(SAMPLERS.metadata(method).get("settings", ()))
    return own + (GRID_SETTINGS if takes_grid(method) else ())


def takes_grid(method: str) -> bool:
    """Whether the sampler ``method`` declared that it walks any grid of noise levels (``grid=True``)."""
    return bool(SAMPLERS.metadata(method).get("grid", False))


def follows_the_ode(method: str, eta: float = 1.0) -> bool:
    """Whether ``method`` steps along the probability-flow ODE, whose slope (x - x0_hat) / sigma needs the
    denoiser E[x0 | x_t]: a sampler that declared ``ode=True`` (euler, heun, dpmpp-2m), or DDIM with
    ``eta`` 0."""
    return bool(SAMPLERS.metadata(method).get("ode", False)) or (method == "ddim" and eta == 0)


def network_calls(method: str, steps: int) -> int:
    """Network function evaluations (NFE) per image of ``method`` with ``steps`` steps, as it declared at
    registration (``nfe=``); one per step for a sampler that declares nothing."""
    nfe = SAMPLERS.metadata(method).get("nfe")
    return int(nfe(steps)) if nfe is not None else steps


def grid_points(method: str, steps: int) -> int:
    """Points of the grid ``method`` walks for ``steps`` steps, as it declared at registration
    (``grid_points=``); one per step for a sampler that declares nothing."""
    points = SAMPLERS.metadata(method).get("grid_points")
    return int(points(steps)) if points is not None else steps


def called_timesteps(method: str, timesteps: list[int]) -> list[int]:
    """The timesteps, one per network call, at which ``method`` calls the network on the grid ``timesteps``,
    as it declared at registration (``calls=``); each grid timestep once for a sampler that declares
    nothing."""
    calls = SAMPLERS.metadata(method).get("calls")
    return list(calls(timesteps)) if calls is not None else list(timesteps)


def guided_network_calls(method: str, timesteps: list, diffusion: Diffusion, guidance: Guidance) -> int:
    """NFE per image with classifier-free guidance: a guided call evaluates the network on the conditional
    and the unconditional input (two calls, in one batch of 2B), an unguided one once."""
    return sum(guidance.calls(sigma_of(diffusion, t)) for t in called_timesteps(method, timesteps))


def check_steps(method: str, steps: int) -> None:
    """Refuse fewer steps than the sampler declared it needs (``min_steps=``)."""
    least = SAMPLERS.metadata(method).get("min_steps", 1)
    if steps < least:
        raise ValueError(f"sampler {method!r} needs at least {least} steps, got {steps}")
