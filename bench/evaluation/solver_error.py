"""How far a sampler lands from where the probability-flow ODE takes the same noise: a solver's own error,
whatever a sample-quality metric makes of it.

FD judges the images, not the solver: a coarse grid's truncation error can lower FD for one model and raise
it for another, so "10 calls beat 50" can be true of FD and false of the ODE. The measure here is the RMS
pixel distance of each deterministic sampler's images to a converged reference from the SAME noises:
EDM's Heun on the karras grid (rho 7) with 256 steps, 511 network calls, far below any grid the study
uses. Stochastic samplers (DDIM with eta > 0, ancestral, churn) follow no ODE and have none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..config import SampleConfig
from ..process.denoiser import Denoiser
from ..process.sampling import follows_the_ode, network_calls, sample
from ..training.pairs import rms

REFERENCE_IMAGES = 100
"""The noises each sampler and the reference are run from (at most; fewer when fewer are scored)."""


@dataclass(frozen=True)
class Reference:
    """The converged solution the samplers are measured against."""

    method: str = "heun"
    steps: int = 256
    grid: str = "karras"
    rho: float = 7.0

    def on(self, num_timesteps: int) -> Reference:
        """The reference on a schedule of ``num_timesteps`` steps: no more steps than it has (a short test
        schedule's T = 50 gives 99 calls)."""
        return replace(self, steps=min(self.steps, num_timesteps))

    def describe(self) -> str:
        calls = network_calls(self.method, self.steps)
        return f"{self.method} {self.steps} steps ({calls} calls), {self.grid} grid rho {self.rho:g}"

    def settings(self) -> dict:
        """The sampling settings that replace a sampling's own to make the reference."""
        return {"method": self.method, "steps": self.steps, "grid": self.grid, "rho": self.rho,
                "sigma_max": None, "sigma_min": None, "s_churn": 0.0}  # fmt: skip


REFERENCE = Reference()


def has_solver_error(cfg: SampleConfig) -> bool:
    """Whether the sampling follows the probability-flow ODE from its noise (a deterministic solver without
    churn): only then is its distance to the ODE's solution its own error."""
    return follows_the_ode(cfg.method, cfg.eta) and not cfg.churn()


def reference_noise(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The x_T every sampler and the reference start from: a stream of its own, apart from the sampling's."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 104_729)
    return torch.randn((n, *shape), generator=generator)


def solution(denoiser: Denoiser, x_T: torch.Tensor, reference: Reference = REFERENCE) -> torch.Tensor:
    """The reference's images from ``x_T`` (a Denoiser of any network, the exact oracle's included)."""
    settings = reference.on(denoiser.diffusion.num_timesteps).settings()
    method, steps = settings.pop("method"), settings.pop("steps")
    settings.pop("s_churn")
    return sample(denoiser, tuple(x_T.shape), method=method, steps=steps, x_T=x_T, **settings)


def solver_rms(images: torch.Tensor, reference_images: torch.Tensor) -> float:
    """The mean over images of the per-image RMS pixel distance to the reference's images from the same
    noises (images in [-1, 1])."""
    return rms(images.float(), reference_images.float())
