"""Noise-schedule plugins: ``schedules.get(name)(T) -> betas`` (float64, shape [T]).

Third-party schedules register through the ``bench.schedules`` entry-point group.
"""

from __future__ import annotations

import torch

from . import cosine as _cosine  # noqa: F401  (registers "cosine")
from . import linear as _linear  # noqa: F401  (registers "linear", "scaled-linear")
from . import rectified_flow as _rectified_flow  # noqa: F401  (registers "rectified-flow")
from . import sigmoid as _sigmoid  # noqa: F401  (registers "sigmoid")
from ._base import REGISTRY, Schedule, check_num_timesteps, register
from .zero_snr import rescale_zero_terminal_snr

get = REGISTRY.get
names = REGISTRY.names


def make(name: str, T: int, *, zero_terminal_snr: bool = False, **params: float) -> torch.Tensor:
    """Betas of schedule ``name`` for ``T`` steps, checked, optionally rescaled to zero terminal SNR."""
    betas = get(name)(check_num_timesteps(T), **params)
    if not (isinstance(betas, torch.Tensor) and betas.shape == (T,)):
        raise ValueError(
            f"schedule {name!r} must return a tensor of shape [{T}], got {getattr(betas, 'shape', betas)!r}"
        )
    betas = betas.to(torch.float64)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


__all__ = ["REGISTRY", "Schedule", "get", "make", "names", "register", "rescale_zero_terminal_snr"]
