"""The seed's question: "why not train a denoiser that predicts the image directly from pure noise?"

The network only ever sees x_T (the trainer draws t = T-1 only), learns x0 with an MSE loss and is sampled in
one call. An MSE-trained network outputs E[x0 | x_T], and x_T carries almost nothing of x0 (its share is
sqrt(alpha_bar_T), about 0.006 for DDPM's linear schedule at T=1000 and 0 with zero terminal SNR), so this
design is expected to collapse towards the mean image; the benchmark measures by how much.

``direct-distilled`` is the other half of the answer: the same network, loss and one-call sampler, trained
on coupled pairs, each x0 being the image a trained teacher's deterministic DDIM sampler reaches from that
very x_T (Luhman & Luhman 2021). Then x0 is a function of x_T, the MSE optimum is that function and not the
mean image, and one call can reproduce the teacher's map.

The backbone and its options are those of the ``unet`` plugin (or, with ``backbone="transformer"``, of the
``transformer`` plugin), built by their own builders with this design's recipe, so a comparison with them
isolates the design and not the architecture. ``direct`` takes the class too (``num_classes``, through the
backbone's class embedding): its MSE optimum is then E[x0 | x_T, y], the class-mean image when x_T says
nothing; ``direct-distilled`` stays unconditional, as its teacher's pairs are. ``direct`` registers the
default backbone's presets; with ``backbone="transformer"`` the transformer's presets apply.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bench.process.denoiser import SIGMA_DATA

from ._base import Recipe, register
from .common import design_recipe
from .transformer import build_transformer
from .unet import PRESETS as UNET_PRESETS
from .unet import build_unet

BACKBONES = {"unet": build_unet, "transformer": build_transformer}
TARGETS = ("x0", "edm", "flow")
"""What a one-call image predictor may output: the image, EDM's F with x0_hat = c_skip y + c_out F (at
t = T-1, c_skip is about sigma_data^2 / sigma^2 and c_out about sigma_data: a rescaled image), or the flow's
velocity u with x0_hat = r x_T - t u (t = 1 on a zero-terminal-SNR schedule, 0.994 on the linear one: the
network outputs about x_T - x0, the image subtracted from its own input, and its loss is the x0 loss times
1 / t^2, about 1). Predicting the noise or v from pure noise would divide by sqrt(alpha_bar_{T-1}) to reach
the image."""
PURE_NOISE = {"timesteps": "terminal", "sampler": "one_shot"}
"""Predict the image, from pure noise only, in one call."""


@register("direct", presets=UNET_PRESETS, labels=True)
def direct(
    image_shape: tuple[int, int, int],
    *,
    backbone: str = "unet",
    target: str = "x0",
    sigma_data: float = SIGMA_DATA,
    **options: Any,
) -> nn.Module:
    """Pure noise -> image in one call, trained with MSE (the seed's question); `unet` backbone by default."""
    recipe = design_recipe("direct", target, sigma_data, allowed=TARGETS, **PURE_NOISE)
    return build_on_backbone("direct", recipe, image_shape, backbone, options)


@register("direct-distilled", presets=UNET_PRESETS)
def direct_distilled(
    image_shape: tuple[int, int, int],
    *,
    backbone: str = "unet",
    target: str = "x0",
    sigma_data: float = SIGMA_DATA,
    **options: Any,
) -> nn.Module:
    """direct, trained on (x_T, teacher's DDIM image of x_T) pairs (Luhman & Luhman 2021); needs --teacher."""
    recipe = design_recipe(
        "direct-distilled", target, sigma_data, allowed=TARGETS, pairs="teacher", **PURE_NOISE
    )
    return build_on_backbone("direct-distilled", recipe, image_shape, backbone, options)


def build_on_backbone(
    name: str, recipe: Recipe, image_shape: tuple[int, int, int], backbone: str, options: dict
) -> nn.Module:
    """The design ``name`` on the ``unet`` or ``transformer`` backbone, built by that backbone's builder with
    the design's recipe; a bad option's error names the design and the backbone."""
    if backbone not in BACKBONES:
        raise ValueError(
            f"{name} option backbone={backbone!r} is not allowed: must be one of {', '.join(BACKBONES)}"
        )
    try:
        return BACKBONES[backbone](image_shape, recipe, **options)
    except ValueError as exc:
        raise ValueError(f"{name} (backbone={backbone}): {exc}") from None
