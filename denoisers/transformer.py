"""DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

Reads top to bottom like the paper and facebookresearch/DiT's models.py: ``modulate`` (the adaptive
LayerNorm), ``TimestepEmbedder`` (256 sinusoidal frequencies -> MLP), ``DiTBlock`` (timm's Attention and Mlp,
each wrapped in adaLN-Zero: shift and scale before, a gate after, all regressed from the timestep embedding),
``FinalLayer`` and ``DiT``. ``initialize_weights`` is DiT's: xavier linears, zeroed modulations and output
layer, so every block starts as the identity and the network's first output is exactly zero.

Class-conditional with ``num_classes``: as DiT's ``LabelEmbedder``, a table with one extra row for the null
class, summed with the timestep embedding into the adaLN conditioning; label dropout is the trainer's (for
every backbone alike), not the embedder's. Unconditional otherwise, with no table at all.

Differences from the paper's model, for pixel-space benchmarks: no learned variance (the output has the
input's C channels), and the fixed sin-cos position embedding is a buffer rather than a frozen parameter, so
it is not counted as a parameter nor saved in checkpoints.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from einops import rearrange
from timm.layers import Attention, Mlp, PatchEmbed, build_sincos2d_pos_embed
from torch import nn

from bench.process.denoiser import SIGMA_DATA

from ._base import Recipe, check_image_shape, register
from .common import (
    add_class,
    add_second_time,
    class_embedding_or_none,
    design_recipe,
    positive_float,
    positive_int,
    resolve_options,
    second_time_or_none,
    timestep_embedding,
)

SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
"""The paper's Table 1: depth, hidden size, heads."""

PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: patch_size "auto" is the largest of 4, 2, 1 dividing H and W into at least 4x4 tokens:
    # 4 for 28x28 and 32x32 (7x7 and 8x8 tokens), 2 for 8x8 (4x4 tokens), 1 for 7x7.
    # 1.87M parameters and 0.12 GFLOP per 1x28x28 image.
    "small": {"depth": 6, "hidden_size": 128, "num_heads": 4, "patch_size": "auto", "mlp_ratio": 4.0},
    **{
        f"DiT-{size}/{patch}": {
            "depth": depth,
            "hidden_size": hidden,
            "num_heads": heads,
            "patch_size": patch,
            "mlp_ratio": 4.0,
        }
        for size, (depth, hidden, heads) in SIZES.items()
        for patch in (2, 4, 8)
    },
}


def patch_size_option(value: Any) -> int | str:
    if value == "auto":
        return value
    try:
        return positive_int(value)
    except ValueError:
        raise ValueError('a positive integer or "auto"') from None


CHECKS = {
    "depth": positive_int,
    "hidden_size": positive_int,
    "num_heads": positive_int,
    "patch_size": patch_size_option,
    "mlp_ratio": positive_float,
}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size))  # (N, D)


class DiTBlock(nn.Module):
    """adaLN-Zero: the timestep sets each block's LayerNorm shift/scale and its residual gates, which start
    at zero, so the block starts as the identity (the paper's best conditioning, Fig. 5)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        approx_gelu = partial(nn.GELU, approximate="tanh")
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=approx_gelu, drop=0)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        modulation = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 x (N, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (N, T, D)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (N, T, D)
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*C)


def sincos_pos_embed_2d(hidden_size: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """MAE's (and DiT's) fixed embedding, (1, H*W, D): ``[sin x, cos x, sin y, cos y]`` of column x, row y.

    timm builds it with the coordinates in (x, y) order, so its tokens come column-major; put them row-major,
    the order of PatchEmbed's tokens."""
    emb = build_sincos2d_pos_embed((grid_h, grid_w), hidden_size, reverse_coord=True, interleave_sin_cos=True)
    return rearrange(emb, "(w h) d -> 1 (h w) d", h=grid_h)  # (1, T, D)


class DiT(nn.Module):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        patch_size: int,
        hidden_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        recipe: Recipe | None = None,
        num_classes: int | None = None,
        second_time: bool = False,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.recipe = recipe or Recipe()
        self.patch_size = patch_size
        self.grid = (height // patch_size, width // patch_size)
        self.x_embedder = PatchEmbed((height, width), patch_size, channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden_size, *self.grid), persistent=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, channels)
        self.initialize_weights()
        # After the other layers, so that an unconditional DiT draws its initial weights as it always did.
        self.y_embedder = class_embedding_or_none(num_classes, hidden_size, init_std=0.02)
        # a flow map's second time: 256 frequencies like t's, added to the conditioning (drawn last likewise)
        frequencies = self.t_embedder.frequency_embedding_size
        self.gap_embedder = second_time_or_none(second_time, frequencies, hidden_size)
        self.second_time = self.gap_embedder is not None

    def initialize_weights(self) -> None:
        # Transformer layers: xavier-uniform weights, zero biases.
        def basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic_init)
        # Patch embedding: like the linear layer on flattened patches that it is (not like a conv).
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        # Timestep MLP: small normal weights.
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: zero gates make every block the identity at the start.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        # Output layer: zero, so the first prediction is 0.
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens in PatchEmbed's row-major order, each a (p, p, C) patch, back to an image (N, C, H, W)."""
        p = self.patch_size
        return rearrange(x, "n (h w) (p q c) -> n c (h p) (w q)", h=self.grid[0], p=p, q=p)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        gap: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.x_embedder(x) + self.pos_embed  # (N, T, D), T = H*W / p^2
        c = add_class(self.t_embedder(t), self.y_embedder, y, "transformer")  # (N, D)
        c = add_second_time(c, self.gap_embedder, gap, "transformer")  # (N, D)
        for block in self.blocks:
            x = block(x, c)  # (N, T, D)
        x = self.final_layer(x, c)  # (N, T, p*p*C)
        return self.unpatchify(x)  # (N, C, H, W)


def auto_patch_size(height: int, width: int) -> int:
    """Largest of 4, 2, 1 that divides the image into at least 4x4 tokens (see the ``small`` preset)."""
    fits = (p for p in (4, 2) if height % p == 0 and width % p == 0 and min(height, width) >= 4 * p)
    return next(fits, 1)


def check_architecture(height: int, width: int, opts: dict[str, Any]) -> None:
    """The constraints between options and the image size, each an error saying what would work."""
    patch, hidden, heads = opts["patch_size"], opts["hidden_size"], opts["num_heads"]
    if height % patch or width % patch:
        divisors = [p for p in range(1, min(height, width) + 1) if height % p == 0 and width % p == 0]
        raise ValueError(
            f"transformer option patch_size={patch} does not divide the {height}x{width} image; "
            f"patch sizes that do: {', '.join(map(str, divisors))}"
        )
    if hidden % heads:
        raise ValueError(
            f"transformer option num_heads={heads} does not divide hidden_size={hidden}; "
            "the head width is hidden_size / num_heads"
        )
    if hidden % 4:
        raise ValueError(
            f"transformer option hidden_size={hidden} is not allowed: the 2-D sin-cos position embedding "
            "needs a multiple of 4"
        )


def build_transformer(
    image_shape: tuple[int, int, int],
    recipe: Recipe,
    *,
    preset: str = "small",
    num_classes: int | None = None,
    second_time: bool = False,
    **options: Any,
) -> DiT:
    """The DiT of a preset and options, trained and sampled as ``recipe`` says (reused by ``direct``);
    class-conditional with ``num_classes``, and with ``second_time`` taking a flow map's second time."""
    channels, height, width = check_image_shape(image_shape)
    opts = resolve_options("transformer", PRESETS, preset, options, CHECKS)
    if opts["patch_size"] == "auto":
        opts["patch_size"] = auto_patch_size(height, width)
    check_architecture(height, width, opts)
    return DiT(
        (channels, height, width), recipe=recipe, num_classes=num_classes, second_time=second_time, **opts
    )


@register("transformer", presets=PRESETS, labels=True)
def transformer(
    image_shape: tuple[int, int, int],
    *,
    preset: str = "small",
    target: str = "eps",
    sigma_data: float = SIGMA_DATA,
    num_classes: int | None = None,
    second_time: bool = False,
    **options: Any,
) -> DiT:
    """DiT (Peebles & Xie 2023): patch transformer with adaLN-Zero timestep conditioning; predicts eps."""
    recipe = design_recipe("transformer", target, sigma_data)
    return build_transformer(
        image_shape, recipe, preset=preset, num_classes=num_classes, second_time=second_time, **options
    )
