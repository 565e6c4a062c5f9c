"""The bits/dim bound against an analytic case: with the exact posterior-mean oracle for Gaussian data
the KL terms are those of the true reverse process, and the sampled estimate must agree with the exact sum."""

import math

import pytest
import torch

import schedules
from bench.denoiser import Denoiser
from bench.diffusion import Diffusion
from bench.likelihood import nll_bits_per_dim, quantize
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


def test_bound_is_close_to_the_true_entropy_for_the_oracle(diffusion):
    """For x0 ~ N(M, S^2) quantised to 256 levels, -log P(bin) ~ -log(pdf * 2/255) is the data's entropy.
    The bound of the exact-mean model lies above it, within about a bit: its reverse variances are the
    fixed choice, not the true ones, so the bound is not tight."""
    images = gaussian_images(400)
    result = nll_bits_per_dim(
        Denoiser(gaussian_oracle(diffusion, "eps"), diffusion), images, num_timesteps=None
    )
    x = images.double()
    nats = (0.5 * ((x - M) / S) ** 2 + math.log(S * math.sqrt(2 * math.pi)) - math.log(2 / 255)).mean()
    entropy_bpd = nats.item() / math.log(2)
    assert result.bits_per_dim > entropy_bpd - 0.05
    assert result.bits_per_dim < entropy_bpd + 1.2


def test_a_worse_model_has_a_higher_bound(diffusion):
    images = gaussian_images(100)
    good = nll_bits_per_dim(Denoiser(gaussian_oracle(diffusion), diffusion), images, num_timesteps=None)
    bad = nll_bits_per_dim(Denoiser(lambda x, t: torch.zeros_like(x), diffusion), images, num_timesteps=None)
    assert bad.bits_per_dim > good.bits_per_dim + 0.5


def test_bad_num_timesteps(diffusion):
    with pytest.raises(ValueError, match="num_timesteps must be a positive integer"):
        nll_bits_per_dim(Denoiser(gaussian_oracle(diffusion), diffusion), gaussian_images(2), num_timesteps=0)
