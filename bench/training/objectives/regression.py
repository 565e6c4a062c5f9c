"""The regression objective (DDPM's L_simple and its weightings): the network's output against the target
its recipe predicts, ``|| target - net(x_t, t) ||^2``, at the noise levels the run draws, with the loss
weighting the run chooses. Every design but the consistency and progressive ones trains with it; with a
teacher's (noise, image) pairs it is knowledge distillation (one call from pure noise) or reflow (the pair's
path at every noise level), and with labels it trains a class-conditional model for classifier-free
guidance."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from denoisers import Recipe

from ...config import TrainConfig
from ...process.denoiser import MIN_SNR_GAMMA, NULL_LABEL, PREDICTIONS, Denoiser, ImpossibleDesign
from ...process.diffusion import Diffusion
from ..noise_levels import training_timesteps
from .base import OBJECTIVES, Batch, Declaration, ObjectiveContext, StatelessObjective


def training_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    t: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    x_t: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    weight: str = "uniform",
    min_snr_gamma: float = MIN_SNR_GAMMA,
) -> torch.Tensor:
    """The per-example loss: mean over pixels of ``|| target - net(x_t, t) ||^2`` (Ho et al. eq. 14), times
    the loss weight of each example's noise level (:meth:`Denoiser.loss_weight`; none for ``uniform``).

    For eps prediction and uniform weight this is the seed's ``E || eps - eps_theta(x_t, t) ||^2``. ``x_t``
    given instead of drawn from q(x_t | x0) is a coupled pair (x0 made from that x_t by a teacher); eps is
    then the noise that pair implies. ``labels`` (with :data:`NULL_LABEL` where label dropout chose the null
    class) trains a conditional network.
    """
    if x_t is not None:
        eps = denoiser.diffusion.eps_from_x0(x_t, t, x0)
    else:
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = denoiser.diffusion.q_sample(x0, t, eps)
    net_input = denoiser.net_input(x_t, t)
    output = denoiser.net(net_input, t) if labels is None else denoiser.net(net_input, t, labels)
    if output.shape != x0.shape:
        raise ValueError(f"the model returned shape {tuple(output.shape)}, expected {tuple(x0.shape)}")
    target = denoiser.target(x0, eps, t)
    loss = F.mse_loss(output.float(), target.float(), reduction="none").flatten(1).mean(1)
    if weight != "uniform":
        snr = denoiser.diffusion.snr_at(t)
        loss = loss * denoiser.loss_weight(weight, snr, gamma=min_snr_gamma).to(loss.device, loss.dtype)
    return loss


def drop_labels(labels: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Classifier-free guidance's training (Ho & Salimans 2022): each label replaced by the null label with
    probability ``p``, drawn from the trainer's generator (so a resumed run drops the same ones)."""
    drop = torch.rand(labels.shape[0], generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)


class Regression(StatelessObjective):
    """The loss on the recipe's prediction target, at the noise levels and with the weighting of the run's
    training config; its draws (timesteps, label dropout, noise) come from the trainer's generator in that
    order, so a resumed run draws the same ones."""

    def __init__(self, recipe: Recipe, diffusion: Diffusion, config: TrainConfig) -> None:
        self.recipe = recipe
        self.diffusion = diffusion
        self.config = config

    def loss(self, student: Denoiser, batch: Batch, step: int, generator: torch.Generator) -> torch.Tensor:
        """Per-example losses of ``batch``: x_t drawn from q(x_t | x0), or a teacher's pair (x_T itself at
        t = T-1, or for reflow the noise end of the path at every t)."""
        cfg, x0 = self.config, batch.x0
        t = training_timesteps(self.recipe, self.diffusion, cfg, x0.shape[0], generator, x0.device)
        labels = drop_labels(batch.labels, cfg.label_dropout, generator) if batch.labels is not None else None
        reflow = batch.inputs is not None and self.recipe.reflows
        return training_loss(
            student,
            x0,
            t,
            eps=batch.inputs if reflow else None,
            x_t=None if reflow else batch.inputs,
            labels=labels,
            generator=generator,
            weight=cfg.loss_weight,
            min_snr_gamma=cfg.min_snr_gamma,
        )


def check_regression(recipe: Recipe, diffusion: Diffusion, config: TrainConfig) -> None:
    """Refuse a loss weighting or noise-level distribution that means nothing for this design."""
    if recipe.timesteps == "terminal" and (config.loss_weight, config.noise_levels) != ("uniform", "uniform"):
        raise ValueError(
            "this denoiser trains at t = T-1 only (pure noise): a loss weighting over noise levels or "
            "another noise-level distribution does not apply there; use --loss-weight uniform "
            "--noise-levels uniform"
        )
    if diffusion.zero_terminal_snr and recipe.prediction == "eps" and config.loss_weight == "edm":
        raise ImpossibleDesign(
            "loss weight 'edm' on an eps target is 1 + 1 / (sigma_data^2 SNR), infinite where SNR = 0 (zero "
            "terminal SNR); use target v, x0 or edm"
        )


@OBJECTIVES.register(
    "regression",
    declares=Declaration(predictions=PREDICTIONS, pairs=True, labels=True, check=check_regression),
)
def regression(context: ObjectiveContext) -> Regression:
    """DDPM's L_simple on the prediction target, at the run's noise levels and with its loss weighting."""
    return Regression(context.recipe, context.diffusion, context.config.train)
