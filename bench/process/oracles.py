"""Analytic oracles: data whose exact denoiser is known in closed form, so that a sampler (built in or a
plugin) is measured against exact numbers rather than against another sampler.

For Gaussian data x0 ~ N(m, s^2) per dimension, E[x0 | x_t] is linear in x_t, so the MSE-optimal network
of every target is known; in EDM's variables (y = x_t / sqrt(alpha_bar) = x0 + sigma eps) the exact
denoiser is D(y; sigma) = m + s^2 / (s^2 + sigma^2) (y - m), and the probability-flow ODE keeps
(y - m) / sqrt(s^2 + sigma^2) constant along its path, so where any deterministic sampler should land is
known too (Karras et al. 2022, eq. 3; the Gaussian case is their appendix B's example).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .denoiser import NULL_LABEL, SIGMA_DATA, Denoiser
from .diffusion import Diffusion
from .grids import Grid, sigma_of
from .sampling import SAMPLERS


@dataclass(frozen=True)
class GaussianData:
    """Data N(mean, std^2) in every dimension."""

    mean: float = 0.4
    std: float = 0.3

    def network(
        self, diffusion: Diffusion, prediction: str = "eps", sigma_data: float = SIGMA_DATA
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The exact minimiser of each target's L_simple: E[target | x_t], for integer or real-valued
        timesteps (through the schedule's log-sigma interpolation, as the samplers' grids call it). For
        ``edm`` it is EDM's F in EDM's own variables (Table 1): the input is c_in y, so
        y = input sqrt(sigma^2 + sd^2), and F = (D(y; sigma) - c_skip y) / c_out; for ``flow`` the velocity
        E[eps - x0 | x_t] from the flow path's input r x_t, so x_t = input (sqrt(ab) + sqrt(1 - ab))."""
        m, s = self.mean, self.std

        def net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            shape = (-1, *[1] * (x_t.ndim - 1))
            if prediction == "edm":
                sigma, sd = diffusion.sigma_at(t).view(shape).to(x_t), sigma_data
                y = x_t * (sigma**2 + sd**2).sqrt()
                denoised = m + s**2 / (s**2 + sigma**2) * (y - m)
                c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
                return (denoised - c_skip * y) / c_out
            a, b = diffusion.coefficients(t, x_t)
            if prediction == "flow":
                x_t = x_t * (a + b)
            resid = (x_t - a * m) / (a**2 * s**2 + b**2)
            eps, x0 = b * resid, m + a * s**2 * resid
            return {"eps": eps, "x0": x0, "v": a * eps - b * x0, "flow": eps - x0}[prediction]

        return net

    def ode_endpoint(
        self, diffusion: Diffusion, x_T: torch.Tensor, sigma_start: float | None = None
    ) -> torch.Tensor:
        """Where a deterministic sampler should land from x_T at ``sigma_start`` (by default sigma_{T-1}, the
        start of a grid over the schedule's whole range): the exact ODE solution at sigma_0 (the grid's last
        timestep), then the exact denoiser there, which is the last step every sampler takes (its x0 estimate
        at t = 0). The invariant (y - m) / sqrt(s^2 + sigma^2) is written in x_t = sqrt(ab) y, as (x_t -
        sqrt(ab) m) / sqrt(ab s^2 + 1 - ab), so that it holds at sigma = inf (pure noise) too."""
        m, s = self.mean, self.std
        sigma_max = diffusion.sigmas[-1].item() if sigma_start is None else sigma_start
        sigma_min = diffusion.sigmas[0].item()
        a = 0.0 if math.isinf(sigma_max) else (1 + sigma_max**2) ** -0.5
        invariant = (x_T - a * m) / math.sqrt(a**2 * s**2 + 1 - a**2)
        y_min = m + invariant * math.sqrt(s**2 + sigma_min**2)
        return m + s**2 / (s**2 + sigma_min**2) * (y_min - m)

    def sampler_error(
        self,
        diffusion: Diffusion,
        method: str,
        steps: int,
        *,
        prediction: str = "eps",
        n: int = 64,
        seed: int = 0,
        grid: Grid | None = None,
        **settings: float,
    ) -> float:
        """The largest distance, over ``n`` seeded noises, between where ``method`` with ``steps`` steps on
        ``grid`` (DDIM's uniform timesteps by default) and the exact network lands and the exact ODE
        endpoint (float64 throughout). A grid over the schedule's whole range starts at sigma_{T-1} and ends
        at sigma_0 as the endpoint does."""
        x_T = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        denoiser = Denoiser(self.network(diffusion, prediction), diffusion, prediction)
        timesteps = (grid or Grid()).timesteps(diffusion, steps)
        x = SAMPLERS.get(method)(denoiser, x_T.clone(), timesteps, **settings)
        start = sigma_of(diffusion, timesteps[0])
        return (x - self.ode_endpoint(diffusion, x_T, start)).abs().max().item()


@dataclass(frozen=True)
class GaussianMixture:
    """Class-conditional data for classifier-free guidance: an image is of class k (label k) with probability
    ``weights[k]``, and given its class it is N(means[k], stds[k]^2) in every dimension. The class is drawn
    once per image, so it is shared by all the image's dimensions (as a digit's class is by its pixels).

    With one class the conditional and the unconditional model coincide; with two well-separated classes
    guidance has a visible, exactly computable effect: the guided x0 estimate of class k moves away from the
    other classes by (scale - 1) times the gap between the conditional and the unconditional estimate.
    """

    means: tuple[float, ...] = (-0.5, 0.5)
    stds: tuple[float, ...] = (0.2, 0.2)
    weights: tuple[float, ...] = (0.5, 0.5)

    def __post_init__(self) -> None:
        k = len(self.means)
        if k < 1 or len(self.stds) != k or len(self.weights) != k:
            raise ValueError(
                f"means, stds and weights need one entry per class, got {len(self.means)}, "
                f"{len(self.stds)} and {len(self.weights)}"
            )
        if min(self.stds) <= 0 or min(self.weights) <= 0 or not math.isclose(sum(self.weights), 1.0):
            raise ValueError(
                f"stds must be > 0 and weights > 0 summing to 1, got stds={self.stds}, weights={self.weights}"
            )

    @property
    def classes(self) -> tuple[GaussianData, ...]:
        """The data of each class: ``classes[k]`` is what label k asks for."""
        return tuple(GaussianData(m, s) for m, s in zip(self.means, self.stds, strict=True))

    def responsibilities(self, diffusion: Diffusion, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p(class k | x_t), shape (B, K), float64: Bayes' rule with the class-k marginal of x_t = sqrt(ab) x0
        + sqrt(1 - ab) eps, N(sqrt(ab) m_k, ab s_k^2 + 1 - ab) in each dimension, whose log densities add up
        over the item's dimensions because they share the class."""
        x = x_t.double().flatten(1)  # (B, D)
        a, b = diffusion.coefficients(t, x)  # (B, 1) each
        m, s, w = (
            torch.tensor(v, dtype=torch.float64, device=x.device)
            for v in (self.means, self.stds, self.weights)
        )
        var = (a**2 * s**2 + b**2).unsqueeze(2)  # (B, K, 1)
        sq = (x.unsqueeze(1) - (a * m).unsqueeze(2)) ** 2  # (B, K, D)
        log_density = -0.5 * (sq / var + var.log()).sum(2)  # (B, K), up to a constant shared by the classes
        return torch.softmax(w.log() + log_density, dim=1)

    def network(
        self, diffusion: Diffusion, prediction: str = "eps", sigma_data: float = SIGMA_DATA
    ) -> Callable[..., torch.Tensor]:
        """The exact class-conditional network ``net(x_t, t, y=None)`` of each target, for integer timesteps:
        for label k, E[target | x_t, class k], which is class k's Gaussian oracle; for
        :data:`~bench.process.denoiser.NULL_LABEL` (or no labels), E[target | x_t] of the mixture.

        Why the unconditional output is exact: by the tower rule E[target | x_t] = sum_k p(k | x_t)
        E[target | x_t, k] (:meth:`responsibilities`), and with x_t fixed every target (eps, x0, v and EDM's
        F = (x0 - c_skip y) / c_out, the velocity eps - x0) is affine in (x0, eps), so mixing the classes'
        outputs with weights that sum to 1 is mixing their posterior means. For ``edm`` the network sees
        c_in y, so x_t is recovered as c_in y sqrt(1 - ab + ab sd^2) before the responsibilities are
        computed; for ``flow`` it sees r x_t, so x_t is its input times sqrt(ab) + sqrt(1 - ab)."""
        per_class = [data.network(diffusion, prediction, sigma_data) for data in self.classes]
        num_classes = len(per_class)

        def net(net_input: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            outputs = torch.stack([f(net_input, t) for f in per_class])  # (K, B, ...)
            x_t = net_input
            if prediction in ("edm", "flow"):
                a, b = diffusion.coefficients(t, net_input)
                x_t = net_input * ((b**2 + a**2 * sigma_data**2).sqrt() if prediction == "edm" else a + b)
            r = self.responsibilities(diffusion, x_t, t).to(outputs.dtype)  # (B, K)
            uncond = (r.T.reshape(*r.T.shape, *[1] * (outputs.ndim - 2)) * outputs).sum(0)
            if y is None:
                return uncond
            y = y.to(device=net_input.device, dtype=torch.long)
            if y.shape != (net_input.shape[0],):
                raise ValueError(f"labels have shape {tuple(y.shape)}, expected ({net_input.shape[0]},)")
            bad = (y < NULL_LABEL) | (y >= num_classes)
            if bool(bad.any()):
                raise ValueError(
                    f"labels must be in 0..{num_classes - 1} or NULL_LABEL ({NULL_LABEL}), "
                    f"got {sorted(set(y[bad].tolist()))}"
                )
            cond = outputs[y.clamp(min=0), torch.arange(y.shape[0], device=y.device)]
            null = (y == NULL_LABEL).view(-1, *[1] * (uncond.ndim - 1))
            return torch.where(null, uncond, cond)

        return net
