"""Settings given to a design that does not use them: a usage error naming the designs they are for.

The teacher's settings (``--teacher``, ``--teacher-steps``, ``--pairs``, ``--teacher-clip-x0``) and the
consistency objectives' (``--levels``, ``--target-ema``, ...) are read by some designs only, as their
training objective declares (:func:`bench.training.objectives.design_settings`). ``bench run --denoiser
unet --teacher RUN`` would otherwise train a plain U-Net and say nothing of the teacher. The designs are
asked for their recipes on PyTorch's meta device, so the check costs no memory and no time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

import denoisers

from ..config import RunConfig
from ..training.objectives import DESIGN_SETTINGS, design_settings


def flag(path: str) -> str:
    """The command-line option of a design setting: ``consistency.target_ema`` -> ``--target-ema``."""
    return "--" + path.rsplit(".", 1)[-1].replace("_", "-")


def recipe(denoiser: str, options: dict[str, Any], size: int = 32) -> denoisers.Recipe | None:
    """The recipe of ``denoiser`` built with ``options`` on the meta device; None when it cannot be built
    (the run's own checks then say why)."""
    try:
        with torch.device("meta"):
            return denoisers.recipe_of(denoisers.get(denoiser)((1, size, size), **options))
    except Exception:  # a bad name or option: reported where the run is built
        return None


def designs_using(path: str) -> list[str]:
    """The registered designs (with their default options) that read the setting ``path``."""
    found = []
    for name in denoisers.names():
        built = recipe(name, {})
        if built is not None and path in design_settings(built):
            found.append(name)
    return found


def check_given_settings(config: RunConfig, given: Iterable[str]) -> None:
    """Refuse the design settings in ``given`` (config paths typed on the command line) that the run's design
    does not read, naming the designs each is for."""
    asked = [path for path in given if path in DESIGN_SETTINGS]
    if not asked:
        return
    built = recipe(config.denoiser, config.denoiser_options, config.image_size or 32)
    if built is None:
        return
    unused = [path for path in asked if path not in design_settings(built)]
    if unused:
        reasons = [f"{flag(path)} is for {', '.join(designs_using(path)) or 'no design'}" for path in unused]
        raise ValueError(
            f"denoiser {config.denoiser!r} does not use {', '.join(flag(p) for p in unused)}: "
            f"{'; '.join(reasons)}. Leave {'it' if len(unused) == 1 else 'them'} out"
        )
