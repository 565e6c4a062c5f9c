"""DDPM math with 0-based timesteps (t = 0 ... T-1): forward process, posterior, the conversions between
prediction targets, the reverse process and the variational-bound terms (Ho et al. 2020; Nichol & Dhariwal
2021), and the same process in EDM's variables (Karras et al. 2022): sigma_t = sqrt((1 - alpha_bar_t) /
alpha_bar_t) and a real-valued t between the grid points. Which target a network predicts is resolved once,
by :class:`bench.process.denoiser.Denoiser`; the reverse process here takes any ``denoise(x_t, t) -> (x0_hat,
eps_hat)``.

Everything here is a closed form of the schedule. Coefficients are precomputed once in float64 and cast to
the data's dtype at use, so fp32/bf16 training sees the same schedule as the float64 tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

VARIANCES = ("beta", "posterior")
"""The fixed reverse variances: sigma^2 = beta ("fixedlarge") or the posterior's beta~ ("fixedsmall")."""

Denoise = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``denoise(x_t, t) -> (x0_hat, eps_hat)``, what :class:`bench.process.denoiser.Denoiser` provides."""


def gather(coef: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``coef[t]`` shaped (B, 1, ..., 1) to broadcast against ``x``, in ``x``'s dtype and device (the seed's
    ``gather``)."""
    return coef.to(x.device)[t].to(x.dtype).reshape(t.shape[0], *([1] * (x.ndim - 1)))


class Diffusion:
    """A discrete Gaussian diffusion defined by its betas (float64, shape [T], each in (0, 1]).

    Attribute names follow the paper: ``betas``, ``alphas``, ``alpha_bar`` (= prod alphas[:t+1]),
    ``alpha_bar_prev`` (alpha_bar[t-1], with 1 at t = 0) and the posterior q(x_{t-1} | x_t, x_0) terms.
    """

    def __init__(self, betas: torch.Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(
                f"betas must be a 1-D tensor with T >= 1 entries, got shape {tuple(betas.shape)}"
            )
        bad = ~((betas > 0) & (betas <= 1))
        if bad.any() or not torch.isfinite(betas).all():
            i = int(bad.nonzero()[0]) if bad.any() else 0
            raise ValueError(f"every beta must be in (0, 1], got betas[{i}] = {betas[i].item()!r}")
        if (betas[:-1] >= 1).any():
            raise ValueError("only the last beta may equal 1 (zero terminal SNR); earlier betas must be < 1")
        self.num_timesteps = T = betas.numel()
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1.0 - self.alpha_bar).sqrt()

        # q(x_{t-1} | x_t, x_0) = N(coef_x0 * x_0 + coef_xt * x_t, posterior_variance)   (Ho et al. eq. 6-7)
        self.posterior_variance = betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        self.posterior_mean_coef_x0 = self.alpha_bar_prev.sqrt() * betas / (1.0 - self.alpha_bar)
        self.posterior_mean_coef_xt = (
            self.alphas.sqrt() * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        )
        # The variance is 0 at t = 0; its log is clipped to the value at t = 1, as improved-diffusion does.
        clip_from = self.posterior_variance[1] if T > 1 else betas[0]
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([clip_from.reshape(1), self.posterior_variance[1:]])
        )
        # The "large" reverse variance choice sigma^2 = beta (with the t = 0 value replaced the same way).
        self.log_beta_clipped = torch.log(torch.cat([clip_from.reshape(1), betas[1:]]))
        # EDM's noise level of each timestep, increasing in t (inf where alpha_bar = 0: zero terminal SNR).
        self.sigmas = ((1.0 - self.alpha_bar) / self.alpha_bar).sqrt()
        self.log_sigmas = self.sigmas.log()
        self._on_device: dict[tuple[str, torch.device], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"Diffusion(T={self.num_timesteps}, alpha_bar[-1]={self.alpha_bar[-1].item():.3g})"

    @property
    def zero_terminal_snr(self) -> bool:
        return bool(self.alpha_bar[-1] == 0)

    def _check_t(self, t: torch.Tensor, x: torch.Tensor, *, real: bool = False) -> None:
        """``t`` is a [B] tensor of integer timesteps, or with ``real`` also of real-valued ones."""
        integer = isinstance(t, torch.Tensor) and t.dtype in (torch.int64, torch.int32)
        if not (integer or (real and isinstance(t, torch.Tensor) and t.is_floating_point())):
            kind = "an integer (Long) or real-valued" if real else "an integer (Long)"
            raise ValueError(f"t must be {kind} tensor of timesteps, got {t!r:.80}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(
                f"t must have shape [B] = [{x.shape[0]}] (one timestep per item), got {tuple(t.shape)}"
            )

    # ------------------------------------------------------------------------------ EDM's variables
    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        """A float64 table (``sigmas``, ``log_sigmas``) on ``device``, copied there once, not every step."""
        key = (name, device)
        if key not in self._on_device:
            self._on_device[key] = getattr(self, name).to(device)
        return self._on_device[key]

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma at a real-valued t in [0, T-1]: log sigma interpolated linearly between the two neighbouring
        integer timesteps (k-diffusion's ``DiscreteSchedule.t_to_sigma``); float64, on t's device."""
        t = torch.as_tensor(t).double()
        log_sigmas = self._table("log_sigmas", t.device)
        if self.num_timesteps == 1:
            return log_sigmas[0].exp().expand_as(t)
        low = t.floor().long().clamp(0, self.num_timesteps - 2)
        w = t - low
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        # on a grid point exactly, that point's sigma (also where the next one is infinite)
        log_sigma = torch.where(w <= 0, lo, torch.where(w >= 1, hi, lo + w * (hi - lo)))
        return log_sigma.exp()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The real-valued t whose interpolated sigma is ``sigma`` (the inverse of :meth:`t_to_sigma`),
        clamped to the schedule's range [sigma_0, sigma_{T-1}]; float64, on sigma's device."""
        return self.log_sigma_to_t(torch.as_tensor(sigma).double().log())

    def log_sigma_to_t(self, log_sigma: torch.Tensor) -> torch.Tensor:
        """:meth:`sigma_to_t` of exp(``log_sigma``). With zero terminal SNR, sigma_{T-1} is infinite and the
        interpolation between T-2 and T-1 is flat until it: every finite sigma above sigma_{T-2} maps to
        T-2, and only an infinite one to T-1."""
        log_sigma = log_sigma.double()
        log_sigmas = self._table("log_sigmas", log_sigma.device)
        if self.num_timesteps == 1:
            return torch.zeros_like(log_sigma)
        log_sigma = log_sigma.clamp(log_sigmas[0], log_sigmas[-1])
        high = torch.searchsorted(log_sigmas, log_sigma).clamp(1, self.num_timesteps - 1)
        lo, hi = log_sigmas[high - 1], log_sigmas[high]
        w = torch.where(log_sigma >= hi, 1.0, (log_sigma - lo) / (hi - lo))
        return (high - 1) + w

    def sigma_at(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t per item, float64 on t's device: the grid value for integer t, interpolated for real t."""
        if t.is_floating_point():
            return self.t_to_sigma(t)
        return self._table("sigmas", t.device)[t]

    def snr_at(self, t: torch.Tensor) -> torch.Tensor:
        """SNR = alpha_bar / (1 - alpha_bar) = 1 / sigma^2 per item (0 at a zero-terminal-SNR end)."""
        return self.sigma_at(t).pow(-2)

    def coefficients(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) shaped to broadcast against ``x``, for integer t (the
        precomputed grid) or real t (through the interpolated sigma: alpha_bar = 1 / (1 + sigma^2))."""
        if not t.is_floating_point():
            return gather(self.sqrt_alpha_bar, t, x), gather(self.sqrt_one_minus_alpha_bar, t, x)
        sigma = self.t_to_sigma(t)
        shape = (t.shape[0], *([1] * (x.ndim - 1)))
        a = (1.0 + sigma.pow(2)).rsqrt()
        b = (1.0 + sigma.pow(-2)).rsqrt()  # sqrt(sigma^2 / (1 + sigma^2)), 1 where sigma is infinite
        return a.to(x.device, x.dtype).reshape(shape), b.to(x.device, x.dtype).reshape(shape)

    # ----------------------------------------------------------------------------------- forward process
    def q_xt_x0(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I); t integer or
        real-valued (:meth:`coefficients`)."""
        self._check_t(t, x0, real=True)
        if t.is_floating_point():
            a, b = self.coefficients(t, x0)
            return a * x0, b * b
        mean = gather(self.sqrt_alpha_bar, t, x0) * x0
        var = gather(1.0 - self.alpha_bar, t, x0)
        return mean, var

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) as ``mean + sqrt(var) * eps`` (reparameterised, so the loss sees eps)."""
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif eps.shape != x0.shape:
            raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
        mean, var = self.q_xt_x0(x0, t)
        return mean + var.sqrt() * eps

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7)."""
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 and x_t must have one shape, got {tuple(x0.shape)} and {tuple(x_t.shape)}")
        self._check_t(t, x_t)
        mean = (
            gather(self.posterior_mean_coef_x0, t, x_t) * x0
            + gather(self.posterior_mean_coef_xt, t, x_t) * x_t
        )
        return mean, gather(self.posterior_variance, t, x_t)

    # ---------------------------------------------------------------------------- prediction targets
    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar); undefined where alpha_bar = 0."""
        a, b = self.coefficients(t, x_t)
        return (x_t - b * eps) / a

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)."""
        a, b = self.coefficients(t, x_t)
        return (x_t - a * x0) / b

    def v_from(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022)."""
        a, b = self.coefficients(t, x0)
        return a * eps - b * x0

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
        a, b = self.coefficients(t, x_t)
        return a * x_t - b * v

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
        a, b = self.coefficients(t, x_t)
        return b * x_t + a * v

    # ------------------------------------------------------------------------------ reverse process
    def p_mean_variance(
        self, denoise: Denoise, x_t: torch.Tensor, t: torch.Tensor, *, variance: str = "beta"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, log-variance and x0_hat of p(x_{t-1} | x_t) with a fixed variance.

        The mean is the posterior mean at x0_hat, which equals DDPM Algorithm 2's
        ``(x_t - beta / sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha)``. ``variance`` is ``"beta"``
        (sigma^2 = beta_t, "fixedlarge") or ``"posterior"`` (sigma^2 = beta~_t, "fixedsmall").
        """
        x0_hat, _ = denoise(x_t, t)
        mean, _ = self.q_posterior(x0_hat, x_t, t)
        log_var = gather(self.reverse_log_variance(variance), t, x_t)
        return mean, log_var, x0_hat

    def reverse_log_variance(self, variance: str) -> torch.Tensor:
        """log sigma_t^2 of the reverse process for every t: ``"beta"`` or ``"posterior"`` (see above)."""
        if variance == "beta":
            return self.log_beta_clipped
        if variance == "posterior":
            return self.posterior_log_variance_clipped
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")

    # ------------------------------------------------------------------------- variational bound
    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per example, in nats (summed over dimensions)."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, var = self.q_xt_x0(x0, t)
        kl = normal_kl(mean, torch.log(var).expand_as(mean), torch.zeros_like(mean), torch.zeros_like(mean))
        return kl.flatten(1).sum(1)

    def vb_term(
        self,
        denoise: Denoise,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        variance: str = "beta",
    ) -> torch.Tensor:
        """One term of the bound per example, in nats: L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for
        t > 0 and the decoder NLL L_0 = -log p(x_0 | x_1) (discretised Gaussian over 256 bins) at t = 0."""
        true_mean, _ = self.q_posterior(x0, x_t, t)
        true_log_var = gather(self.posterior_log_variance_clipped, t, x_t)
        mean, log_var, _ = self.p_mean_variance(denoise, x_t, t, variance=variance)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).sum(1)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).flatten(1).sum(1)
        return torch.where(t == 0, nll, kl)


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, *, bins: int = 256
) -> torch.Tensor:
    """Elementwise log-probability of data ``x`` in [-1, 1], quantised to ``bins`` levels, under
    N(means, exp(log_scales)^2) integrated over each level's bin; the edge bins extend to +-infinity
    (Ho et al. 2020, eq. 13)."""
    half_bin = 1.0 / (bins - 1)
    inv_std = torch.exp(-log_scales)
    centered = x - means
    cdf_plus = torch.special.ndtr(inv_std * (centered + half_bin))
    cdf_min = torch.special.ndtr(inv_std * (centered - half_bin))
    log_cdf_plus = torch.special.log_ndtr(inv_std * (centered + half_bin))
    log_one_minus_cdf_min = torch.special.log_ndtr(-inv_std * (centered - half_bin))
    log_mid = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    edge = 1.0 - 1e-6  # float tolerance for "at the lowest / highest level"
    return torch.where(x < -edge, log_cdf_plus, torch.where(x > edge, log_one_minus_cdf_min, log_mid))


def nats_to_bits_per_dim(nats: torch.Tensor, num_dims: int) -> torch.Tensor:
    return nats / (num_dims * math.log(2.0))
