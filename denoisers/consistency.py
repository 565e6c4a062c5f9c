"""The one-step designs that came after the seed's question: consistency models and reflow.

``consistency-distilled`` (CD, Song et al. 2023) learns f(y, sigma), the map from any point of a teacher's
probability-flow ODE trajectory to its end, by making f agree at two adjacent noise levels, the lower one
reached by one ODE step of the teacher (needs ``--teacher``); ``consistency`` is improved consistency
training (iCT, Song & Dhariwal 2023), the same without a teacher; ``ect`` is easy consistency tuning (Geng
et al. 2024), consistency training in continuous time started from a diffusion run's weights (``--teacher``);
``sct`` is continuous-time consistency training (Lu & Song 2024), the consistency condition's derivative
along the path taken by a JVP in TrigFlow's variables, from scratch. The first three use the consistency
parametrisation (``bench.process.denoiser.CONSISTENCY``), sct TrigFlow's (``TRIGFLOW``, conditioned on
TrigFlow's time); all four are sampled in one call or a few (the ``consistency`` sampler).

``reflow`` (Liu et al. 2023) is a flow trained again, on the (noise, image) pairs of a trained flow's own
ODE (``--teacher``, a run with ``--target flow``): the path between each pair's ends is straight, so the new
flow's ODE trajectories are nearly straight and few Euler calls (DDIM with eta 0 on the flow path) reach
what many do. Its one-call student is ``direct-distilled -o target=flow --teacher <the reflow run>``.

``progressive-distilled`` (Salimans & Ho 2022) learns to take in one deterministic DDIM step two of its
teacher's (``--teacher``, ``--teacher-steps`` 2N - 1 -> N calls); each round's student teaches the next.

Each reuses the ``unet`` backbone and presets with a recipe of its own, so a comparison with ``unet`` and
``direct`` isolates the objective.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bench.process.denoiser import CONSISTENCY, SIGMA_DATA, TRIGFLOW

from ._base import Recipe, register
from .common import design_recipe
from .unet import PRESETS as UNET_PRESETS
from .unet import build_unet


def _unet(name: str, recipe: Recipe, image_shape: tuple[int, int, int], options: dict) -> nn.Module:
    """The ``unet`` backbone with this design's recipe; a bad option's error names the design."""
    try:
        return build_unet(image_shape, recipe, **options)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _consistency(
    name: str, objective: str, image_shape, sigma_data: float, options: dict, prediction: str = CONSISTENCY
) -> nn.Module:
    recipe = design_recipe(
        name, prediction, sigma_data, allowed=(prediction,), objective=objective, sampler="consistency"
    )
    return _unet(name, recipe, image_shape, options)


@register("consistency", presets=UNET_PRESETS)
def consistency(
    image_shape: tuple[int, int, int], *, sigma_data: float = SIGMA_DATA, **options: Any
) -> nn.Module:
    """Improved consistency training (iCT, Song & Dhariwal 2023): no teacher; 1-4 calls."""
    return _consistency("consistency", "consistency-training", image_shape, sigma_data, options)


@register("consistency-distilled", presets=UNET_PRESETS)
def consistency_distilled(
    image_shape: tuple[int, int, int], *, sigma_data: float = SIGMA_DATA, **options: Any
) -> nn.Module:
    """Consistency distillation (CD, Song et al. 2023) of a teacher's ODE; needs --teacher; 1-4 calls."""
    return _consistency("consistency-distilled", "consistency-distillation", image_shape, sigma_data, options)


@register("ect", presets=UNET_PRESETS)
def ect(image_shape: tuple[int, int, int], *, sigma_data: float = SIGMA_DATA, **options: Any) -> nn.Module:
    """Easy consistency tuning (ECT, Geng et al. 2024) from a diffusion run's weights; needs --teacher."""
    return _consistency("ect", "consistency-tuning", image_shape, sigma_data, options)


@register("sct", presets=UNET_PRESETS)
def sct(image_shape: tuple[int, int, int], *, sigma_data: float = SIGMA_DATA, **options: Any) -> nn.Module:
    """Continuous-time consistency training (sCT, Lu & Song 2024), TrigFlow's tangent; 1-4 calls."""
    return _consistency("sct", "continuous-consistency", image_shape, sigma_data, options, TRIGFLOW)


@register("reflow", presets=UNET_PRESETS)
def reflow(image_shape: tuple[int, int, int], *, sigma_data: float = SIGMA_DATA, **options: Any) -> nn.Module:
    """A flow trained on a flow teacher's own (noise, image) pairs (Liu et al. 2023); needs --teacher."""
    recipe = design_recipe("reflow", "flow", sigma_data, allowed=("flow",), pairs="teacher", sampler="ddim")
    return _unet("reflow", recipe, image_shape, options)


@register("progressive-distilled", presets=UNET_PRESETS)
def progressive_distilled(
    image_shape: tuple[int, int, int], *, target: str = "edm", sigma_data: float = SIGMA_DATA, **options: Any
) -> nn.Module:
    """Progressive distillation (Salimans & Ho 2022): two teacher DDIM steps in one; needs --teacher."""
    # the objective declares which targets it distils (not eps: it cannot give x0 where SNR is about 0)
    recipe = design_recipe(
        "progressive-distilled", target, sigma_data, objective="progressive-distillation", sampler="ddim"
    )
    return _unet("progressive-distilled", recipe, image_shape, options)
