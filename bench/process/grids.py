"""Where a sampler steps: the grid of noise levels it visits, in k-diffusion's shape (``get_sigmas_karras``,
``get_sigmas_exponential``), the schedule's values at the grid's (possibly real-valued) timesteps, and where
EDM's stochastic sampler raises the noise level on the way (its gamma per step, Algorithm 2).

Every grid function returns N descending noise levels (EDM's sigma = sqrt((1 - alpha_bar) / alpha_bar)); the
sampler then ends at sigma = 0. A noise level between the schedule's integer timesteps becomes a real-valued
timestep through the log-sigma interpolation the networks are trained and called with
(:meth:`bench.process.diffusion.Diffusion.sigma_to_t`), so a grid is handed to the samplers as timesteps, as
the default ``uniform`` grid always was (its timesteps are the integers they always were):

  uniform   DDIM's evenly spaced integer timesteps from T-1 to 0 (Song et al. 2021), the default;
  karras    EDM's eq. 5, (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, rho = 7
            (Karras et al. 2022): long steps at high noise, short ones near the data;
  log-snr   evenly spaced in lambda = log(alpha / sigma) = -log sigma (DPM-Solver's ``logSNR``, k-diffusion's
            ``get_sigmas_exponential``), the variable DPM-Solver++ is written in.

For ``karras`` and ``log-snr``, sigma_max and sigma_min default to the schedule's own range (its largest
finite sigma and sigma_0); a value outside it is clamped to it with a warning, since the network never saw
such a noise level.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .diffusion import Diffusion

GRIDS = ("uniform", "karras", "log-snr")
RHO = 7.0
"""EDM's rho: the grid's steps shrink towards the data as sigma^(1/7) is evenly spaced."""
GRID_SETTINGS = ("grid", "rho", "sigma_max", "sigma_min")
"""What a sampler that declares ``grid=True`` at registration accepts beside its own settings."""
CHURN_SETTINGS = ("s_churn", "s_tmin", "s_tmax", "s_noise")
"""EDM's Algorithm 2 settings, which Euler and Heun declare: churn 0 (the default) is the ODE sampler."""


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = RHO) -> torch.Tensor:
    """EDM's eq. 5: ``n`` noise levels from sigma_max to sigma_min, evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``n`` noise levels evenly spaced in log sigma, i.e. in lambda = -log sigma (DPM-Solver's logSNR)."""
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()


@dataclass(frozen=True)
class Grid:
    """A grid choice and its settings; ``sigma_max`` / ``sigma_min`` None mean the schedule's own range."""

    kind: str = "uniform"
    rho: float = RHO
    sigma_max: float | None = None
    sigma_min: float | None = None

    def __post_init__(self) -> None:
        check_grid(self.kind, self.rho, self.sigma_max, self.sigma_min)

    @property
    def is_default(self) -> bool:
        """Whether this is today's grid: uniform timesteps over the schedule's whole range."""
        return self == Grid()

    def sigmas(self, diffusion: Diffusion, steps: int) -> torch.Tensor:
        """The ``steps`` noise levels of a karras or log-snr grid, within the schedule's range."""
        sigma_min, sigma_max = self.sigma_range(diffusion)
        if self.kind == "karras":
            return get_sigmas_karras(steps, sigma_min, sigma_max, self.rho)
        return get_sigmas_exponential(steps, sigma_min, sigma_max)

    def sigma_range(self, diffusion: Diffusion) -> tuple[float, float]:
        """(sigma_min, sigma_max): the ones given, clamped to the schedule's finite range with a warning."""
        finite = diffusion.sigmas[torch.isfinite(diffusion.sigmas)]
        low, high = float(finite[0]), float(finite[-1])
        sigma_min = clamped("sigma_min", self.sigma_min, low, high, default=low)
        sigma_max = clamped("sigma_max", self.sigma_max, low, high, default=high)
        if sigma_min >= sigma_max:
            raise ValueError(
                f"sigma_min ({sigma_min:g}) must be below sigma_max ({sigma_max:g}) within the schedule's "
                f"range [{low:.4g}, {high:.4g}]"
            )
        return sigma_min, sigma_max

    def timesteps(self, diffusion: Diffusion, steps: int) -> list[int] | list[float]:
        """The descending timesteps of the grid: DDIM's integers for ``uniform``, real-valued ones (the
        log-sigma interpolation's inverse) for the others."""
        if self.kind == "uniform":
            return ddim_timesteps(diffusion.num_timesteps, steps)
        check_steps(diffusion, steps)
        return diffusion.sigma_to_t(self.sigmas(diffusion, steps)).tolist()

    def label(self) -> str:
        """``karras-rho7``, ``log-snr-smax80-smin0.002``: for sample file names."""
        parts = [self.kind] + ([f"rho{self.rho:g}"] if self.kind == "karras" else [])
        if self.sigma_max is not None:
            parts.append(f"smax{self.sigma_max:g}")
        if self.sigma_min is not None:
            parts.append(f"smin{self.sigma_min:g}")
        return "-".join(parts)

    def describe(self) -> str:
        """``karras (rho 7)``, ``log-snr, sigma 0.002-80``: for tables and figure legends."""
        text = self.kind + (f" (rho {self.rho:g})" if self.kind == "karras" else "")
        if self.sigma_max is not None or self.sigma_min is not None:
            low = f"{self.sigma_min:g}" if self.sigma_min is not None else "min"
            high = f"{self.sigma_max:g}" if self.sigma_max is not None else "max"
            text += f", sigma {low}-{high}"
        return text


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps, evenly spaced over 0..T-1 and descending, always starting at T-1 (so sampling
    starts from the noise level the model was trained on) and, for steps >= 2, ending at 0. The grid every
    sampler is given (with steps = T it is every timestep)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be an integer in 1..T={num_timesteps}, got {steps!r}")
    if steps == 1:
        return [num_timesteps - 1]
    grid = torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long()
    return grid.flip(0).tolist()


def pop_grid(settings: dict) -> Grid:
    """The grid that a sampler's keyword settings name (``grid``, ``rho``, ``sigma_max``, ``sigma_min``),
    taken out of them so that only the sampler's own remain."""
    given = {name: settings.pop(name) for name in GRID_SETTINGS if name in settings}
    return Grid(given.pop("grid", "uniform"), **given)


def check_steps(diffusion: Diffusion, steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= diffusion.num_timesteps:
        raise ValueError(f"steps must be an integer in 1..T={diffusion.num_timesteps}, got {steps!r}")


def clamped(name: str, value: float | None, low: float, high: float, *, default: float) -> float:
    """``value`` within [low, high] (the schedule's range), with a warning that says so; ``default`` when
    None."""
    if value is None:
        return default
    inside = min(max(value, low), high)
    if inside != value:
        warnings.warn(
            f"{name} {value:g} is outside the schedule's noise levels [{low:.4g}, {high:.4g}]; "
            f"clamped to {inside:.4g}",
            stacklevel=3,
        )
    return inside


def check_grid(kind: object, rho: object, sigma_max: object, sigma_min: object) -> None:
    """The rules of a grid's settings, one message each, naming the setting, its value and what is allowed."""
    if kind not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {kind!r}")
    if not positive_number(rho):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    for name, value in (("sigma_max", sigma_max), ("sigma_min", sigma_min)):
        if value is not None and not positive_number(value):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if kind != "karras" and rho != RHO:
        raise ValueError(f"rho is the karras grid's; the {kind} grid has none (got rho={rho!r})")
    if kind == "uniform" and (sigma_max, sigma_min) != (None, None):
        raise ValueError(
            "sigma_max and sigma_min set the range of the karras and log-snr grids; the uniform grid is the "
            "schedule's own timesteps from T-1 to 0"
        )
    if sigma_max is not None and sigma_min is not None and sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be below sigma_max, got sigma_min={sigma_min!r} >= {sigma_max!r}")


def positive_number(value: object) -> bool:
    return finite_number(value) and value > 0


# ------------------------------------------------------------ the schedule at a grid's timesteps
def sigma_of(diffusion: Diffusion, t: int | float) -> float:
    """sigma at a grid timestep: the schedule's own value at an integer one (exactly what the samplers used
    before grids were real-valued), the log-sigma interpolation at a real-valued one."""
    if isinstance(t, int):
        return float(diffusion.sigmas[t])
    return float(diffusion.t_to_sigma(torch.tensor([t], dtype=torch.float64))[0])


def alpha_bar_of(diffusion: Diffusion, t: int | float) -> float:
    """alpha_bar at a grid timestep: the table's value at an integer one, 1 / (1 + sigma^2) at a real one."""
    if isinstance(t, int):
        return float(diffusion.alpha_bar[t])
    return 1.0 / (1.0 + sigma_of(diffusion, t) ** 2)


def vp_coefficients(diffusion: Diffusion, t: int | float) -> tuple[float, float, float]:
    """(alpha_t, sigma_t, lambda_t) of x_t = alpha_t x_0 + sigma_t eps, lambda = log(alpha_t / sigma_t): the
    tables' values at an integer timestep, from EDM's interpolated sigma at a real-valued one."""
    if isinstance(t, int):
        return (
            float(diffusion.sqrt_alpha_bar[t]),
            float(diffusion.sqrt_one_minus_alpha_bar[t]),
            -float(diffusion.log_sigmas[t]),
        )
    sigma = sigma_of(diffusion, t)
    return (1.0 + sigma**2) ** -0.5, (1.0 + sigma**-2) ** -0.5, -math.log(sigma)


# ------------------------------------------------------------------------ EDM's churn (Algorithm 2)
def check_churn(s_churn: float, s_tmin: float, s_tmax: float | None, s_noise: float) -> None:
    """EDM's Algorithm 2 settings: churn >= 0, noise > 0, 0 <= S_tmin <= S_tmax (None: no upper bound)."""
    for name, value, low in (("s_churn", s_churn, 0.0), ("s_tmin", s_tmin, 0.0)):
        if not (finite_number(value) and value >= low):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not (finite_number(s_noise) and s_noise > 0):
        raise ValueError(f"s_noise must be a positive number, got {s_noise!r}")
    if s_tmax is not None and not (finite_number(s_tmax) and s_tmax >= s_tmin):
        raise ValueError(f"s_tmax must be a finite number >= s_tmin ({s_tmin!r}), got {s_tmax!r}")


def finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def gammas(sigmas: list[float], s_churn: float, s_tmin: float, s_tmax: float | None) -> list[float]:
    """EDM's gamma_i = min(S_churn / N, sqrt(2) - 1) where S_tmin <= sigma_i <= S_tmax, else 0."""
    steps = len(sigmas) - 1
    gamma = min(s_churn / steps, math.sqrt(2) - 1) if s_churn > 0 else 0.0
    high = math.inf if s_tmax is None else s_tmax
    return [gamma if s_tmin <= sigma <= high else 0.0 for sigma in sigmas[:-1]]
