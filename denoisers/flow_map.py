"""One call from pure noise without a teacher: flow maps trained from scratch.

``meanflow`` (Geng et al. 2025) and ``shortcut`` (Frans et al. 2024) learn the average velocity u(x, r, t)
of the rectified-flow path over [r, t] (:data:`bench.process.denoiser.FLOW_MAP`): a network that takes a
second time (the gap t - r, embedded like t and added), and jumps from any t to any r <= t in one call,
x_r = x_t - (t - r) u. Both sample through the ``flow-map`` sampler in 1, 2, 4 ... calls; at r = t the
network is a flow model, which every other sampler can integrate.

Each runs on the ``unet`` backbone (or ``backbone="transformer"``) with its presets and ``second_time=True``,
so a comparison with ``unet -o target=flow`` isolates the objective. Building one with ``second_time=False``
is allowed here and refused when a run is prepared, with the reason.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bench.process.denoiser import FLOW_MAP

from ._base import register
from .common import design_recipe
from .direct import build_on_backbone
from .unet import PRESETS as UNET_PRESETS


def _flow_map(
    name: str, objective: str, image_shape, backbone: str, second_time: Any, options: dict
) -> nn.Module:
    recipe = design_recipe(name, FLOW_MAP, allowed=(FLOW_MAP,), objective=objective, sampler="flow-map")
    return build_on_backbone(name, recipe, image_shape, backbone, {**options, "second_time": second_time})


@register("meanflow", presets=UNET_PRESETS)
def meanflow(
    image_shape: tuple[int, int, int], *, backbone: str = "unet", second_time: Any = True, **options: Any
) -> nn.Module:
    """MeanFlow (Geng et al. 2025): average velocity from the MeanFlow identity; 1-4 calls, no teacher."""
    return _flow_map("meanflow", "meanflow", image_shape, backbone, second_time, options)


@register("shortcut", presets=UNET_PRESETS)
def shortcut(
    image_shape: tuple[int, int, int], *, backbone: str = "unet", second_time: Any = True, **options: Any
) -> nn.Module:
    """Shortcut models (Frans et al. 2024): flow matching plus two-half-step self-consistency; no teacher."""
    return _flow_map("shortcut", "shortcut", image_shape, backbone, second_time, options)
