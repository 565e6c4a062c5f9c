"""Which noise levels the regression objective draws: the recipe's uniform (or terminal) integer timesteps,
EDM's log-normal sigma or SD3's logit-normal flow time as real-valued ones."""

from __future__ import annotations

import math

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


SPREAD_EDGES = (0.01, 0.99)
"""The flow times t = sigma / (1 + sigma) between which a useful share of the training draws should fall."""


def spread(config: TrainConfig) -> float | None:
    """The fraction of the log-normal (or logit-normal) draws whose flow time t falls in (0.01, 0.99), that
    is ln sigma = logit(t) within +-ln 99, from the normal CDF; None for uniform timesteps."""
    if config.noise_levels == "uniform":
        return None
    logit = config.noise_levels == "logit-normal"
    mean, std = (config.logit_mean, config.logit_std) if logit else (config.p_mean, config.p_std)
    low, high = (math.log(t / (1 - t)) for t in SPREAD_EDGES)
    cdf = lambda x: 0.5 * (1.0 + math.erf((x - mean) / (std * math.sqrt(2.0))))  # noqa: E731
    return cdf(high) - cdf(low)


def concentration_warning(config: TrainConfig) -> str | None:
    """A warning when fewer than half of the draws fall in (0.01, 0.99): training then sees essentially one
    end of the noise levels (``--logit-mean 1e9`` trains on pure noise only); None otherwise."""
    fraction = spread(config)
    if fraction is None or fraction >= 0.5:
        return None
    logit = config.noise_levels == "logit-normal"
    given = (
        f"--logit-mean {config.logit_mean:g} --logit-std {config.logit_std:g}"
        if logit
        else f"--p-mean {config.p_mean:g} --p-std {config.p_std:g}"
    )
    return (
        f"{given}: only {fraction:.3%} of the training noise levels have t in (0.01, 0.99) (sigma in "
        "(0.0101, 99)); training will see essentially one end of the noise levels"
    )
