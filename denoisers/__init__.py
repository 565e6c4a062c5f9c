"""Denoiser plugins: ``denoisers.get(name)(image_shape, **options) -> nn.Module`` called as ``net(x_t, t)``.

Each module carries a :class:`Recipe` saying what it predicts and how it is trained and sampled.
Third-party denoisers register through the ``bench.denoisers`` entry-point group.
"""

from __future__ import annotations

from ._base import PREDICTIONS, REGISTRY, DenoiserFactory, Recipe, check_image_shape, recipe_of, register

get = REGISTRY.get
names = REGISTRY.names

__all__ = [
    "PREDICTIONS",
    "REGISTRY",
    "DenoiserFactory",
    "Recipe",
    "check_image_shape",
    "get",
    "names",
    "recipe_of",
    "register",
]
