"""What several denoisers share: the sinusoidal timestep embedding, parameter counting and option checking.

Options reach a factory from the command line (``-o key=value``), so every factory validates them the same
way: a preset supplies every option, explicit options override it, and a bad name or value is a ValueError
naming the option, the value and what is allowed, raised before any tensor is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from bench.process.denoiser import NULL_LABEL, PREDICTIONS, SIGMA_DATA, check_sigma_data

from ._base import Recipe

Check = Callable[[Any], Any]
"""Turns an option's value into its normal form, or raises ValueError("<what is allowed>")."""


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017; DDPM; DiT): ``[cos(t f_i), sin(t f_i)]``,
    ``f_i = max_period^(-i / (dim/2))``. ``t`` is read as a float so fractional timesteps embed smoothly."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, dim/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2 * (dim/2))
    return nn.functional.pad(emb, (0, dim % 2))  # (N, dim)


class ClassEmbedding(nn.Module):
    """A learned vector per class and one more for the null label (:data:`bench.process.denoiser.NULL_LABEL`),
    the "no class" that label dropout trains and classifier-free guidance asks for; ``y=None`` is null for
    all. ``init_std`` None keeps PyTorch's N(0, 1) (improved-diffusion's U-Net); DiT draws N(0, 0.02^2)."""

    def __init__(self, num_classes: int, dim: int, init_std: float | None = None) -> None:
        super().__init__()
        self.num_classes = positive_int(num_classes)
        self.table = nn.Embedding(num_classes + 1, dim)
        if init_std is not None:
            nn.init.normal_(self.table.weight, std=init_std)

    def forward(self, y: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch,), NULL_LABEL, dtype=torch.long, device=device)
        return self.table(torch.where(y == NULL_LABEL, self.num_classes, y))  # (N, dim)


def class_embedding_or_none(
    num_classes: int | None, dim: int, init_std: float | None = None
) -> nn.Module | None:
    """The class embedding of a conditional network, None for an unconditional one (so an unconditional
    network's parameters, and the random numbers its initialisation draws, are what they always were)."""
    return ClassEmbedding(num_classes, dim, init_std) if num_classes is not None else None


def add_class(
    emb: torch.Tensor, class_embedding: nn.Module | None, y: torch.Tensor | None, plugin: str
) -> torch.Tensor:
    """``emb`` plus the class embedding of ``y``; labels given to an unconditional network are an error."""
    if class_embedding is None:
        if y is not None:
            raise ValueError(f"this {plugin} network is unconditional: it was built without num_classes")
        return emb
    return emb + class_embedding(y, emb.shape[0], emb.device)


class SecondTimeEmbedding(nn.Module):
    """A flow map's second time (MeanFlow's t - r, a shortcut model's step d), embedded as the first time is
    (sinusoids, then an MLP) and added to its embedding. The MLP's last layer starts at zero, so a network
    that takes a second time starts as the same network without it: a flow model at every step length."""

    def __init__(self, frequencies: int, dim: int) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, gap: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(gap, self.frequencies))  # (N, dim)


def second_time_or_none(second_time: bool, frequencies: int, dim: int) -> SecondTimeEmbedding | None:
    """The second time's embedding of a network built to take one, None otherwise (built after every other
    layer, so a network without it has the parameters, and draws the random numbers, it always had)."""
    try:
        wanted = flag(second_time)
    except ValueError:
        raise ValueError(
            f"option second_time={second_time!r} is not allowed: must be True or False"
        ) from None
    return SecondTimeEmbedding(frequencies, dim) if wanted else None


def add_second_time(
    emb: torch.Tensor, embedding: nn.Module | None, gap: torch.Tensor | None, plugin: str
) -> torch.Tensor:
    """``emb`` plus the embedding of the second time ``gap``; None is a gap of zero (the call every sampler
    makes: a flow map at r = t is the flow's velocity), and a gap given to a network without the second
    time is an error."""
    if embedding is None:
        if gap is not None:
            raise ValueError(f"this {plugin} network takes no second time: build it with -o second_time=True")
        return emb
    if gap is None:
        gap = torch.zeros(emb.shape[0], device=emb.device)
    return emb + embedding(gap)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (buffers such as fixed position embeddings are not parameters)."""
    return sum(p.numel() for p in module.parameters())


def resolve_options(
    plugin: str,
    presets: Mapping[str, Mapping[str, Any]],
    preset: str,
    options: Mapping[str, Any],
    checks: Mapping[str, Check],
) -> dict[str, Any]:
    """The preset's options overridden by ``options``, each checked by ``checks[name]``."""
    if preset not in presets:
        raise ValueError(f"unknown {plugin} preset {preset!r}; presets: {', '.join(presets)}")
    for name, value in options.items():
        if name not in checks:
            known = ", ".join(["preset", "target", "sigma_data", *checks])
            raise ValueError(f"unknown {plugin} option {name}={value!r}; options: {known}")
    resolved = {**presets[preset], **options}
    for name, check in checks.items():
        try:
            resolved[name] = check(resolved[name])
        except ValueError as exc:
            raise ValueError(
                f"{plugin} option {name}={resolved[name]!r} is not allowed: must be {exc}"
            ) from None
    return resolved


def design_recipe(
    plugin: str,
    target: object,
    sigma_data: object = SIGMA_DATA,
    *,
    allowed: tuple[str, ...] = PREDICTIONS,
    **fields: Any,
) -> Recipe:
    """The recipe of a design whose target and sigma_data came as options, checked here so that an error
    names the option rather than the Recipe field."""
    if target not in allowed:
        raise ValueError(
            f"{plugin} option target={target!r} is not allowed: must be one of {', '.join(allowed)}"
        )
    try:
        sigma_data = check_sigma_data(sigma_data)
    except ValueError:
        raise ValueError(
            f"{plugin} option sigma_data={sigma_data!r} is not allowed: must be a positive number"
        ) from None
    return Recipe(prediction=target, sigma_data=sigma_data, **fields)  # type: ignore[arg-type]


def positive_int(value: Any) -> int:
    """bool is refused: ``-o base_channels=True`` would otherwise quietly build 1 channel."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("a positive integer")
    return value


def positive_float(value: Any) -> float:
    """An int is accepted too (``-o mlp_ratio=4`` arrives as one)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError("a positive number")
    return float(value)


def flag(value: Any) -> bool:
    """A switch: True or False only (``-o scale_shift_norm=1`` is refused rather than read as True)."""
    if not isinstance(value, bool):
        raise ValueError("True or False")
    return value


def probability(value: Any) -> float:
    """A dropout rate: 1.0 would drop everything, so it is excluded."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError("a number in [0, 1)")
    return float(value)


def positive_ints(*, allow_empty: bool) -> Check:
    """A tuple of positive ints; a single int (``-o attention_resolutions=16``) means a 1-tuple."""
    what = "a tuple of positive integers" + ("" if allow_empty else " (at least one)")

    def check(value: Any) -> tuple[int, ...]:
        values = (value,) if isinstance(value, int) else value
        if not isinstance(values, tuple | list) or not (values or allow_empty):
            raise ValueError(what)
        try:
            return tuple(positive_int(v) for v in values)
        except ValueError:
            raise ValueError(what) from None

    return check


def group_count(channels: int, max_groups: int = 32) -> int:
    """GroupNorm groups: DDPM's 32 when the channels allow, else the largest divisor of ``channels`` below,
    never leaving one channel per group (unless there is one channel): a one-channel group normalises each
    channel on its own and so removes the per-channel offset a timestep or class embedding adds, which is
    how the ``small`` U-Net's 32-channel level lost its conditioning (32 groups of one)."""
    most = max(1, min(max_groups, channels // 2))
    return max(g for g in range(1, most + 1) if channels % g == 0)
