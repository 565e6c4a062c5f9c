"""Zero terminal SNR rescaling (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", Algorithm 1).

Most schedules leave a little signal at the last step (linear: sqrt(alpha_bar[T-1]) ~ 0.006), so the
network trains on x_{T-1} that still leaks x0 while sampling starts from pure noise. Rescaling makes
``alpha_bar[T-1] == 0`` exactly; ``eps`` prediction is then undefined at the last step, so pair it
with ``x0`` or ``v`` prediction.
"""

from __future__ import annotations

import torch


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so that its first value is kept and its last becomes 0."""
    if betas.ndim != 1 or betas.numel() < 2:
        raise ValueError(
            f"zero terminal SNR needs a 1-D schedule with T >= 2, got shape {tuple(betas.shape)}"
        )
    sqrt_ab = torch.cumprod(1.0 - betas.double(), dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas
