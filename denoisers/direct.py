"""The seed's question: "why not train a denoiser that predicts the image directly from pure noise?"

The network only ever sees x_T (the trainer draws t = T-1 only), learns x0 with an MSE loss and is sampled in
one call. An MSE-trained network outputs E[x0 | x_T], and x_T carries almost nothing of x0 (its share is
sqrt(alpha_bar_T), about 0.006 for DDPM's linear schedule at T=1000 and 0 with zero terminal SNR), so this
design is expected to collapse towards the mean image; the benchmark measures by how much.

The backbone and its options are those of the ``unet`` plugin (or, with ``backbone="transformer"``, of the
``transformer`` plugin), built by their own builders with this design's recipe, so a comparison with them
isolates the design and not the architecture. ``direct`` registers the default backbone's presets; with
``backbone="transformer"`` the transformer's presets apply.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ._base import Recipe, register
from .common import check_target
from .transformer import build_transformer
from .unet import PRESETS as UNET_PRESETS
from .unet import build_unet

BACKBONES = {"unet": build_unet, "transformer": build_transformer}
RECIPE = Recipe(prediction="x0", timesteps="terminal", sampler="one_shot")
"""Predict the image, from pure noise only, in one call."""


@register("direct", presets=UNET_PRESETS)
def direct(
    image_shape: tuple[int, int, int], *, backbone: str = "unet", target: str = "x0", **options: Any
) -> nn.Module:
    """Pure noise -> image in one call, trained with MSE (the seed's question); `unet` backbone by default."""
    if backbone not in BACKBONES:
        raise ValueError(
            f"direct option backbone={backbone!r} is not allowed: must be one of {', '.join(BACKBONES)}"
        )
    check_target("direct", target, allowed=("x0",))
    try:
        return BACKBONES[backbone](image_shape, RECIPE, **options)
    except ValueError as exc:
        raise ValueError(f"direct (backbone={backbone}): {exc}") from None
