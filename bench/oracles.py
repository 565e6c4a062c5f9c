"""Analytic oracles: data whose exact denoiser is known in closed form, so that a sampler (built in or a
plugin) is measured against exact numbers rather than against another sampler.

For Gaussian data x0 ~ N(m, s^2) per dimension, E[x0 | x_t] is linear in x_t, so the MSE-optimal network
of every target is known; in EDM's variables (y = x_t / sqrt(alpha_bar) = x0 + sigma eps) the exact
denoiser is D(y; sigma) = m + s^2 / (s^2 + sigma^2) (y - m), and the probability-flow ODE keeps
(y - m) / sqrt(s^2 + sigma^2) constant along its path, so where any deterministic sampler should land is
known too (Karras et al. 2022, eq. 3; the Gaussian case is their appendix B's example).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .denoiser import SIGMA_DATA, Denoiser
from .diffusion import Diffusion
from .sampling import SAMPLERS, ddim_timesteps


@dataclass(frozen=True)
class GaussianData:
    """Data N(mean, std^2) in every dimension."""

    mean: float = 0.4
    std: float = 0.3

    def network(
        self, diffusion: Diffusion, prediction: str = "eps", sigma_data: float = SIGMA_DATA
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact minimiser of each target's L_simple: E[target | x_t], for integer timesteps. For
        ``edm`` it is EDM's F in EDM's own variables (Table 1): the input is c_in y, so
        y = input sqrt(sigma^2 + sd^2), and F = (D(y; sigma) - c_skip y) / c_out."""
        m, s = self.mean, self.std

        def net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            shape = (-1, *[1] * (x_t.ndim - 1))
            if prediction == "edm":
                sigma, sd = diffusion.sigmas[t].view(shape).to(x_t), sigma_data
                y = x_t * (sigma**2 + sd**2).sqrt()
                denoised = m + s**2 / (s**2 + sigma**2) * (y - m)
                c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
                return (denoised - c_skip * y) / c_out
            a = diffusion.sqrt_alpha_bar[t].view(shape).to(x_t)
            b = diffusion.sqrt_one_minus_alpha_bar[t].view(shape).to(x_t)
            resid = (x_t - a * m) / (a**2 * s**2 + b**2)
            eps, x0 = b * resid, m + a * s**2 * resid
            return {"eps": eps, "x0": x0, "v": a * eps - b * x0}[prediction]

        return net

    def ode_endpoint(self, diffusion: Diffusion, x_T: torch.Tensor) -> torch.Tensor:
        """Where a deterministic sampler should land from x_T at t = T-1: the exact ODE solution at sigma_0
        (the grid's last timestep), then the exact denoiser there, which is the last step every sampler takes
        (its x0 estimate at t = 0)."""
        m, s = self.mean, self.std
        sigma_max, sigma_min = diffusion.sigmas[-1].item(), diffusion.sigmas[0].item()
        y_T = x_T * math.sqrt(1 + sigma_max**2)
        y_min = m + (y_T - m) * math.sqrt(s**2 + sigma_min**2) / math.sqrt(s**2 + sigma_max**2)
        return m + s**2 / (s**2 + sigma_min**2) * (y_min - m)

    def sampler_error(
        self,
        diffusion: Diffusion,
        method: str,
        steps: int,
        *,
        prediction: str = "eps",
        n: int = 64,
        seed: int = 0,
        **settings: float,
    ) -> float:
        """The largest distance, over ``n`` seeded noises, between where ``method`` with ``steps`` steps and
        the exact network lands and the exact ODE endpoint (float64 throughout)."""
        x_T = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        denoiser = Denoiser(self.network(diffusion, prediction), diffusion, prediction)
        timesteps = ddim_timesteps(diffusion.num_timesteps, steps)
        x = SAMPLERS.get(method)(denoiser, x_T.clone(), timesteps, **settings)
        return (x - self.ode_endpoint(diffusion, x_T)).abs().max().item()
