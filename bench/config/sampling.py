"""How a run is sampled: the sampler, its steps and settings, where it steps (the grid) and EDM's churn,
and classifier-free guidance (:class:`SampleConfig`), the part ``bench sample`` and ``bench eval`` replace
in a run's own sampling (:class:`Stepping`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..process.denoiser import Guidance, check_guidance
from ..process.grids import GRID_SETTINGS, RHO, Grid
from .rules import POSITIVE, POSITIVE_INT, Rule, check_rules, ruled

AUTO_SAMPLER = "auto"


@dataclass(frozen=True)
class Stepping:
    """Where a sampler steps (:mod:`bench.process.grids`) and EDM's churn: the part of :class:`SampleConfig`
    that ``bench sample`` and ``bench eval`` replace in a run's own sampling."""

    grid: str = "uniform"
    rho: float = ruled(RHO, POSITIVE)
    sigma_max: float | None = ruled(None, replace(POSITIVE, optional=True))
    sigma_min: float | None = ruled(None, replace(POSITIVE, optional=True))
    s_churn: float = ruled(0.0, Rule(float, low=0))
    s_tmin: float = ruled(0.0, Rule(float, low=0))
    s_tmax: float | None = ruled(None, Rule(float, low=0, optional=True))
    s_noise: float = ruled(1.0, POSITIVE)


CHURN_DEFAULTS = {name: getattr(Stepping(), name) for name in ("s_churn", "s_tmin", "s_tmax", "s_noise")}
"""EDM's Algorithm 2 settings at their "no churn" values (k-diffusion's defaults)."""
STEPPING_SETTINGS = (*GRID_SETTINGS, *CHURN_DEFAULTS)
"""Where a sampler steps and how it adds noise on the way: named in a sample's label only when not the
default."""


def churn_label(churn: dict[str, Any]) -> list[str]:
    """``churn40``, ``tmin0.05``, ``tmax50``, ``noise1.003``: each churn setting not at its default."""
    short = {"s_churn": "churn", "s_tmin": "tmin", "s_tmax": "tmax", "s_noise": "noise"}
    return [f"{short[k]}{v:g}" for k, v in churn.items() if k == "s_churn" or v != CHURN_DEFAULTS[k]]


DESIGN_CHOSEN = ("steps", "eta", "grid", "rho", "sigma_max", "sigma_min")
"""The sampling settings a design's own sampling sets under ``method="auto"`` (a consistency model's one
call, a progressive student's halved grid, reflow's deterministic DDIM) unless they were given."""


def samplers_that(*, grid: bool = False, setting: str | None = None) -> str:
    """The registered samplers that walk any grid (``grid``) or take ``setting``, as ``a, b and c``."""
    from ..process.sampling import SAMPLERS, sampler_settings, takes_grid

    names = [
        name
        for name in SAMPLERS.names()
        if (not grid or takes_grid(name)) and (setting is None or setting in sampler_settings(name))
    ]
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


@dataclass(frozen=True)
class SampleConfig(Stepping):
    """How a run is sampled for its grid and its metrics.

    ``method="auto"`` uses one-shot sampling for a denoiser trained only on pure noise and DDIM with
    ``steps`` steps otherwise: 1,000-step ancestral sampling is available but costs 20x more here.
    ``eta=1`` makes DDIM the DDPM ancestral sampler on the strided timesteps: its fresh noise corrects the
    errors of a briefly trained model, which deterministic DDIM (eta=0) compounds into saturated blobs.

    ``grid`` is where a sampler that walks any grid (DDIM and the ODE solvers) steps
    (:mod:`bench.process.grids`: ``uniform``, ``karras`` with ``rho``, ``log-snr``; ``sigma_max`` /
    ``sigma_min`` None: the schedule's range), and ``s_churn``, ``s_tmin``, ``s_tmax`` (None: no bound) and
    ``s_noise`` are EDM's stochastic sampler's, which Euler and Heun take (churn 0: the deterministic
    sampler). A grid or churn asked of a sampler without them is an error, not silently dropped.

    For a class-conditional run: ``guidance_scale`` (classifier-free guidance, 1 = plain conditional),
    ``guidance_interval`` (the noise levels (lo, hi] where guidance applies; everywhere when None) and
    ``class_label`` (every sample of that class; None draws the classes balanced: sample i is of class
    i mod K).

    ``given`` names the settings of :data:`DESIGN_CHOSEN` that the user gave (typed on the command line):
    with ``method="auto"`` a design's own sampling replaces the others, never these, so that what was asked
    is what runs (``bench eval RUN --steps 1,2,4`` of a consistency model samples 1, 2 and 4 steps).
    """

    method: str = AUTO_SAMPLER
    steps: int | None = ruled(50, replace(POSITIVE_INT, optional=True))
    eta: float = ruled(1.0, Rule(float, low=0, high=1))
    variance: str = "beta"
    clip_x0: bool = True
    n: int = ruled(500, POSITIVE_INT)
    batch_size: int = ruled(250, POSITIVE_INT)
    use_ema: bool = True
    guidance_scale: float = ruled(1.0, Rule(float, low=0))
    guidance_interval: tuple[float, float] | None = None
    class_label: int | None = ruled(None, Rule(int, low=0, optional=True))
    given: tuple[str, ...] = ()

    @property
    def guided(self) -> bool:
        """Whether any call combines conditional and unconditional outputs."""
        return self.guidance_scale != 1.0

    def guidance(self) -> Guidance:
        """The classifier-free guidance these settings ask of a conditional model's denoiser."""
        return Guidance(self.guidance_scale, self.guidance_interval)

    def settings(self) -> dict[str, Any]:
        """The values of the settings that the (resolved) sampler ``method`` declares, e.g. ``{"eta": 1.0}``
        for DDIM: each sampler is given only its own."""
        from ..process.sampling import sampler_settings

        return {name: getattr(self, name) for name in sampler_settings(self.method) if hasattr(self, name)}

    def grid_choice(self) -> Grid:
        """The grid these settings ask for (:class:`bench.process.grids.Grid`)."""
        return Grid(self.grid, self.rho, self.sigma_max, self.sigma_min)

    def churn(self) -> dict[str, Any]:
        """EDM's churn settings, by their sampler-setting names; empty when there is no churn (S_churn 0,
        the deterministic sampler), whatever the other three say."""
        return {name: getattr(self, name) for name in CHURN_DEFAULTS} if self.s_churn else {}

    def label(self) -> str:
        """The sampler, its steps and only the settings it declares, for file names: ``ddim-50steps-eta1``,
        ``heun-10steps``, ``ancestral-allsteps-beta``; a grid other than the uniform one and a churn are
        named too (``heun-18steps-karras-rho7-churn40-tmin0.05-tmax50-noise1.003``), so the default
        sampling keeps the names it always had."""
        steps = f"{self.steps}steps" if self.steps else "allsteps"
        own = [
            f"{k}{v:g}" if isinstance(v, float) else str(v)
            for k, v in self.settings().items()
            if k not in STEPPING_SETTINGS
        ]
        if self.takes("grid") and not self.grid_choice().is_default:
            own.append(self.grid_choice().label())
        own.extend(churn_label(self.churn()))
        if self.guided:
            own.append(f"cfg{self.guidance_scale:g}")
        if self.guidance_interval is not None:
            own.append("interval{:g}-{:g}".format(*self.guidance_interval))
        if self.class_label is not None:
            own.append(f"class{self.class_label}")
        return "-".join([self.method, steps, *own])

    def takes(self, setting: str) -> bool:
        """Whether the sampler (or ``auto``, which is DDIM unless the design is sampled in one shot) declares
        ``setting``."""
        from ..process.sampling import sampler_settings

        return setting in sampler_settings("ddim" if self.method == AUTO_SAMPLER else self.method)

    def check_stepping(self) -> None:
        """A grid or churn is refused by a sampler that has none, rather than dropped without a word."""
        self.grid_choice()  # its own rules: a known grid, rho and the sigma range
        if not self.grid_choice().is_default and not self.takes("grid"):
            raise ValueError(
                f"sampler {self.method!r} walks no grid but its own; grid, rho, sigma_max and sigma_min are "
                f"for {samplers_that(grid=True)}"
            )
        changed = [f for f in CHURN_DEFAULTS if getattr(self, f) != CHURN_DEFAULTS[f]]
        if changed and not self.takes("s_churn"):
            raise ValueError(
                f"sampler {self.method!r} takes no {', '.join(changed)}: EDM's stochastic churn is a setting "
                f"of {samplers_that(setting='s_churn')}"
            )
        if self.s_tmax is not None and self.s_tmin > self.s_tmax:
            raise ValueError(f"s_tmin must be at most s_tmax, got s_tmin={self.s_tmin!r} > {self.s_tmax!r}")

    def __post_init__(self) -> None:
        check_rules(self, prefix="sample ")
        object.__setattr__(self, "given", tuple(self.given))  # a list when read back from JSON
        if unknown := sorted(set(self.given) - set(DESIGN_CHOSEN)):
            known = ", ".join(DESIGN_CHOSEN)
            raise ValueError(f"given names settings a design chooses ({known}), not {unknown}")
        self.check_stepping()
        if self.guidance_interval is not None:  # a list when read back from JSON
            check_guidance(self.guidance_scale, self.guidance_interval)
            object.__setattr__(self, "guidance_interval", tuple(float(v) for v in self.guidance_interval))
            if not self.guided:
                raise ValueError(
                    "a guidance interval needs a guidance scale other than 1 (scale 1 is plain conditional "
                    "sampling everywhere)"
                )
