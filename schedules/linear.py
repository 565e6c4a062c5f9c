"""Linear betas (Ho et al. 2020) and the Stable-Diffusion "scaled linear" variant."""

from __future__ import annotations

import torch

from ._base import MAX_BETA, check_in_range, check_num_timesteps, register


def _linspace_ends(
    T: int, beta_start: float | None, beta_end: float | None, default_start: float, default_end: float
):
    # improved-diffusion scales both ends by 1000/T so that any T gives about the same total noise as
    # T=1000; for T < 50 that would pass beta = 1, so the scaled defaults are capped at 0.999.
    scale = 1000.0 / T
    start = min(default_start * scale, MAX_BETA) if beta_start is None else beta_start
    end = min(default_end * scale, MAX_BETA) if beta_end is None else beta_end
    check_in_range("beta_start", start, 0.0, 1.0)
    check_in_range("beta_end", end, 0.0, 1.0)
    if end < start:
        raise ValueError(f"beta_end ({end}) must be >= beta_start ({start})")
    return start, end


@register("linear")
def linear(T: int, *, beta_start: float | None = None, beta_end: float | None = None) -> torch.Tensor:
    """Linear betas 1e-4..0.02 at T=1000 (Ho et al. 2020); both ends scale by 1000/T for other T."""
    T = check_num_timesteps(T)
    start, end = _linspace_ends(T, beta_start, beta_end, 1e-4, 0.02)
    return torch.linspace(start, end, T, dtype=torch.float64)


@register("scaled-linear")
def scaled_linear(T: int, *, beta_start: float | None = None, beta_end: float | None = None) -> torch.Tensor:
    """Linear in sqrt(beta), 0.00085..0.012 at T=1000 (latent / Stable Diffusion); ends scale by 1000/T."""
    T = check_num_timesteps(T)
    start, end = _linspace_ends(T, beta_start, beta_end, 0.00085, 0.012)
    return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
