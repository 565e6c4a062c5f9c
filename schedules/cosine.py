"""Cosine schedule (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17)."""

from __future__ import annotations

import math

import torch

from ._base import MAX_BETA, betas_from_alpha_bar, check_in_range, check_num_timesteps, register


@register("cosine")
def cosine(T: int, *, s: float = 0.008, max_beta: float = MAX_BETA) -> torch.Tensor:
    """Cosine alpha_bar, offset s=0.008, betas capped at 0.999 (Nichol & Dhariwal 2021)."""
    T = check_num_timesteps(T)
    check_in_range("s", s, 0.0, 1.0)
    check_in_range("max_beta", max_beta, 0.0, 1.0, closed_high=True)

    def alpha_bar(tau: torch.Tensor) -> torch.Tensor:
        # f(tau) / f(0), with f(tau) = cos^2(((tau + s) / (1 + s)) * pi / 2)
        f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
        return f / f[0]

    return betas_from_alpha_bar(alpha_bar, T, max_beta)
