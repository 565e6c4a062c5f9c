"""Denoiser plugins: ``denoisers.get(name)(image_shape, **options) -> nn.Module`` called as ``net(x_t, t)``.

Each module carries a :class:`Recipe` saying what it predicts and how it is trained and sampled.
Third-party denoisers register through the ``bench.denoisers`` entry-point group.

Size presets: a factory may carry a ``presets`` attribute (a dict from preset name to its options);
:func:`presets` lists the names, so ``bench list`` and ``--preset`` work for third-party plugins too.
"""

from __future__ import annotations

# Importing a plugin module registers its factory.
from . import direct as _direct  # noqa: F401
from . import transformer as _transformer  # noqa: F401
from . import unet as _unet  # noqa: F401
from ._base import PREDICTIONS, REGISTRY, DenoiserFactory, Recipe, check_image_shape, recipe_of, register

get = REGISTRY.get
names = REGISTRY.names


def presets(name: str) -> list[str]:
    """Preset names the denoiser ``name`` accepts as ``preset=`` (empty if its factory declares none)."""
    return list(getattr(get(name), "presets", {}))


__all__ = [
    "PREDICTIONS",
    "REGISTRY",
    "DenoiserFactory",
    "Recipe",
    "check_image_shape",
    "get",
    "names",
    "presets",
    "recipe_of",
    "register",
]
