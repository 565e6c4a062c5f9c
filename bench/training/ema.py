"""Exponential moving average of a model's weights (sampled from by default, as in DDPM)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * param`` with one fused ``_foreach_lerp_`` per step.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so that short runs are not dominated by the
    random initial weights (the TensorFlow ExponentialMovingAverage ``num_updates`` rule); ``warmup=False``
    applies ``decay`` from the first update (a consistency model's target network, whose rate is part of
    the objective).
    """

    def __init__(self, source: nn.Module, decay: float, *, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.source = source
        self.module = copy.deepcopy(source).eval().requires_grad_(False)
        self.num_updates = 0
        self._shadow = list(self.module.parameters())
        self._params = list(source.parameters())
        self._buffer_pairs = list(zip(self.module.buffers(), source.buffers(), strict=True))

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        decay = self.decay
        if self.warmup:
            decay = min(decay, (1 + self.num_updates) / (10 + self.num_updates))
        torch._foreach_lerp_(self._shadow, self._params, 1.0 - decay)
        for shadow, live in self._buffer_pairs:
            shadow.copy_(live)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
