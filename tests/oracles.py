"""Analytic oracles for the diffusion math: for Gaussian (and Gaussian-mixture) data the exact E[eps | x_t]
is known in closed form, so samplers, the loss and the likelihood bound can be checked against numbers
rather than shapes."""

from __future__ import annotations

import math

import torch

from bench.process.diffusion import Diffusion
from bench.process.grids import ddim_timesteps
from bench.process.oracles import GaussianData

M, S = 0.4, 0.3  # data x0 ~ N(M, S^2) per dimension
GAUSSIAN = GaussianData(M, S)


def gaussian_oracle(diffusion: Diffusion, prediction: str = "eps", sigma_data: float = 0.5):
    """The exact minimiser of L_simple for x0 ~ N(M, S^2): E[target | x_t], linear in x_t (for ``edm``, EDM's
    F in EDM's own variables: see :class:`bench.process.oracles.GaussianData`)."""
    return GAUSSIAN.network(diffusion, prediction, sigma_data)


def mixture_oracle(diffusion: Diffusion, weights, means, std):
    """Exact E[eps | x_t] for 1-D data from a mixture of Gaussians with a common std."""
    w, m = torch.tensor(weights, dtype=torch.float64), torch.tensor(means, dtype=torch.float64)

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x_t.double()
        a = diffusion.sqrt_alpha_bar[t].view(-1, 1)
        b = diffusion.sqrt_one_minus_alpha_bar[t].view(-1, 1)
        var = a**2 * std**2 + b**2  # (B, 1)
        log_r = torch.log(w) - 0.5 * (x - a * m) ** 2 / var  # (B, K), the common normaliser cancels
        r = torch.softmax(log_r, dim=1)
        return (r * b * (x - a * m) / var).sum(1, keepdim=True).to(x_t.dtype)

    return model


def ddim_moments_exact(diffusion: Diffusion, steps: int) -> tuple[float, float]:
    """Mean and std of deterministic DDIM's output from x_T ~ N(0, 1) with the Gaussian oracle, computed
    by propagating its affine update x_s = k x_t + c step by step (the discretisation, not the ODE)."""
    mean, std = 0.0, 1.0
    seq = ddim_timesteps(diffusion.num_timesteps, steps)
    for i, t in enumerate(seq):
        ab_t = diffusion.alpha_bar[t].item()
        ab_s = diffusion.alpha_bar[seq[i + 1]].item() if i + 1 < len(seq) else 1.0
        a, b = math.sqrt(ab_t), math.sqrt(1 - ab_t)
        d = a**2 * S**2 + b**2
        # x0_hat = M + a S^2 (x - a M) / d ;  eps_hat = b (x - a M) / d
        k = (math.sqrt(ab_s) * a * S**2 + math.sqrt(1 - ab_s) * b) / d
        c = math.sqrt(ab_s) * M - k * a * M
        mean, std = k * mean + c, abs(k) * std
    return mean, std
