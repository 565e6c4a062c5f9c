"""Samplers against analytic oracles: for Gaussian (and Gaussian-mixture) data the exact E[eps | x_t] is
known in closed form, and a correct sampler fed it must reproduce the data distribution."""

import math

import pytest
import torch

import schedules
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.grids import ddim_timesteps
from bench.process.sampling import SAMPLERS, sample
from tests.oracles import M, S, ddim_moments_exact, gaussian_oracle, mixture_oracle


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion(schedules.get("linear")(1000))


def moments(x: torch.Tensor) -> tuple[float, float]:
    return x.mean().item(), x.std().item()


@pytest.mark.parametrize(
    ("method", "kwargs", "tol"),
    [
        ("ancestral", {"variance": "beta"}, 0.03),
        ("ancestral", {"variance": "posterior"}, 0.03),
        ("ddim", {"eta": 0.0}, 0.03),
        ("ddim", {"eta": 1.0}, 0.03),
        ("ddim", {"eta": 0.0, "steps": 50}, 0.10),  # Euler error of the ODE: see the next test
    ],
)
def test_sampler_with_gaussian_oracle_reproduces_the_data(diffusion, method, kwargs, tol):
    x = sample(
        Denoiser(gaussian_oracle(diffusion), diffusion),
        (20_000, 2),
        method=method,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    mean, std = moments(x)
    assert mean == pytest.approx(M, rel=tol)
    assert std == pytest.approx(S, rel=tol)


@pytest.mark.parametrize("steps", [50, 10])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_few_step_ddim_matches_its_exact_discretisation(schedule, steps):
    diffusion = Diffusion(schedules.get(schedule)(1000))
    x = sample(
        Denoiser(gaussian_oracle(diffusion), diffusion),
        (20_000, 2),
        method="ddim",
        steps=steps,
        generator=torch.Generator().manual_seed(0),
    )
    exact_mean, exact_std = ddim_moments_exact(diffusion, steps)
    mean, std = moments(x)
    assert mean == pytest.approx(exact_mean, abs=0.01)
    assert std == pytest.approx(exact_std, rel=0.02)
    # and the discretisation converges to the data as steps grow
    assert abs(ddim_moments_exact(diffusion, 1000)[1] - S) < 0.01 * S


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_every_prediction_type_samples_the_same_distribution(diffusion, prediction):
    kwargs = {"method": "ddim", "steps": 50, "generator": torch.Generator().manual_seed(1)}
    ref = sample(Denoiser(gaussian_oracle(diffusion, "eps"), diffusion, "eps"), (4000, 1), **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(1)
    out = sample(Denoiser(gaussian_oracle(diffusion, prediction), diffusion, prediction), (4000, 1), **kwargs)
    assert torch.allclose(out, ref, atol=1e-4)


def test_mixture_oracle_recovers_modes_and_weights(diffusion):
    weights, means, std = (0.3, 0.7), (-0.6, 0.5), 0.1
    x = sample(
        Denoiser(mixture_oracle(diffusion, weights, means, std), diffusion),
        (20_000, 1),
        method="ddim",
        steps=100,
        generator=torch.Generator().manual_seed(2),
    ).flatten()
    left, right = x[x < 0], x[x >= 0]
    assert left.numel() / x.numel() == pytest.approx(0.3, abs=0.015)
    assert left.mean().item() == pytest.approx(-0.6, abs=0.01)
    assert right.mean().item() == pytest.approx(0.5, abs=0.01)
    assert right.std().item() == pytest.approx(std, rel=0.1)


def test_ancestral_step_is_ddpm_algorithm_2(diffusion):
    """Reproduce Algorithm 2 literally with the same noise and compare."""
    torch.manual_seed(0)
    weight = torch.randn(3, 3) * 0.1

    def model(x_t, t):
        return torch.tanh(x_t @ weight + t.view(-1, 1) / 1000)

    out = sample(
        Denoiser(model, diffusion), (5, 3), method="ancestral", generator=torch.Generator().manual_seed(3)
    )
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=gen)
    for t in range(999, -1, -1):
        beta, alpha, ab = (
            diffusion.betas[t].item(),
            diffusion.alphas[t].item(),
            diffusion.alpha_bar[t].item(),
        )
        eps = model(x, torch.full((5,), t))
        x = (x - beta / math.sqrt(1 - ab) * eps) / math.sqrt(alpha)
        if t > 0:
            x = x + math.sqrt(beta) * torch.randn(5, 3, generator=gen)
    assert torch.allclose(out, x, atol=1e-4)


def test_ddim_eta_one_with_all_steps_is_ancestral_with_posterior_variance(diffusion):
    model = Denoiser(gaussian_oracle(diffusion), diffusion)
    a = sample(model, (64, 2), method="ddim", eta=1.0, generator=torch.Generator().manual_seed(4))
    b = sample(
        model,
        (64, 2),
        method="ancestral",
        variance="posterior",
        generator=torch.Generator().manual_seed(4),
    )
    assert torch.allclose(a, b, atol=1e-4)


def test_one_shot_calls_the_model_once_at_the_last_step(diffusion):
    calls = []

    def model(x_t, t):
        calls.append(t.clone())
        return torch.full_like(x_t, 0.25)

    out = sample(Denoiser(model, diffusion, "x0"), (3, 4), method="one_shot")
    assert len(calls) == 1 and calls[0].tolist() == [999, 999, 999]
    assert torch.equal(out, torch.full((3, 4), 0.25))


def test_sampling_is_deterministic_given_a_generator_and_runs_in_inference_mode(diffusion):
    def model(x_t, t):
        assert torch.is_inference_mode_enabled()
        return 0.5 * x_t

    runs = [
        sample(
            Denoiser(model, diffusion),
            (4, 2),
            method="ddim",
            steps=20,
            eta=1.0,
            generator=torch.Generator().manual_seed(s),
        )
        for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_clip_x0_keeps_samples_in_range(diffusion):
    out = sample(Denoiser(lambda x, t: -3 * x, diffusion), (16, 4), method="ddim", steps=10, clip_x0=True)
    assert out.abs().max() <= 1.0


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 1) == [999]
    assert ddim_timesteps(1000, 2) == [999, 0]
    seq = ddim_timesteps(1000, 50)
    assert len(seq) == 50 and seq[0] == 999 and seq[-1] == 0 and len(set(seq)) == 50
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))


def test_zero_terminal_snr_needs_x0_or_v(diffusion):
    ztsnr = Diffusion(schedules.make("linear", 1000, zero_terminal_snr=True))
    with pytest.raises(ValueError, match="zero-terminal-SNR.*use target v, x0, edm or flow"):
        sample(Denoiser(lambda x, t: x, ztsnr), (2, 2), method="ddim", steps=5)
    out = sample(
        Denoiser(gaussian_oracle(ztsnr, "v"), ztsnr, "v"),
        (8000, 1),
        method="ddim",
        steps=50,
        generator=torch.Generator().manual_seed(5),
    )
    assert moments(out)[0] == pytest.approx(M, rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"method": "eulr"},
            r"unknown sampler 'eulr'; known samplers: ancestral, consistency, ddim, dpmpp-2m, euler, "
            r"flow-map, heun, one_shot\. Did you mean 'euler'\?",
        ),
        ({"prediction": "score"}, "prediction must be one of eps, x0, v, edm, flow"),
        ({"method": "ancestral", "steps": 50}, "ancestral sampler runs all T=1000 steps"),
        ({"method": "ddim", "steps": 0}, r"steps must be an integer in 1..T=1000, got 0"),
        ({"method": "ddim", "steps": 1001}, "got 1001"),
        ({"method": "one_shot", "steps": 3}, "exactly one step"),
        ({"method": "ddim", "eta": 1.5}, r"eta must be in \[0, 1\]"),
        ({"variance": "learned"}, "variance must be one of beta, posterior"),
        ({"eta": 0.5}, r"sampler 'ancestral' takes no setting 'eta'; its settings: variance"),
        ({"method": "one_shot", "variance": "beta"}, r"takes no setting 'variance'; its settings: none"),
        ({"method": "heun", "steps": 1}, r"sampler 'heun' needs at least 2 steps, got 1"),
        (
            {"method": "dpmpp-2m", "eta": 0.0},
            r"'dpmpp-2m' takes no setting 'eta'; its settings: grid, rho, sigma_max, sigma_min",
        ),
        (
            {"method": "ancestral", "grid": "karras"},
            r"'ancestral' takes no setting 'grid'; its settings: variance",
        ),
        (
            {"method": "one_shot", "s_churn": 1.0},
            r"'one_shot' takes no setting 's_churn'; its settings: none",
        ),
        ({"method": "ddim", "s_churn": 1.0}, r"'ddim' takes no setting 's_churn'"),
        ({"method": "ddim", "grid": "karas", "steps": 10}, "grid must be one of uniform, karras, log-snr"),
        ({"method": "ddim", "grid": "karras", "rho": 0, "steps": 10}, "rho must be a positive number"),
        ({"method": "ddim", "grid": "log-snr", "rho": 3.0, "steps": 10}, "rho is the karras grid's"),
        (
            {"method": "ddim", "grid": "karras", "sigma_min": 2.0, "sigma_max": 1.0, "steps": 10},
            "sigma_min must be below sigma_max",
        ),
        (
            {"method": "ddim", "grid": "karras", "sigma_max": -1.0, "steps": 10},
            "sigma_max must be a positive finite number",
        ),
        (
            {"method": "ddim", "grid": "karras", "sigma_min": math.inf, "steps": 10},
            "sigma_min must be a positive finite number",
        ),
        (
            {"method": "ddim", "sigma_min": 0.1, "steps": 10},
            "the uniform grid is the schedule's own timesteps",
        ),
        ({"method": "heun", "s_churn": -1.0, "steps": 10}, "s_churn must be a finite number >= 0"),
        ({"method": "euler", "s_noise": 0.0, "steps": 10}, "s_noise must be a positive number"),
        (
            {"method": "heun", "s_tmin": 2.0, "s_tmax": 1.0, "steps": 10},
            r"s_tmax must be a finite number >= s_tmin",
        ),
    ],
)
def test_bad_sampler_options(diffusion, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prediction = kwargs.pop("prediction", "eps")
        sample(Denoiser(lambda x, t: x, diffusion, prediction), (2, 2), **kwargs)


def test_bad_shape_and_x_T(diffusion):
    identity = Denoiser(lambda x, t: x, diffusion)
    with pytest.raises(ValueError, match="positive sizes"):
        sample(identity, (0, 2))
    with pytest.raises(ValueError, match="x_T has shape"):
        sample(identity, (2, 2), x_T=torch.zeros(3, 2))


def test_samplers_are_a_registry():
    assert SAMPLERS.names() == [
        *("ancestral", "consistency", "ddim", "dpmpp-2m", "euler", "flow-map", "heun", "one_shot"),
    ]
