"""Sigmoid schedule (Jabri et al. 2023, "Scalable Adaptive Computation"; Chen 2023, "On the Importance of
Noise Scheduling for Diffusion Models", Algorithm 1)."""

from __future__ import annotations

import torch

from ._base import MAX_BETA, betas_from_alpha_bar, check_in_range, check_num_timesteps, register


@register("sigmoid")
def sigmoid(
    T: int, *, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = MAX_BETA
) -> torch.Tensor:
    """Sigmoid alpha_bar (Jabri et al. 2023; Chen 2023), start=-3, end=3, tau=1: gentler at both ends."""
    T = check_num_timesteps(T)
    if not end > start:
        raise ValueError(f"sigmoid schedule needs end > start, got start={start!r}, end={end!r}")
    check_in_range("tau", tau, 0.0, float("inf"))
    check_in_range("max_beta", max_beta, 0.0, 1.0, closed_high=True)
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))

    def alpha_bar(t: torch.Tensor) -> torch.Tensor:
        return (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)

    return betas_from_alpha_bar(alpha_bar, T, max_beta)
