"""Which noise levels the regression objective draws: the recipe's uniform (or terminal) integer timesteps,
EDM's log-normal sigma or SD3's logit-normal flow time as real-valued ones."""

from __future__ import annotations

import torch

from denoisers import Recipe

from ..config import TrainConfig
from ..process.diffusion import Diffusion


def sample_timesteps(
    recipe: Recipe, num_timesteps: int, batch: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Draw the training timesteps the denoiser declares: uniform over 0..T-1, or only T-1 (pure noise)."""
    if recipe.timesteps == "terminal":
        return torch.full((batch,), num_timesteps - 1, dtype=torch.long, device=device)
    return torch.randint(0, num_timesteps, (batch,), generator=generator, device=device)


def lognormal_timesteps(
    diffusion: Diffusion,
    batch: int,
    generator: torch.Generator,
    device: torch.device,
    *,
    p_mean: float,
    p_std: float,
) -> torch.Tensor:
    """EDM's training noise levels (Karras et al. 2022, Table 1): ln sigma ~ N(P_mean, P_std^2), as
    real-valued timesteps through the log-sigma interpolation of the schedule (sigma outside the schedule's
    range is clamped to its ends, which the backbones were never asked to embed beyond)."""
    log_sigma = p_mean + p_std * torch.randn(batch, generator=generator, device=device, dtype=torch.float64)
    return diffusion.log_sigma_to_t(log_sigma)


def training_timesteps(
    recipe: Recipe,
    diffusion: Diffusion,
    config: TrainConfig,
    batch: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """One step's training timesteps: the recipe's uniform (or terminal) integers, or EDM's log-normal noise
    levels (SD3's logit-normal flow time is one, of mean logit_mean and std logit_std) as real-valued
    timesteps."""
    if config.noise_levels in ("lognormal", "logit-normal"):
        logit = config.noise_levels == "logit-normal"
        return lognormal_timesteps(
            diffusion,
            batch,
            generator,
            device,
            p_mean=config.logit_mean if logit else config.p_mean,
            p_std=config.logit_std if logit else config.p_std,
        )
    return sample_timesteps(recipe, diffusion.num_timesteps, batch, generator, device)
