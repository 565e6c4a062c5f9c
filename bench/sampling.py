"""Samplers for any callable ``model(x_t, t) -> prediction``.

Every sampler is a plain function with one signature (as in k-diffusion), registered by name:

    sampler(diffusion, denoise, x_T, *, steps, eta, variance, generator, progress) -> x_0

where ``denoise(x_t, t) -> (x0_hat, eps_hat)`` already hides the prediction type, so a sampler is only
its update rule and its sequence of timesteps. ``sample()`` is the entry point that checks the options,
draws x_T and runs a sampler under ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .diffusion import Diffusion, check_prediction
from .registry import Registry

Denoise = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
Sampler = Callable[..., torch.Tensor]

SAMPLERS: Registry[Sampler] = Registry("sampler", "bench.samplers")
VARIANCES = ("beta", "posterior")


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device and moved to ``x``'s, so a
    CPU generator gives the same samples on any device."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps, evenly spaced over 0..T-1 and descending, always starting at T-1 (so sampling
    starts from the noise level the model was trained on) and, for steps >= 2, ending at 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be an integer in 1..T={num_timesteps}, got {steps!r}")
    if steps == 1:
        return [num_timesteps - 1]
    grid = torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long()
    return grid.flip(0).tolist()


@SAMPLERS.register("ancestral")
def ancestral(
    diffusion: Diffusion,
    denoise: Denoise,
    x: torch.Tensor,
    *,
    steps: int | None,
    eta: float,
    variance: str,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """DDPM Algorithm 2 over all T steps: x_{t-1} = posterior mean at x0_hat + sigma_t z."""
    T = diffusion.num_timesteps
    if steps not in (None, T):
        raise ValueError(
            f"the ancestral sampler runs all T={T} steps, got steps={steps!r}; "
            "use method='ddim' (eta=1 for a stochastic sampler) for fewer steps"
        )
    sigmas = (0.5 * diffusion._log_variance(variance)).exp().tolist()
    coef_x0 = diffusion.posterior_mean_coef_x0.tolist()
    coef_xt = diffusion.posterior_mean_coef_xt.tolist()
    for t in tqdm(range(T - 1, -1, -1), desc="ancestral", disable=not progress, leave=False):
        x0_hat, _ = denoise(x, t)
        x = coef_x0[t] * x0_hat + coef_xt[t] * x
        if t > 0:  # no noise at the last step (Algorithm 2, line 3)
            x = x + sigmas[t] * randn_like(x, generator)
    return x


@SAMPLERS.register("ddim")
def ddim(
    diffusion: Diffusion,
    denoise: Denoise,
    x: torch.Tensor,
    *,
    steps: int | None,
    eta: float,
    variance: str,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) on evenly spaced timesteps; eta=0 deterministic, eta=1 DDPM-like."""
    T = diffusion.num_timesteps
    seq = ddim_timesteps(T, T if steps is None else steps)
    alpha_bar = diffusion.alpha_bar.tolist()
    for i, t in enumerate(tqdm(seq, desc="ddim", disable=not progress, leave=False)):
        x0_hat, eps_hat = denoise(x, t)
        ab_t = alpha_bar[t]
        ab_s = alpha_bar[seq[i + 1]] if i + 1 < len(seq) else 1.0
        sigma = eta * ((1 - ab_s) / (1 - ab_t)) ** 0.5 * (1 - ab_t / ab_s) ** 0.5
        x = ab_s**0.5 * x0_hat + max(1 - ab_s - sigma**2, 0.0) ** 0.5 * eps_hat
        if sigma > 0:
            x = x + sigma * randn_like(x, generator)
    return x


@SAMPLERS.register("one_shot")
def one_shot(
    diffusion: Diffusion,
    denoise: Denoise,
    x: torch.Tensor,
    *,
    steps: int | None,
    eta: float,
    variance: str,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """One network call: x_T straight to x0_hat (the direct "predict the image from pure noise" design)."""
    if steps not in (None, 1):
        raise ValueError(f"the one_shot sampler makes exactly one step, got steps={steps!r}")
    x0_hat, _ = denoise(x, diffusion.num_timesteps - 1)
    return x0_hat


def make_denoise(
    diffusion: Diffusion,
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    prediction: str,
    *,
    clip_x0: bool,
) -> Denoise:
    """Wrap ``model`` so that samplers see (x0_hat, eps_hat) whatever the model predicts."""

    def denoise(x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        output = model(x_t, tt).to(x_t.dtype)
        return diffusion.split_prediction(prediction, output, x_t, tt, clip_x0=clip_x0)

    return denoise


def sample(
    diffusion: Diffusion,
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    *,
    method: str = "ancestral",
    steps: int | None = None,
    prediction: str = "eps",
    eta: float = 0.0,
    variance: str = "beta",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    x_T: torch.Tensor | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Draw ``shape[0]`` samples from ``model`` with the sampler ``method``.

    ``model(x_t, t)`` returns the quantity named by ``prediction`` (``eps``, ``x0`` or ``v``). Sampling is
    deterministic given ``generator``; ``x_T`` replaces the initial noise when given. ``clip_x0`` clips the x0
    estimate to [-1, 1] at every step (for image data).
    """
    sampler = SAMPLERS.get(method)
    check_prediction(prediction)
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    if diffusion.zero_terminal_snr and prediction == "eps":
        raise ValueError(
            "a zero-terminal-SNR schedule has alpha_bar[T-1] = 0, where x0 cannot be recovered from an eps "
            "prediction; use prediction 'v' or 'x0'"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or min(shape) < 1:
        raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape!r}")
    device = (
        torch.device(device)
        if device is not None
        else (x_T.device if x_T is not None else torch.device("cpu"))
    )
    with torch.inference_mode():
        if x_T is None:
            x = torch.randn(shape, generator=generator, device=generator.device if generator else device).to(
                device
            )
        elif tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        else:
            x = x_T.to(device=device, dtype=torch.float32)
        denoise = make_denoise(diffusion, model, prediction, clip_x0=clip_x0)
        return sampler(
            diffusion,
            denoise,
            x,
            steps=steps,
            eta=float(eta),
            variance=variance,
            generator=generator,
            progress=progress,
        )
