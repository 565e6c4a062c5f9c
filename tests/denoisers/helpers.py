"""What the denoiser tests share."""

from __future__ import annotations

import torch


def perturb_zero_init(net: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised layers (last conv of a ResBlock, adaLN modulation, output) random weights.

    At initialisation they block the gradient to everything before them, so without this a test of gradient
    flow or of what the output depends on would test the initialisation, not the wiring.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def inputs(batch: int, shape: tuple[int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of x_t and 0-based timesteps spread over 0..3999."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g), torch.randint(0, 4000, (batch,), generator=g)
