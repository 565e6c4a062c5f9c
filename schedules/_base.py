"""The schedule registry and the checks every schedule shares."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from bench.registry import Registry

Schedule = Callable[..., torch.Tensor]
"""A schedule maps the number of timesteps ``T`` (and keyword parameters) to float64 betas of shape [T]."""

MAX_BETA = 0.999
"""The usual cap on a single beta (Nichol & Dhariwal 2021): keeps every step invertible."""

REGISTRY: Registry[Schedule] = Registry("schedule", "bench.schedules")
register = REGISTRY.register


def check_num_timesteps(T: object) -> int:
    """Return ``T`` as an int, or raise a ValueError that says a positive integer is needed."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"the number of timesteps T must be an integer >= 1, got {T!r}")
    return T


def check_in_range(name: str, value: float, low: float, high: float, *, closed_high: bool = False) -> float:
    """Check ``low < value < high`` (or ``<= high``) and say which parameter was wrong if not."""
    ok = math.isfinite(value) and low < value and (value <= high if closed_high else value < high)
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name} must be in ({low}, {high}{bracket}, got {value!r}")
    return float(value)


def betas_from_alpha_bar(
    alpha_bar_fn: Callable[[torch.Tensor], torch.Tensor], T: int, max_beta: float
) -> torch.Tensor:
    """Discretise a continuous ``alpha_bar(tau)``, tau in [0, 1], into T betas (Nichol & Dhariwal 2021,
    eq. 17).

    ``beta[t] = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), max_beta)``; the cap keeps the last steps
    from being singular when ``alpha_bar(1)`` is (nearly) zero.
    """
    tau = torch.arange(T + 1, dtype=torch.float64) / T
    f = alpha_bar_fn(tau)
    return (1.0 - f[1:] / f[:-1]).clamp(max=max_beta)
