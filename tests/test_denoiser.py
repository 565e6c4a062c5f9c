"""The wrapper's EDM preconditioning and its loss weightings, against the papers' closed forms.

The wrapper writes EDM's coefficients in alpha_bar (so that they stay finite at both ends of the schedule);
these tests write them as Karras et al. 2022's Table 1 does, in sigma, and the loss weights as Hang et al.
2023 and EDM's eq. 8 give them."""

import math

import pytest
import torch
import torch.nn.functional as F

import schedules
from bench.process.denoiser import PREDICTIONS, Denoiser
from bench.process.diffusion import Diffusion
from bench.training.objectives.regression import training_loss

SD = 0.5
GAMMA = 5.0


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion(schedules.get("cosine")(1000))


def shaped(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def table1(sigma: torch.Tensor, sd: float = SD) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """c_skip, c_out, c_in of EDM's preconditioning (Karras et al. 2022, Table 1)."""
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in = 1 / (sigma**2 + sd**2).sqrt()
    return c_skip, c_out, c_in


def problem(diffusion: Diffusion, t: torch.Tensor, seed: int = 0):
    """x0, eps, x_t and, written from alpha_bar, sqrt(ab), sqrt(1 - ab), sigma and y."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(t.shape[0], 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    if t.is_floating_point():  # log sigma interpolated between the two neighbouring timesteps
        low = t.floor().long()
        w = t - low
        high = (low + 1).clamp(max=999)
        log_sigma = (1 - w) * diffusion.sigmas[low].log() + w * diffusion.sigmas[high].log()
        ab = 1 / (1 + log_sigma.exp() ** 2)
    else:
        ab = diffusion.alpha_bar[t]
    a, b = shaped(ab.sqrt()), shaped((1 - ab).sqrt())
    x_t = a * x0 + b * eps
    sigma = b / a
    return x0, eps, x_t, a, b, sigma, x_t / a


TIMESTEPS = {
    "integer": torch.tensor([0, 1, 10, 250, 500, 998, 999]),
    "real": torch.tensor([0.25, 3.5, 499.9, 998.75]),
}


@pytest.mark.parametrize("kind", list(TIMESTEPS))
def test_edm_preconditioning_is_table_1(diffusion, kind):
    """The network sees c_in y, and its output F becomes x0_hat = c_skip y + c_out F."""
    t = TIMESTEPS[kind]
    x0, _, x_t, _, _, sigma, y = problem(diffusion, t)
    F_out = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    seen = {}

    def net(inputs, tt):
        seen["inputs"] = inputs
        return F_out

    x0_hat, eps_hat = Denoiser(net, diffusion, "edm", sigma_data=SD)(x_t, t)
    c_skip, c_out, c_in = table1(sigma)
    torch.testing.assert_close(seen["inputs"], c_in * y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x0_hat, c_skip * y + c_out * F_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(eps_hat, (y - x0_hat) / sigma, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", list(TIMESTEPS))
def test_edm_target_is_the_f_target(diffusion, kind):
    """EDM eq. 8's target (x0 - c_skip y) / c_out; a network that outputs it has zero loss."""
    t = TIMESTEPS[kind]
    x0, eps, x_t, _, _, sigma, y = problem(diffusion, t)
    c_skip, c_out, _ = table1(sigma)
    f_target = (x0 - c_skip * y) / c_out
    denoiser = Denoiser(lambda inputs, tt: f_target, diffusion, "edm", sigma_data=SD)
    torch.testing.assert_close(denoiser.target(x0, eps, t), f_target, rtol=1e-8, atol=1e-10)
    assert training_loss(denoiser, x0, t, eps=eps).max().item() < 1e-20
    x0_hat, _ = denoiser(x_t, t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-8, atol=1e-10)


def test_edm_with_unit_sigma_data_is_minus_v(diffusion):
    """With sd = 1, c_in y = x_t and F = -v: EDM's preconditioning is v-prediction with the sign flipped."""
    t = TIMESTEPS["integer"]
    x0, eps, x_t, a, b, _, _ = problem(diffusion, t)
    denoiser = Denoiser(lambda inputs, tt: inputs, diffusion, "edm", sigma_data=1.0)
    torch.testing.assert_close(denoiser.net_input(x_t, t), x_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(denoiser.target(x0, eps, t), -(a * eps - b * x0), rtol=1e-10, atol=1e-12)


def test_edm_is_finite_at_zero_terminal_snr():
    """At alpha_bar = 0 (sigma = inf) the limits hold: the network sees x_t, x0_hat = sd F, target x0 / sd."""
    ztsnr = Diffusion(schedules.make("linear", 1000, zero_terminal_snr=True))
    t = torch.full((3,), 999)
    x0, eps = torch.rand(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    x_t = eps  # alpha_bar = 0: pure noise
    F_out = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    denoiser = Denoiser(lambda inputs, tt: F_out, ztsnr, "edm", sigma_data=SD)
    torch.testing.assert_close(denoiser.net_input(x_t, t), x_t)
    torch.testing.assert_close(denoiser(x_t, t)[0], SD * F_out)
    torch.testing.assert_close(denoiser.target(x0, eps, t), x0 / SD)


# ---------------------------------------------------------------------------------------- loss weights
def closed_form_weight(kind: str, prediction: str, snr: torch.Tensor) -> torch.Tensor:
    """The factor on each target's squared error, as the papers give it."""
    lam = snr + 1 / SD**2  # EDM's lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2
    return {
        ("min-snr", "eps"): torch.minimum(snr, torch.full_like(snr, GAMMA)) / snr,
        ("min-snr", "x0"): torch.minimum(snr, torch.full_like(snr, GAMMA)),
        ("min-snr", "v"): torch.minimum(snr, torch.full_like(snr, GAMMA)) / (snr + 1),
        ("min-snr", "edm"): torch.minimum(snr, torch.full_like(snr, GAMMA)) / lam,
        ("edm", "eps"): lam / snr,
        ("edm", "x0"): lam,
        ("edm", "v"): lam / (snr + 1),
        ("edm", "edm"): torch.ones_like(snr),
        ("min-snr", "flow"): torch.minimum(snr, torch.full_like(snr, GAMMA)) / (1 + snr.sqrt()) ** 2,
        ("edm", "flow"): lam / (1 + snr.sqrt()) ** 2,
    }[kind, prediction]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "edm", "flow"])
@pytest.mark.parametrize("kind", ["min-snr", "edm"])
def test_each_weight_is_its_closed_form(diffusion, kind, prediction):
    snr = torch.exp(torch.empty(1000, dtype=torch.float64).uniform_(-12, 12, generator=torch.Generator()))
    denoiser = Denoiser(lambda x, t: x, diffusion, prediction, sigma_data=SD)
    weight = denoiser.loss_weight(kind, snr, gamma=GAMMA)
    torch.testing.assert_close(weight, closed_form_weight(kind, prediction, snr), rtol=1e-12, atol=0)


def test_min_snr_on_eps_is_one_where_snr_is_zero(diffusion):
    zero = torch.zeros(2, dtype=torch.float64)
    weight = Denoiser(lambda x, t: x, diffusion, "eps").loss_weight("min-snr", zero)
    assert weight.tolist() == [1.0, 1.0]


def network_output(prediction, x0_hat, x_t, a, b, sigma, y):
    """What a network of each target outputs when its x0 estimate at x_t is x0_hat."""
    eps_hat = (x_t - a * x0_hat) / b
    c_skip, c_out, _ = table1(sigma)
    return {
        "eps": eps_hat,
        "x0": x0_hat,
        "v": a * eps_hat - b * x0_hat,
        "edm": (x0_hat - c_skip * y) / c_out,
        "flow": eps_hat - x0_hat,
    }[prediction]


@pytest.mark.parametrize("kind", ["uniform", "min-snr", "edm"])
def test_every_target_weighs_the_same_x0_error_as_the_papers_say(diffusion, kind):
    """With x_t fixed, ||eps_hat - eps||^2 = SNR ||x0_hat - x0||^2 and ||v_hat - v||^2 = (SNR + 1) ||.||^2,
    so in x0 space L_simple weighs eps by SNR, v by SNR + 1, x0 by 1, EDM's F by SNR + 1 / sd^2 and the
    velocity by (1 + sqrt(SNR))^2;
    min-SNR and EDM's weighting make every target's loss min(SNR, gamma) and SNR + 1 / sd^2 times
    ||x0_hat - x0||^2."""
    t = torch.tensor([0, 5, 100, 300, 600, 900, 990])  # the loss is in float32: SNR down to 1e-4 here
    x0, eps, x_t, a, b, sigma, y = problem(diffusion, t)
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    snr = (a / b).pow(2).flatten()
    x0_error = (x0_hat - x0).pow(2).flatten(1).mean(1)
    in_x0_space = {
        "uniform": {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1, "edm": snr + 1 / SD**2,
                    "flow": (1 + snr.sqrt()) ** 2},
        "min-snr": dict.fromkeys(PREDICTIONS, torch.minimum(snr, torch.full_like(snr, GAMMA))),
        "edm": dict.fromkeys(PREDICTIONS, snr + 1 / SD**2),
    }[kind]
    for prediction, scale in in_x0_space.items():
        out = network_output(prediction, x0_hat, x_t, a, b, sigma, y)
        denoiser = Denoiser(lambda inputs, tt, out=out: out, diffusion, prediction, sigma_data=SD)
        loss = training_loss(denoiser, x0, t, eps=eps, weight=kind, min_snr_gamma=GAMMA)
        torch.testing.assert_close(loss, (scale * x0_error).float(), rtol=1e-4, atol=0, msg=prediction)


def test_uniform_weight_is_the_plain_mse_bit_for_bit(diffusion):
    t = torch.tensor([3, 400, 999])
    x0, eps, x_t, _, _, _, _ = problem(diffusion, t)
    x0, eps = x0.float(), eps.float()
    out = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    loss = training_loss(Denoiser(lambda inputs, tt: out, diffusion, "eps"), x0, t, eps=eps)
    assert torch.equal(loss, F.mse_loss(out, eps, reduction="none").flatten(1).mean(1))


def test_sigma_data_must_be_positive(diffusion):
    for bad in (0, -0.5, math.inf * 0, True):
        with pytest.raises(ValueError, match="sigma_data must be a positive number"):
            Denoiser(lambda x, t: x, diffusion, "edm", sigma_data=bad)
