"""The rectified-flow path (Liu et al. 2023; Lipman et al. 2023; Esser et al. 2024, SD3) as a schedule:
x = (1 - t) x0 + t eps is the variance-preserving x_t scaled by 1 / (sqrt(alpha_bar) + sqrt(1 - alpha_bar)),
with EDM's sigma = t / (1 - t), so the path is the schedule alpha_bar(t) = (1 - t)^2 / ((1 - t)^2 + t^2)
and every sampler, loss and metric applies to it unchanged. Its T timesteps are evenly spaced in t,
t_i = (i + 1) / T, up to t = 1: pure noise, alpha_bar = 0 (zero terminal SNR)."""

from __future__ import annotations

import torch

from ._base import betas_from_alpha_bar, check_num_timesteps, register


def alpha_bar_of_flow_time(t: torch.Tensor) -> torch.Tensor:
    """alpha_bar at flow time t: sqrt(alpha_bar) = (1 - t) r and sqrt(1 - alpha_bar) = t r, with
    r^-2 = (1 - t)^2 + t^2."""
    return (1 - t) ** 2 / ((1 - t) ** 2 + t**2)


@register("rectified-flow")
def rectified_flow(T: int) -> torch.Tensor:
    """Rectified flow's path x = (1 - t) x0 + t eps, t = (i + 1) / T up to pure noise (zero terminal SNR).

    The last beta is 1; the samplers that integrate in x_t (DDIM, DPM-Solver++, ancestral) start from there,
    Euler and Heun from the largest finite noise level of a karras or log-snr grid."""
    T = check_num_timesteps(T)
    return betas_from_alpha_bar(alpha_bar_of_flow_time, T, max_beta=1.0)
