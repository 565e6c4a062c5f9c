"""The one wrapper around a network, as EDM wraps its networks once (``EDMPrecond``): a :class:`Denoiser`
knows which quantity its network predicts (``eps``, ``x0`` or ``v``) and turns any output into the pair
``(x0_hat, eps_hat)``. The training loss, the samplers and the likelihood bound take this wrapper, so the
prediction type is resolved here and nowhere else.

The conversions are those of Ho et al. 2020 (eps) and Salimans & Ho 2022 (v), written out in
:class:`bench.diffusion.Diffusion`; this module only chooses among them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .diffusion import Diffusion

PREDICTIONS = ("eps", "x0", "v")
"""What a network may predict: the noise, the clean image, or v = sqrt(ab) eps - sqrt(1 - ab) x0."""

Net = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
    return prediction


@dataclass(frozen=True)
class Denoiser:
    """``net(x_t, t)`` as a denoiser of ``diffusion``: ``denoiser(x_t, t) -> (x0_hat, eps_hat)``.

    ``net`` is any callable (a module, its DDP or compiled wrapper, an analytic oracle). With ``clip_x0`` the
    x0 estimate is clipped to the data range [-1, 1] and eps recomputed from it (as the DDPM and DDIM
    reference code do when sampling images), so the two stay consistent.
    """

    net: Net
    diffusion: Diffusion
    prediction: str = "eps"
    clip_x0: bool = False

    def __post_init__(self) -> None:
        check_prediction(self.prediction)

    @classmethod
    def of(cls, net: torch.nn.Module, diffusion: Diffusion, *, clip_x0: bool = False) -> Denoiser:
        """Wrap a denoiser plugin's module with the prediction its recipe declares."""
        from denoisers import recipe_of

        return cls(net, diffusion, recipe_of(net).prediction, clip_x0)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for (x0, eps, t): the regression target of the training loss."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return self.diffusion.v_from(x0, eps, t)

    def split(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a network output into (x0_hat, eps_hat)."""
        d = self.diffusion
        if self.prediction == "eps":
            x0, eps = d.x0_from_eps(x_t, t, output), output
        elif self.prediction == "x0":
            x0, eps = output, None
        else:
            x0, eps = d.x0_from_v(x_t, t, output), d.eps_from_v(x_t, t, output)
        if self.clip_x0:
            x0, eps = x0.clamp(-1.0, 1.0), None
        if eps is None:
            eps = d.eps_from_x0(x_t, t, x0)
        return x0, eps

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) at ``x_t``; an int ``t`` is that timestep for every item (as samplers call)."""
        if isinstance(t, int):
            t = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        output = self.net(x_t, t).to(x_t.dtype)
        return self.split(output, x_t, t)


def training_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    t: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    x_t: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L_simple per example: mean over pixels of ``|| target - net(x_t, t) ||^2`` (Ho et al. eq. 14).

    For eps prediction this is the seed's ``E || eps - eps_theta(x_t, t) ||^2``; other targets use the same
    unweighted MSE on their own quantity. ``x_t`` given instead of drawn from q(x_t | x0) is a coupled pair
    (x0 made from that x_t by a teacher); eps is then the noise that pair implies.
    """
    if x_t is not None:
        eps = denoiser.diffusion.eps_from_x0(x_t, t, x0)
    else:
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = denoiser.diffusion.q_sample(x0, t, eps)
    output = denoiser.net(x_t, t)
    if output.shape != x0.shape:
        raise ValueError(f"the model returned shape {tuple(output.shape)}, expected {tuple(x0.shape)}")
    target = denoiser.target(x0, eps, t)
    return F.mse_loss(output.float(), target.float(), reduction="none").flatten(1).mean(1)
