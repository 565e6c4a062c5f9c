"""Denoiser plugins: ``denoisers.get(name)(image_shape, **options) -> nn.Module`` called as ``net(x_t, t)``.

A plugin that can be class-conditional registers with ``labels=True``: its factory then also takes
``num_classes=K`` and its module is called as ``net(x_t, t, y)`` with int64 labels in 0..K-1 or
``bench.process.denoiser.NULL_LABEL`` (-1) for the null class; ``y=None`` (or two arguments) is the null class
for all. :func:`accepts_labels` says which plugins declared it.

Each module carries a :class:`Recipe` saying what it predicts and how it is trained and sampled.
Third-party denoisers register through the ``bench.denoisers`` entry-point group.

Size presets are declared at registration (``@register("unet", presets=PRESETS)``, a dict from preset name
to its options); :func:`presets` lists the names, so ``bench list`` and ``--preset`` work for third-party
plugins too.
"""

from __future__ import annotations

from typing import Any

from bench.process.denoiser import PREDICTIONS

# Importing a plugin module registers its factory.
from . import consistency as _consistency  # noqa: F401
from . import direct as _direct  # noqa: F401
from . import flow_map as _flow_map  # noqa: F401
from . import transformer as _transformer  # noqa: F401
from . import unet as _unet  # noqa: F401
from ._base import REGISTRY, DenoiserFactory, Recipe, check_image_shape, recipe_of, register

get = REGISTRY.get
names = REGISTRY.names


def preset_options(name: str) -> dict[str, dict[str, Any]]:
    """The presets the denoiser ``name`` registered with: preset name -> its options (empty if none)."""
    return dict(REGISTRY.metadata(name).get("presets", {}))


def accepts_labels(name: str) -> bool:
    """Whether the denoiser ``name`` declared at registration (``labels=True``) that it can be conditioned on
    a class (its factory takes ``num_classes``)."""
    return bool(REGISTRY.metadata(name).get("labels", False))


def presets(name: str) -> list[str]:
    """Preset names the denoiser ``name`` accepts as ``preset=`` (empty if it declares none)."""
    return list(preset_options(name))


__all__ = [
    "PREDICTIONS",
    "REGISTRY",
    "DenoiserFactory",
    "accepts_labels",
    "Recipe",
    "check_image_shape",
    "get",
    "names",
    "preset_options",
    "presets",
    "recipe_of",
    "register",
]
