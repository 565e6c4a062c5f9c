import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import schedules
from bench.process.denoiser import Denoiser
from bench.process.diffusion import (
    Diffusion,
    discretized_gaussian_log_likelihood,
    nats_to_bits_per_dim,
    normal_kl,
)
from bench.training.objectives.regression import training_loss


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion(schedules.get("linear")(1000))


def long(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def test_precomputed_terms_match_their_definitions(diffusion):
    betas = schedules.get("linear")(1000)
    for t in (0, 1, 2, 10, 999):
        ab_t = math.prod(1 - betas[i].item() for i in range(t + 1))
        assert diffusion.alpha_bar[t].item() == pytest.approx(ab_t, rel=1e-10)
        prev = 1.0 if t == 0 else math.prod(1 - betas[i].item() for i in range(t))
        assert diffusion.alpha_bar_prev[t].item() == pytest.approx(prev, rel=1e-10)
    assert diffusion.alpha_bar.dtype == torch.float64


def test_q_xt_x0_is_the_seed_formula_and_broadcasts(diffusion):
    x0 = torch.randn(3, 2, 5, 4)
    t = long(0, 500, 999)
    mean, var = diffusion.q_xt_x0(x0, t)
    ab = diffusion.alpha_bar[t].float()
    assert var.shape == (3, 1, 1, 1)
    assert torch.allclose(mean, ab.sqrt().view(3, 1, 1, 1) * x0)
    assert torch.allclose(var.flatten(), (1 - diffusion.alpha_bar[t]).float())  # computed in float64
    # any data shape: vectors too
    mean2, var2 = diffusion.q_xt_x0(torch.ones(3, 7), t)
    assert mean2.shape == (3, 7) and var2.shape == (3, 1)


@pytest.mark.parametrize("t", [0, 100, 700, 999])
def test_q_sample_empirical_mean_and_variance(diffusion, t):
    n = 200_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    gen = torch.Generator().manual_seed(t)
    xt = diffusion.q_sample(x0, torch.full((n,), t, dtype=torch.long), generator=gen)
    ab = diffusion.alpha_bar[t].item()
    var = 1 - ab
    se_mean = math.sqrt(var / n)
    assert abs(xt.mean().item() - math.sqrt(ab) * 0.7) < 5 * se_mean
    assert xt.var().item() == pytest.approx(var, rel=5 * math.sqrt(2 / n))


def test_q_sample_with_given_eps_is_exact(diffusion):
    x0, eps = torch.randn(4, 3), torch.randn(4, 3)
    t = long(1, 2, 3, 4)
    mean, var = diffusion.q_xt_x0(x0, t)
    assert torch.equal(diffusion.q_sample(x0, t, eps), mean + var.sqrt() * eps)


def test_posterior_matches_the_paper_formula(diffusion):
    x0, xt = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    t = long(0, 1, 400, 999)
    mean, var = diffusion.q_posterior(x0, xt, t)
    b, a = diffusion.betas[t], diffusion.alphas[t]
    ab, abp = diffusion.alpha_bar[t], diffusion.alpha_bar_prev[t]
    expected_mean = (abp.sqrt() * b / (1 - ab))[:, None] * x0 + (a.sqrt() * (1 - abp) / (1 - ab))[
        :, None
    ] * xt
    assert torch.allclose(mean, expected_mean, atol=1e-12)
    assert torch.allclose(var.flatten(), b * (1 - abp) / (1 - ab), atol=1e-15)
    assert var[0].item() == 0.0  # t = 0: x_{-1} is x_0 itself


@pytest.mark.parametrize("t", [1, 5, 250, 999])
def test_posterior_equals_direct_gaussian_conditioning(diffusion, t):
    """Condition the joint Gaussian of (x_{t-1}, x_t) given x0 by the textbook formula."""
    x0, xt = 0.3, -0.8
    ab_prev = diffusion.alpha_bar[t - 1].item()
    a = diffusion.alphas[t].item()
    # x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) e1;  x_t = sqrt(a) x_{t-1} + sqrt(1 - a) e2
    mu1, mu2 = math.sqrt(ab_prev) * x0, math.sqrt(a * ab_prev) * x0
    var1 = 1 - ab_prev
    cov12 = math.sqrt(a) * var1
    var2 = a * var1 + (1 - a)
    cond_mean = mu1 + cov12 / var2 * (xt - mu2)
    cond_var = var1 - cov12**2 / var2
    mean, var = diffusion.q_posterior(
        torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt]], dtype=torch.float64), long(t)
    )
    assert mean.item() == pytest.approx(cond_mean, rel=1e-9, abs=1e-12)
    assert var.item() == pytest.approx(cond_var, rel=1e-9)


def test_eps_x0_v_round_trips(diffusion):
    x0, eps = torch.randn(5, 3, 4, 4, dtype=torch.float64), torch.randn(5, 3, 4, 4, dtype=torch.float64)
    t = long(0, 10, 500, 900, 999)
    xt = diffusion.q_sample(x0, t, eps)
    assert torch.allclose(diffusion.x0_from_eps(xt, t, eps), x0, atol=1e-8)
    assert torch.allclose(diffusion.eps_from_x0(xt, t, x0), eps, atol=1e-6)
    v = diffusion.v_from(x0, eps, t)
    assert torch.allclose(diffusion.x0_from_v(xt, t, v), x0, atol=1e-10)
    assert torch.allclose(diffusion.eps_from_v(xt, t, v), eps, atol=1e-10)
    for prediction, output in (("eps", eps), ("x0", x0), ("v", v)):
        x0_hat, eps_hat = Denoiser(lambda x, tt: x, diffusion, prediction).split(output, xt, t)
        assert torch.allclose(x0_hat, x0, atol=1e-8) and torch.allclose(eps_hat, eps, atol=1e-6)


def test_clipped_x0_keeps_eps_consistent(diffusion):
    xt, t = torch.randn(4, 8, dtype=torch.float64) * 3, long(900, 900, 900, 900)
    clipped = Denoiser(lambda x, tt: torch.randn(4, 8, dtype=torch.float64), diffusion, clip_x0=True)
    x0_hat, eps_hat = clipped(xt, t)
    assert x0_hat.abs().max() <= 1
    assert torch.allclose(diffusion.q_sample(x0_hat, t, eps_hat), xt, atol=1e-10)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_training_loss_is_mse_to_the_target(diffusion, prediction):
    """The targets written out from alpha_bar: eps, x0, and v = sqrt(ab) eps - sqrt(1 - ab) x0."""
    x0, eps, t = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4), long(0, 1, 2, 300, 600, 999)
    ab = diffusion.alpha_bar[t].view(6, 1, 1, 1)
    x_t = (ab.sqrt() * x0 + (1 - ab).sqrt() * eps).float()
    v = (ab.sqrt() * eps - (1 - ab).sqrt() * x0).float()
    target = {"eps": eps, "x0": x0, "v": v}[prediction]
    seen = []

    def exact_net(xt, tt):
        seen.append(xt)
        return target

    exact = training_loss(Denoiser(exact_net, diffusion, prediction), x0, t, eps=eps)
    assert exact.shape == (6,) and torch.allclose(exact, torch.zeros(6), atol=1e-12)
    assert torch.allclose(seen[0], x_t, atol=1e-6)  # the network sees x_t drawn with this very eps
    zero = training_loss(Denoiser(lambda xt, tt: torch.zeros_like(xt), diffusion, prediction), x0, t, eps=eps)
    assert torch.allclose(zero, target.pow(2).flatten(1).mean(1), rtol=1e-5)
    # an output off by c everywhere costs c^2, whatever the target
    off = training_loss(Denoiser(lambda xt, tt: target + 0.5, diffusion, prediction), x0, t, eps=eps)
    assert torch.allclose(off, torch.full((6,), 0.25), rtol=1e-5)


def test_normal_kl_matches_torch_distributions():
    m1, m2 = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    lv1, lv2 = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    assert torch.allclose(normal_kl(m1, lv1, m2, lv2), expected, atol=1e-12)


def test_discretized_gaussian_matches_cdf_differences_and_sums_to_one():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    mean, log_scale = torch.tensor(0.13, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(levels, mean.expand(256), log_scale.expand(256))
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    dist = Normal(mean, log_scale.exp())
    h = 1 / 255
    for i in (0, 1, 100, 200, 254, 255):
        x = levels[i]
        lo = dist.cdf(x - h) if i > 0 else torch.tensor(0.0, dtype=torch.float64)
        hi = dist.cdf(x + h) if i < 255 else torch.tensor(1.0, dtype=torch.float64)
        assert logp[i].exp().item() == pytest.approx(
            (hi - lo).item(), rel=1e-8, abs=2e-12
        )  # bins below 1e-12 are floored


def test_vb_terms(diffusion):
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1
    x0 = (((x0 + 1) * 127.5).round() / 127.5 - 1).clamp(-1, 1)  # on the 256-level grid
    t = long(0, 10, 999)
    xt = diffusion.q_sample(x0, t)
    # a perfect x0 prediction with the posterior variance has zero KL for t > 0
    terms = diffusion.vb_term(Denoiser(lambda x, tt: x0, diffusion, "x0"), x0, xt, t, variance="posterior")
    assert torch.allclose(terms[1:], torch.zeros(2, dtype=torch.float64), atol=1e-9)
    # At t = 0 the term is the decoder NLL. With x0 exact the decoder's mean is x0 itself, so each pixel
    # costs -log of the mass N(x0, s^2) puts on its bin of half-width h = 1/255: erf(h / (s sqrt 2)) for an
    # inner bin, Phi(h / s) for the two end bins (they reach to infinity). Positive, and it shrinks with the
    # decoder variance s^2 (the posterior variance at t = 1, which the clipped log variance uses at t = 0).
    h, decoder_nll = 1 / 255, []
    for scale in (1.0, 0.25, 1 / 16):
        scaled = Diffusion(schedules.get("linear")(1000) * scale)
        s = math.sqrt(scaled.posterior_variance[1].item())
        perfect = Denoiser(lambda x, tt: x0, scaled, "x0")
        t0 = long(0, 0, 0)
        nll = scaled.vb_term(perfect, x0, scaled.q_sample(x0, t0), t0, variance="posterior")
        mass = math.erf(h / (s * math.sqrt(2)))  # of an inner bin; an end bin holds (1 + mass) / 2
        inner, end = -math.log(mass), -math.log((1 + mass) / 2)
        at_end = (x0.abs() == 1).flatten(1).sum(1).double()
        closed = at_end * end + (16 - at_end) * inner
        assert torch.allclose(nll, closed, rtol=1e-9)
        decoder_nll.append(nll)
    assert (decoder_nll[0] > decoder_nll[1]).all() and (decoder_nll[1] > decoder_nll[2]).all()
    assert (decoder_nll[2] > 0).all()
    assert torch.allclose(terms[0], decoder_nll[0][0], rtol=1e-9)
    # L_T against the closed form KL(N(m, v) || N(0, 1)) = 0.5 (v + m^2 - 1 - log v), summed over pixels
    ab = diffusion.alpha_bar[-1]
    closed = 0.5 * (1 - ab + ab * x0.pow(2) - 1 - torch.log(1 - ab)).flatten(1).sum(1)
    assert torch.allclose(diffusion.prior_kl(x0), closed, rtol=1e-9)
    assert nats_to_bits_per_dim(torch.tensor(16 * math.log(2.0)), 16).item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("betas", "match"),
    [
        (torch.tensor([0.1, 0.0, 0.2]), r"betas\[1\] = 0.0"),
        (torch.tensor([0.1, -0.5]), r"betas\[1\] = -0.5"),
        (torch.tensor([0.1, 1.5]), r"\(0, 1\]"),
        (torch.tensor([1.0, 0.5]), "only the last beta"),
        (torch.ones(2, 2) * 0.1, "1-D"),
        (torch.tensor([]), "1-D"),
    ],
)
def test_bad_betas(betas, match):
    with pytest.raises(ValueError, match=match):
        Diffusion(betas)


def test_bad_shapes_and_names(diffusion):
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="one shape"):
        diffusion.q_posterior(x, torch.randn(2, 4), long(1, 2))
    with pytest.raises(ValueError, match=r"shape \[B\] = \[2\]"):
        diffusion.q_xt_x0(x, long(1, 2, 3))
    with pytest.raises(ValueError, match="t must be an integer .Long. tensor"):
        diffusion.q_posterior(x, x, torch.tensor([1.0, 2.0]))  # the posterior lives on the grid
    with pytest.raises(ValueError, match="t must be an integer .Long. or real-valued tensor"):
        diffusion.q_sample(x, [1, 2])
    with pytest.raises(ValueError, match="eps must have the shape"):
        diffusion.q_sample(x, long(1, 2), torch.randn(3, 3))
    with pytest.raises(
        ValueError,
        match="prediction must be one of eps, x0, v, edm, flow, consistency, trigflow, flow-map, got",
    ):
        Denoiser(lambda xt, tt: xt, diffusion, "score")
    with pytest.raises(ValueError, match="variance must be one of beta, posterior"):
        diffusion.p_mean_variance(Denoiser(lambda xt, tt: xt, diffusion), x, long(1, 2), variance="learned")


# ------------------------------------------------------------------ EDM's sigma and real-valued timesteps
def test_sigma_is_edms_noise_level_of_each_timestep(diffusion):
    """sigma_t = sqrt((1 - alpha_bar) / alpha_bar), so y = x_t / sqrt(alpha_bar) = x0 + sigma eps."""
    betas = schedules.get("linear")(1000)
    for t in (0, 1, 500, 999):
        ab = math.prod(1 - betas[i].item() for i in range(t + 1))
        assert diffusion.sigmas[t].item() == pytest.approx(math.sqrt((1 - ab) / ab), rel=1e-9)
        assert diffusion.snr_at(long(t)).item() == pytest.approx(ab / (1 - ab), rel=1e-9)
    ztsnr = Diffusion(schedules.make("linear", 1000, zero_terminal_snr=True))
    assert math.isinf(ztsnr.sigmas[-1].item()) and ztsnr.snr_at(long(999)).item() == 0


def test_real_valued_timesteps_interpolate_log_sigma(diffusion):
    """Between two grid points log sigma is linear in t (k-diffusion's DiscreteSchedule); on a grid point it
    is that point's sigma; sigma_to_t inverts it and clamps to the schedule's range."""
    s = diffusion.sigmas
    t = torch.tensor([0.0, 10.0, 10.25, 500.5, 998.9, 999.0], dtype=torch.float64)
    expected = [
        s[0].item(),
        s[10].item(),
        math.exp(0.75 * math.log(s[10].item()) + 0.25 * math.log(s[11].item())),
        math.sqrt(s[500].item() * s[501].item()),
        math.exp(0.1 * math.log(s[998].item()) + 0.9 * math.log(s[999].item())),
        s[999].item(),
    ]
    assert diffusion.t_to_sigma(t).tolist() == pytest.approx(expected, rel=1e-12)
    assert diffusion.sigma_to_t(torch.tensor(expected, dtype=torch.float64)).tolist() == pytest.approx(
        t.tolist(), abs=1e-9
    )
    below_and_above = torch.tensor([s[0].item() / 10, s[-1].item() * 10], dtype=torch.float64)
    assert diffusion.sigma_to_t(below_and_above).tolist() == [0.0, 999.0]


def test_forward_process_at_a_real_valued_timestep(diffusion):
    """q(x_t | x0) at a real t uses alpha_bar = 1 / (1 + sigma(t)^2), and the target conversions follow."""
    t = torch.tensor([10.25, 500.5], dtype=torch.float64)
    x0, eps = torch.rand(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    s = [diffusion.sigmas[i].item() for i in (10, 11, 500, 501)]
    sigma = torch.tensor(
        [math.exp(0.75 * math.log(s[0]) + 0.25 * math.log(s[1])), math.sqrt(s[2] * s[3])], dtype=torch.float64
    ).view(2, 1)
    a, b = 1 / (1 + sigma**2).sqrt(), sigma / (1 + sigma**2).sqrt()
    x_t = diffusion.q_sample(x0, t, eps)
    torch.testing.assert_close(x_t, a * x0 + b * eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_t / a, x0 + sigma * eps, rtol=1e-12, atol=1e-12)  # y = x0 + sigma eps
    torch.testing.assert_close(diffusion.x0_from_eps(x_t, t, eps), x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(diffusion.eps_from_x0(x_t, t, x0), eps, rtol=1e-10, atol=1e-10)
