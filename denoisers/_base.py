"""The denoiser contract: what a plugin builds and what it declares to the shared trainer and sampler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from bench.process.denoiser import SIGMA_DATA, check_prediction, check_sigma_data
from bench.registry import Registry

TIMESTEP_MODES = ("all", "terminal")
PAIRINGS = ("independent", "teacher")


@dataclass(frozen=True)
class Recipe:
    """How a denoiser is trained and sampled, declared by the plugin so shared code never branches on names.

    prediction: what ``net(x_t, t)`` returns: the noise ``eps``, the clean image ``x0``, ``v``, or EDM's
                preconditioned ``F`` (``edm``: the network sees c_in y instead of x_t).
    timesteps:  which t the trainer draws: ``"all"`` (uniform over 0..T-1, as in DDPM) or ``"terminal"``
                (only t = T-1, i.e. the network sees pure noise: the one-shot design).
    sampler:    the sampling method this design is meant for (``ancestral``, ``ddim`` or ``one_shot``).
    pairs:      what each training input is paired with: ``"independent"`` (x_t drawn from q(x_t | x0), so
                at t = T-1 the noise says almost nothing of x0) or ``"teacher"`` (x0 is what a trained
                teacher's deterministic sampler makes of that very x_T: knowledge distillation with
                ``timesteps="terminal"``, reflow with ``"all"``, where x_T is the noise end of the path
                through every noise level).
    sigma_data: EDM's standard deviation of the data, for the ``edm`` prediction and loss weighting.
    objective:  the training objective, by its name in the registry :mod:`bench.training.objectives`:
                ``"regression"`` (the loss on the prediction target, the default),
                ``"consistency-distillation"`` and ``"consistency-training"`` (which train the
                ``consistency`` prediction) or ``"progressive-distillation"``. What it trains and needs is
                its declaration's, checked when a run is prepared (the recipe names it, and is not checked
                against it here: a plugin package may bring its own objective).
    """

    prediction: str = "eps"
    timesteps: str = "all"
    sampler: str = "ancestral"
    pairs: str = "independent"
    sigma_data: float = SIGMA_DATA
    objective: str = "regression"

    def __post_init__(self) -> None:
        check_prediction(self.prediction)
        check_sigma_data(self.sigma_data)
        if self.timesteps not in TIMESTEP_MODES:
            raise ValueError(f"timesteps must be one of {', '.join(TIMESTEP_MODES)}, got {self.timesteps!r}")
        if self.pairs not in PAIRINGS:
            raise ValueError(f"pairs must be one of {', '.join(PAIRINGS)}, got {self.pairs!r}")
        if not self.objective or not isinstance(self.objective, str):
            raise ValueError(f"objective must name a training objective, got {self.objective!r}")

    @property
    def reflows(self) -> bool:
        """Whether its teacher pairs are the ends of a path trained at every noise level (reflow), rather
        than pure noise and the image one call makes of it."""
        return self.pairs == "teacher" and self.timesteps == "all"


DenoiserFactory = Callable[..., nn.Module]
"""``factory(image_shape: (C, H, W), **options) -> nn.Module`` whose ``.recipe`` is a :class:`Recipe`."""

REGISTRY: Registry[DenoiserFactory] = Registry("denoiser", "bench.denoisers")
register = REGISTRY.register


def recipe_of(net: nn.Module) -> Recipe:
    """The recipe a denoiser declares; a clear error if the module does not follow the contract."""
    recipe = getattr(net, "recipe", None)
    if not isinstance(recipe, Recipe):
        raise TypeError(f"{type(net).__name__} has no `recipe` attribute of type denoisers.Recipe")
    return recipe


def check_image_shape(image_shape: object) -> tuple[int, int, int]:
    """Return ``image_shape`` as a (C, H, W) tuple of positive ints or raise a ValueError saying so."""
    try:
        shape = tuple(int(s) for s in image_shape)  # type: ignore[union-attr]
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape!r}")
    return shape  # type: ignore[return-value]
