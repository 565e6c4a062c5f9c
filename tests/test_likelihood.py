"""The bits/dim bound against an analytic case: with the exact posterior-mean oracle for Gaussian data
the KL terms are those of the true reverse process, and the sampled estimate must agree with the exact sum."""

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr

import schedules
from bench.evaluation.likelihood import nll_bits_per_dim, quantize
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from tests.oracles import M, S, gaussian_oracle


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion(schedules.get("linear")(200))


def gaussian_images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return quantize(M + S * torch.randn(n, 1, 4, 4, generator=g))


def test_sampled_estimate_is_unbiased_against_the_exact_sum(diffusion):
    images = gaussian_images(200)
    model = gaussian_oracle(diffusion, "eps")
    exact = nll_bits_per_dim(Denoiser(model, diffusion), images, num_timesteps=None)
    assert exact.exact and exact.timesteps_used == 199
    sampled = nll_bits_per_dim(
        Denoiser(model, diffusion),
        images,
        num_timesteps=20,
        generator=torch.Generator().manual_seed(1),
    )
    assert not sampled.exact and sampled.timesteps_used == 20
    assert abs(sampled.bits_per_dim - exact.bits_per_dim) < 4 * sampled.standard_error + 1e-3
    assert sampled.seconds > 0 and sampled.num_images == 200


def expected_bound_nats(diffusion: Diffusion, images: torch.Tensor) -> dict[str, np.ndarray]:
    """E[bound | x0] of the exact-mean oracle with the posterior variances, per image and term, in nats.

    Per pixel, with a = sqrt(ab_t), b^2 = 1 - ab_t, d = a^2 S^2 + b^2 and x_t = a x0 + b eps:
    - L_T = KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)) = (ab_T x0^2 - ab_T - log(1 - ab_T)) / 2;
    - L_{t-1}, t >= 1: both Gaussians have the posterior variance, so the KL is (coef_x0 (x0 - x0_hat))^2 /
      (2 var), and x0 - x0_hat = (b^2 (x0 - M) - a b S^2 eps) / d has second moment (b^4 (x0 - M)^2 +
      a^2 b^2 S^4) / d^2;
    - L_0: the decoder's mean is x0_hat = m + tau eps with m = (a^2 S^2 x0 + b^2 M) / d and tau = a b S^2 /
      d; -log of its bin's mass under N(m + tau eps, s^2) (s^2 the posterior variance at t = 1; the end
      bins reach to infinity), averaged over eps by 60-point Gauss-Hermite quadrature.
    """
    x = images.double().flatten(1).numpy()
    ab = diffusion.alpha_bar.numpy()
    prior = 0.5 * (ab[-1] * x**2 - ab[-1] - math.log(1 - ab[-1]))
    kl = np.zeros_like(x)
    for t in range(1, diffusion.num_timesteps):
        a2, b2 = ab[t], 1 - ab[t]
        d = a2 * S**2 + b2
        coef, var = diffusion.posterior_mean_coef_x0[t].item(), diffusion.posterior_variance[t].item()
        kl += coef**2 * (b2**2 * (x - M) ** 2 + a2 * b2 * S**4) / d**2 / (2 * var)
    a2, b2 = ab[0], 1 - ab[0]
    d = a2 * S**2 + b2
    m, tau = (a2 * S**2 * x + b2 * M) / d, math.sqrt(a2 * b2) * S**2 / d
    s, h = math.sqrt(diffusion.posterior_variance[1].item()), 1 / 255
    z, w = np.polynomial.hermite_e.hermegauss(60)
    mean = m[..., None] + tau * z
    above = np.where(x[..., None] > 1 - 1e-6, 1.0, ndtr((x[..., None] + h - mean) / s))
    below = np.where(x[..., None] < -1 + 1e-6, 0.0, ndtr((x[..., None] - h - mean) / s))
    decoder = -(np.log(np.maximum(above - below, 1e-300)) * w / w.sum()).sum(-1)
    return {name: term.sum(1) for name, term in (("prior", prior), ("kl", kl), ("decoder", decoder))}


def test_bound_is_its_closed_form_for_the_oracle():
    """For Gaussian data every term of the oracle's bound has a closed form given x0 (expected_bound_nats),
    so the bound must equal their sum up to its sampling error; and, as any model's, lie above the entropy.

    The first 30 steps of the 200-step linear schedule end at ab_T = 0.79, where the prior term L_T is 0.7
    bits/dim: dropping it, the decoder (3.6) or the KL terms (4.7) moves the bound by ~20 standard errors."""
    diffusion = Diffusion(schedules.get("linear")(200)[:30])
    images = gaussian_images(400)
    result = nll_bits_per_dim(
        Denoiser(gaussian_oracle(diffusion, "eps"), diffusion),
        images,
        num_timesteps=None,
        generator=torch.Generator().manual_seed(1),  # not the images' seed: its first draw is their noise
    )
    terms = expected_bound_nats(diffusion, images)
    bits = {name: term.mean() / (16 * math.log(2)) for name, term in terms.items()}
    assert bits["prior"] > 0.65 and bits["decoder"] > 3 and bits["kl"] > 4
    # Given the images, the estimate's only randomness is its noise draws; the reported standard error
    # measures the spread over images, which that noise is part of, so it bounds the estimate's error.
    expected = sum(bits.values())
    assert abs(result.bits_per_dim - expected) < 3 * result.standard_error
    assert 3 * result.standard_error < 0.2 * bits["prior"]
    x = images.double()
    nats = (0.5 * ((x - M) / S) ** 2 + math.log(S * math.sqrt(2 * math.pi)) - math.log(2 / 255)).mean()
    entropy_bpd = nats.item() / math.log(2)  # -log P(bin) ~ -log(pdf * 2/255): the data's entropy
    assert entropy_bpd < expected and entropy_bpd < result.bits_per_dim


def test_a_worse_model_has_a_higher_bound(diffusion):
    images = gaussian_images(100)
    good = nll_bits_per_dim(Denoiser(gaussian_oracle(diffusion), diffusion), images, num_timesteps=None)
    bad = nll_bits_per_dim(Denoiser(lambda x, t: torch.zeros_like(x), diffusion), images, num_timesteps=None)
    assert bad.bits_per_dim > good.bits_per_dim + 0.5


def test_bad_num_timesteps(diffusion):
    with pytest.raises(ValueError, match="num_timesteps must be a positive integer"):
        nll_bits_per_dim(Denoiser(gaussian_oracle(diffusion), diffusion), gaussian_images(2), num_timesteps=0)
