"""The negative log-likelihood bound in bits/dim (Ho et al. 2020, section 3.3) on held-out images.

    L = L_T + sum_{t=1}^{T-1} KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) + L_0,

with L_0 the discretised Gaussian decoder over 256 levels. The decoder term (t = 0) is computed exactly;
the T-1 KL terms are estimated from ``num_timesteps`` timesteps drawn uniformly without replacement per
image, scaled by (T-1)/K: an unbiased estimate whose standard error (over images) is reported with it.
With K = T-1 the sum is exact.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..process.denoiser import Denoiser
from ..process.diffusion import nats_to_bits_per_dim


@dataclass(frozen=True)
class NLLResult:
    bits_per_dim: float
    standard_error: float
    num_images: int
    timesteps_used: int  # KL terms evaluated per image (of T-1), plus the decoder and the prior
    exact: bool
    seconds: float
    variance: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Snap [-1, 1] data to the 256-level grid the discretised decoder integrates over."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


@torch.inference_mode()
def nll_bits_per_dim(
    denoiser: Denoiser,
    images: torch.Tensor,
    *,
    num_timesteps: int | None = 32,
    variance: str = "posterior",
    batch_size: int = 250,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> NLLResult:
    """Estimate the variational bound on ``images`` in bits/dim; ``num_timesteps=None`` sums all T-1 terms."""
    T = denoiser.diffusion.num_timesteps
    k = T - 1 if num_timesteps is None else min(int(num_timesteps), T - 1)
    if k < 0 or (num_timesteps is not None and num_timesteps < 1):
        raise ValueError(f"num_timesteps must be a positive integer or None (all), got {num_timesteps!r}")
    generator = generator or torch.Generator().manual_seed(0)
    start = time.perf_counter()
    per_image = []
    for i in range(0, images.shape[0], batch_size):
        x0 = quantize(images[i : i + batch_size].to(device, torch.float32))
        per_image.append(_bound_nats(denoiser, x0, k, variance, generator).cpu())
    nats = torch.cat(per_image).double()
    dims = images[0].numel()
    bpd = nats_to_bits_per_dim(nats, dims)
    se = bpd.std().item() / math.sqrt(bpd.numel()) if bpd.numel() > 1 else float("nan")
    return NLLResult(bpd.mean().item(), se, bpd.numel(), k, k == T - 1, time.perf_counter() - start, variance)


def _bound_nats(
    denoiser: Denoiser,
    x0: torch.Tensor,
    k: int,
    variance: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per-image bound in nats: prior + decoder + (T-1)/k * sum of k sampled KL terms."""
    diffusion = denoiser.diffusion
    B, T = x0.shape[0], diffusion.num_timesteps

    def term(t: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_t = diffusion.q_sample(x0, t, eps)
        return diffusion.vb_term(denoiser, x0, x_t, t, variance=variance)

    total = diffusion.prior_kl(x0) + term(torch.zeros(B, dtype=torch.long, device=x0.device))
    if k > 0:
        # k distinct timesteps in 1..T-1 for every image (rank of random keys = a random subset)
        keys = torch.rand(B, T - 1, generator=generator)
        chosen = keys.argsort(dim=1)[:, :k] + 1
        kl_sum = torch.zeros(B, dtype=total.dtype, device=x0.device)
        for j in range(k):
            kl_sum += term(chosen[:, j].to(x0.device))
        total = total + kl_sum * ((T - 1) / k)
    return total
