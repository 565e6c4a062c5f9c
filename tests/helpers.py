"""Small models and data for tests that exercise the shared machinery, not an architecture."""

from __future__ import annotations

import torch
from torch import nn

from denoisers import Recipe


class TinyDenoiser(nn.Module):
    """Two convolutions with the timestep added as a channel; dropout so RNG state matters on resume."""

    def __init__(self, channels: int = 1, recipe: Recipe | None = None) -> None:
        super().__init__()
        self.recipe = recipe or Recipe()
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1, 16, 3, padding=1),
            nn.SiLU(),
            nn.Dropout(0.1),
            nn.Conv2d(16, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tmap = (t.float() / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.net(torch.cat([x, tmap], dim=1))


def toy_images(n: int = 96, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g) * 2 - 1


def tiny_factory(image_shape, *, target: str = "eps", terminal: bool = False) -> TinyDenoiser:
    """A tiny conv denoiser for tests of the run machinery."""
    recipe = Recipe(
        prediction=target,
        timesteps="terminal" if terminal else "all",
        sampler="one_shot" if terminal else "ancestral",
    )
    return TinyDenoiser(image_shape[0], recipe)
