"""The DDPM U-Net (Ho et al. 2020, appendix B): a PixelCNN++-style backbone of Wide-ResNet blocks.

Reads top to bottom like the paper's network:
  ResBlock   GroupNorm, SiLU, 3x3 conv, + projected timestep embedding, GroupNorm, SiLU, dropout, 3x3 conv,
             plus the (1x1-projected) input; the last conv starts at zero: each block starts as the identity;
             with ``scale_shift_norm`` the embedding scales and shifts the second norm's output instead
             (improved-diffusion); GroupNorm never has one channel per group (``group_count``);
  AttnBlock  single-head self-attention over the pixels, residual, output projection starting at zero;
  UNet       sinusoidal timestep embedding -> MLP; ``num_res_blocks`` blocks per resolution (with attention
             at ``attention_resolutions``), strided-conv down, nearest + conv up, every down-path activation
             concatenated into the up path; ResBlock, attention, ResBlock in the middle.

Any image size works without cropping or padding: a down-sampling conv halves a side rounding up
(28 -> 14 -> 7, 8 -> 4 -> 2, 7 -> 4 -> 2) and each up-sampling goes to the exact size of the skip connection
it meets. Padding 28x28 to 32x32 instead would spend 30% more compute on made-up border pixels and move the
resolutions off the image's own (attention "at 7x7" would run at 8x8). A resolution is the longer side of a
level; an attention resolution that no level has is an error that lists the ones that exist.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from bench.process.denoiser import SIGMA_DATA

from ._base import Recipe, check_image_shape, register
from .common import (
    add_class,
    add_second_time,
    class_embedding_or_none,
    design_recipe,
    flag,
    group_count,
    positive_int,
    positive_ints,
    probability,
    resolve_options,
    second_time_or_none,
    timestep_embedding,
)
from .kernels.group_norm import GroupNorm

PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized for 8x8 and 28x28 data: attention only in the middle, i.e. at the lowest resolution
    # (7x7 for 28x28). 1.06M parameters and 0.37 GFLOP per 1x28x28 image.
    "small": {
        "base_channels": 32,
        "channel_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (),
        "dropout": 0.0,
        "scale_shift_norm": False,
    },
    # Ho et al. 2020's CIFAR-10 model: 35,746,307 parameters at 3x32x32.
    "ddpm-cifar10": {
        "base_channels": 128,
        "channel_mult": (1, 2, 2, 2),
        "num_res_blocks": 2,
        "attention_resolutions": (16,),
        "dropout": 0.1,
        "scale_shift_norm": False,  # DDPM adds the embedding; improved-diffusion introduced scale-shift
    },
}

CHECKS = {
    "base_channels": positive_int,
    "channel_mult": positive_ints(allow_empty=False),
    "num_res_blocks": positive_int,
    "attention_resolutions": positive_ints(allow_empty=True),
    "dropout": probability,
    "scale_shift_norm": flag,
}


class ResBlock(nn.Module):
    """The timestep enters every block, so each resolution can adapt its work to the noise level.

    DDPM adds the projected embedding to the activations before the second GroupNorm (``scale_shift_norm``
    False); improved-diffusion's ``use_scale_shift_norm`` instead projects it to a per-channel scale and
    shift applied after that norm, ``h = norm(h) * (1 + scale) + shift``, which no normalisation can undo."""

    def __init__(
        self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, scale_shift_norm: bool = False
    ) -> None:
        super().__init__()
        self.scale_shift_norm = scale_shift_norm
        self.norm1 = GroupNorm(group_count(in_ch), in_ch, silu=True)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, 2 * out_ch if scale_shift_norm else out_ch)
        # with scale-shift the SiLU follows the modulation, so it is not fused into the norm
        self.norm2 = GroupNorm(group_count(out_ch), out_ch, silu=not scale_shift_norm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm1(x))  # (N, out, H, W)
        emb = self.temb_proj(F.silu(temb))[:, :, None, None]  # (N, out or 2 out, 1, 1)
        if self.scale_shift_norm:
            scale, shift = emb.chunk(2, dim=1)  # (N, out, 1, 1) each
            h = F.silu(self.norm2(h) * (1 + scale) + shift)  # (N, out, H, W)
        else:
            h = self.norm2(h + emb)  # (N, out, H, W)
        h = self.conv2(self.dropout(h))  # (N, out, H, W)
        return self.skip(x) + h  # (N, out, H, W)


class AttnBlock(nn.Module):
    """Global mixing that convolutions at the low resolutions lack; single head, as in DDPM."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = GroupNorm(group_count(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        qkv = self.qkv(self.norm(x))  # (N, 3C, H, W)
        # A view, not a copy, when x is channels-last.
        q, k, v = rearrange(qkv, "n (three c) h w -> three n 1 (h w) c", three=3)  # (N, 1, HW, C) each
        out = F.scaled_dot_product_attention(q, k, v)  # (N, 1, HW, C), softmax(q k^T / sqrt(C)) v
        return x + self.proj(rearrange(out, "n 1 (h w) c -> n c h w", h=height))  # (N, C, H, W)


class ResAttnBlock(nn.Module):
    """A ResBlock followed, at the resolutions that have it, by self-attention."""

    def __init__(
        self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, attention: bool, scale_shift: bool
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, temb_dim, dropout, scale_shift)
        self.attn = AttnBlock(out_ch) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, temb))  # (N, out, H, W)


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (N, C, ceil(H/2), ceil(W/2))


class Upsample(nn.Module):
    """Nearest-neighbour to the skip's size (not a fixed 2x), so odd sizes such as 7 -> 4 -> 7 round-trip."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))  # (N, C, *size)


def level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """(H, W) of each level: a stride-2 conv with padding 1 halves a side rounding up."""
    sizes = [(height, width)]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class UNet(nn.Module):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        base_channels: int,
        channel_mult: tuple[int, ...],
        num_res_blocks: int,
        attention_resolutions: tuple[int, ...],
        dropout: float,
        scale_shift_norm: bool = False,
        recipe: Recipe | None = None,
        num_classes: int | None = None,
        second_time: bool = False,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        resolutions = [max(size) for size in level_sizes(height, width, len(channel_mult))]
        missing = sorted(set(attention_resolutions) - set(resolutions))
        if missing:
            raise ValueError(
                f"unet option attention_resolutions={attention_resolutions!r} is not allowed for a "
                f"{height}x{width} image with {len(channel_mult)} levels: {missing} is not the resolution of "
                f"a level; the resolutions are {resolutions}"
            )
        self.recipe = recipe or Recipe()
        self.base_channels = ch = base_channels
        temb_dim = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(channels, ch, 3, padding=1)

        block = {"temb_dim": temb_dim, "dropout": dropout, "scale_shift": scale_shift_norm}
        self.down = nn.ModuleList()
        skip_channels, cur = [ch], ch
        for level, mult in enumerate(channel_mult):
            attention = resolutions[level] in attention_resolutions
            for _ in range(num_res_blocks):
                self.down.append(ResAttnBlock(cur, ch * mult, attention=attention, **block))
                cur = ch * mult
                skip_channels.append(cur)
            if level != len(channel_mult) - 1:
                self.down.append(Downsample(cur))
                skip_channels.append(cur)

        self.mid1 = ResAttnBlock(cur, cur, attention=True, **block)
        self.mid2 = ResBlock(cur, cur, temb_dim, dropout, scale_shift_norm)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            attention = resolutions[level] in attention_resolutions
            for _ in range(num_res_blocks + 1):
                in_ch = cur + skip_channels.pop()
                self.up.append(ResAttnBlock(in_ch, ch * mult, attention=attention, **block))
                cur = ch * mult
            if level != 0:
                self.up.append(Upsample(cur))

        self.norm_out = GroupNorm(group_count(cur), cur, silu=True)
        self.conv_out = nn.Conv2d(cur, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # improved-diffusion's class conditioning: a learned class vector added to the timestep embedding
        # (drawn last, so that the other weights are those of the unconditional network of the same seed)
        self.label_emb = class_embedding_or_none(num_classes, temb_dim)
        # a flow map's second time, embedded like t and added (drawn after the class embedding likewise)
        self.gap_emb = second_time_or_none(second_time, ch, temb_dim)
        self.second_time = self.gap_emb is not None

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        gap: torch.Tensor | None = None,
    ) -> torch.Tensor:
        temb = self.temb(timestep_embedding(t, self.base_channels))  # (N, 4ch)
        temb = add_class(temb, self.label_emb, y, "unet")  # (N, 4ch)
        temb = add_second_time(temb, self.gap_emb, gap, "unet")  # (N, 4ch)
        hs = [self.conv_in(x)]  # (N, ch, H, W)
        for layer in self.down:
            hs.append(layer(hs[-1], temb))  # (N, ch * mult, H_level, W_level)
        h = self.mid2(self.mid1(hs[-1], temb), temb)  # (N, ch * mult[-1], H_lowest, W_lowest)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h, hs[-1].shape[-2:])  # (N, ch * mult, H_level, W_level) of the next skip
            else:
                h = layer(torch.cat([h, hs.pop()], dim=1), temb)  # (N, ch * mult, H_level, W_level)
        return self.conv_out(self.norm_out(h))  # (N, C, H, W)


def build_unet(
    image_shape: tuple[int, int, int],
    recipe: Recipe,
    *,
    preset: str = "small",
    num_classes: int | None = None,
    second_time: bool = False,
    **options: Any,
) -> UNet:
    """The U-Net of a preset and options, trained and sampled as ``recipe`` says (other designs, such as
    ``direct``, reuse the backbone with a recipe of their own); class-conditional with ``num_classes``,
    and with ``second_time`` taking a flow map's second time (``net(x, t, gap=...)``)."""
    shape = check_image_shape(image_shape)
    opts = resolve_options("unet", PRESETS, preset, options, CHECKS)
    return UNet(shape, recipe=recipe, num_classes=num_classes, second_time=second_time, **opts)


@register("unet", presets=PRESETS, labels=True)
def unet(
    image_shape: tuple[int, int, int],
    *,
    preset: str = "small",
    target: str = "eps",
    sigma_data: float = SIGMA_DATA,
    num_classes: int | None = None,
    second_time: bool = False,
    **options: Any,
) -> UNet:
    """DDPM U-Net (Ho et al. 2020): Wide-ResNet blocks, timestep embedding, self-attention; predicts eps."""
    recipe = design_recipe("unet", target, sigma_data)
    return build_unet(
        image_shape, recipe, preset=preset, num_classes=num_classes, second_time=second_time, **options
    )
