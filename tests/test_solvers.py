"""The ODE solvers (euler, heun, dpmpp-2m) against an analytic oracle: for Gaussian data N(M, S^2) the exact
denoiser is D(y; sigma) = M + S^2 / (S^2 + sigma^2) (y - M), and the probability-flow ODE keeps
(y - M) / sqrt(S^2 + sigma^2) constant, so the exact endpoint of any sampler is known in closed form and the
error of each solver against its number of network calls shows its order."""

import math

import numpy as np
import pytest
import torch

import schedules
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.grids import Grid, ddim_timesteps
from bench.process.sampling import SAMPLERS, network_calls, sample
from tests.oracles import GAUSSIAN, M, S, gaussian_oracle

# The steps each solver is run with, chosen so that its network calls span about 50 to 400 per image,
# where every solver is in its asymptotic regime on the linear schedule (below about 40 calls DPM-Solver++'s
# error is not yet monotone: the uniform timestep grid gives steps of very different size in lambda).
STEPS = {"ddim": [50, 100, 200, 400], "euler": [50, 100, 200, 400], "heun": [25, 50, 100, 200],
         "dpmpp-2m": [50, 100, 200, 400]}  # fmt: skip
ORDER = {"ddim": 1, "euler": 1, "heun": 2, "dpmpp-2m": 2}
GRIDS = [Grid(), Grid("karras"), Grid("log-snr")]


@pytest.fixture(scope="module")
def linear() -> Diffusion:
    return Diffusion(schedules.get("linear")(1000))


def endpoint_error(
    diffusion: Diffusion, method: str, steps: int, prediction: str = "eps", grid: Grid | None = None
) -> float:
    """The largest distance from the exact ODE endpoint (bench.process.oracles.GaussianData.ode_endpoint) over
    64 noises; the endpoint itself is checked against the ODE's invariant below."""
    settings = {"eta": 0.0} if method == "ddim" else {}
    return GAUSSIAN.sampler_error(diffusion, method, steps, prediction=prediction, grid=grid, **settings)


def test_the_exact_endpoint_keeps_the_odes_invariant(linear):
    """(y - M) / sqrt(S^2 + sigma^2) is the same at sigma_{T-1} and sigma_0, and the endpoint is E[x0 | y]
    there; many Heun steps land on it."""
    x_T = torch.linspace(-3, 3, 7, dtype=torch.float64).view(-1, 1)
    sigma_max, sigma_min = linear.sigmas[-1].item(), linear.sigmas[0].item()
    end = GAUSSIAN.ode_endpoint(linear, x_T)
    y_min = M + (end - M) * (S**2 + sigma_min**2) / S**2  # undo the exact denoiser at sigma_0
    invariant_T = (x_T * math.sqrt(1 + sigma_max**2) - M) / math.sqrt(S**2 + sigma_max**2)
    invariant_0 = (y_min - M) / math.sqrt(S**2 + sigma_min**2)
    torch.testing.assert_close(invariant_0, invariant_T, rtol=1e-12, atol=1e-12)
    assert GAUSSIAN.sampler_error(linear, "heun", 1000) < 3e-5


@pytest.mark.parametrize("grid", GRIDS, ids=[g.kind for g in GRIDS])
@pytest.mark.parametrize("method", list(STEPS))
def test_error_falls_with_network_calls_at_the_solvers_order(linear, method, grid):
    """The log-log slope of the endpoint error against NFE, fitted over the stated range, is the solver's
    order on every grid: about 1 for DDIM (eta 0) and Euler, about 2 for Heun and DPM-Solver++(2M)."""
    nfe = [network_calls(method, steps) for steps in STEPS[method]]
    errors = [endpoint_error(linear, method, steps, grid=grid) for steps in STEPS[method]]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    slope = -np.polyfit(np.log(nfe), np.log(errors), 1)[0]
    assert slope == pytest.approx(ORDER[method], abs=0.2), (nfe, errors)


def test_dpmpp_2m_beats_ddim_at_few_calls_on_the_linear_schedule(linear):
    """At 5-10 calls on the default schedule, the multistep correction already pays: DPM-Solver++(2M) lands
    at least twice as close to the exact endpoint as DDIM (eta 0) with as many calls. Lowering the order of
    the step into the last timestep, as Lu et al.'s code can, loses that (0.64 at 5 calls, DDIM's error)."""
    for steps in (5, 8, 10):
        assert endpoint_error(linear, "dpmpp-2m", steps) < 0.6 * endpoint_error(linear, "ddim", steps)


@pytest.mark.parametrize("prediction", ["x0", "v", "edm"])
@pytest.mark.parametrize("method", ["euler", "heun", "dpmpp-2m"])
def test_solvers_integrate_the_same_ode_whatever_the_target(linear, method, prediction):
    """The oracle predicting x0, v or EDM's F is one denoiser: each solver lands where it does with eps."""
    steps = STEPS[method][0]
    assert endpoint_error(linear, method, steps, prediction) == pytest.approx(
        endpoint_error(linear, method, steps, "eps"), rel=1e-6, abs=1e-9
    )


def test_euler_in_sigma_is_ddim_with_eta_zero(linear):
    """The Euler step y' = y + (sigma' - sigma)(y - D) / sigma, in x_t, is DDIM's deterministic update."""
    denoiser = Denoiser(gaussian_oracle(linear, "eps"), linear, "eps")
    x_T = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for steps in (1, 2, 7, 50):
        timesteps = ddim_timesteps(1000, steps)
        by_euler = SAMPLERS.get("euler")(denoiser, x_T.clone(), timesteps)
        by_ddim = SAMPLERS.get("ddim")(denoiser, x_T.clone(), timesteps, eta=0.0)
        torch.testing.assert_close(by_euler, by_ddim, rtol=1e-10, atol=1e-10)


class CountingNet:
    """The Gaussian oracle, counting its calls and the items it was called on."""

    def __init__(self, diffusion: Diffusion) -> None:
        self.oracle, self.calls = gaussian_oracle(diffusion, "eps"), 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.oracle(x, t)


@pytest.mark.parametrize(
    ("method", "steps", "expected"),
    [("ddim", 10, 10), ("euler", 10, 10), ("dpmpp-2m", 10, 10), ("heun", 10, 19), ("heun", 2, 3),
     ("one_shot", None, 1), ("ancestral", None, 1000)],
)  # fmt: skip
def test_declared_network_calls_are_the_calls_made(linear, method, steps, expected):
    net = CountingNet(linear)
    denoiser = Denoiser(net, linear, "eps" if method != "one_shot" else "x0")
    sample(denoiser, (4, 2), method=method, steps=steps)
    assert net.calls == expected
    resolved = steps or (1 if method == "one_shot" else linear.num_timesteps)
    assert network_calls(method, resolved) == expected


def test_dpmpp_2m_starts_from_zero_terminal_snr():
    """alpha_{T-1} = 0 makes lambda = -inf there; DPM-Solver++ still takes its first step, to the data
    distribution of a v-predicting oracle, and the solvers in y = x_t / sqrt(alpha_bar) refuse clearly."""
    ztsnr = Diffusion(schedules.make("linear", 1000, zero_terminal_snr=True))
    denoiser = Denoiser(gaussian_oracle(ztsnr, "v"), ztsnr, "v")
    g = torch.Generator().manual_seed(0)
    out = sample(denoiser, (8000, 1), method="dpmpp-2m", steps=200, generator=g)
    assert torch.isfinite(out).all()
    assert out.mean().item() == pytest.approx(M, abs=0.02)
    assert out.std().item() == pytest.approx(S, rel=0.03)
    for method in ("euler", "heun"):
        with pytest.raises(ValueError, match="infinite where its grid starts at pure noise"):
            sample(denoiser, (2, 1), method=method, steps=4)


@pytest.mark.parametrize(("method", "steps"), [("euler", 200), ("heun", 100), ("dpmpp-2m", 200)])
def test_solvers_reproduce_the_data_distribution(linear, method, steps):
    """From N(0, 1) noise, about 200 network calls of each solver with the exact denoiser give N(M, S^2)."""
    denoiser = Denoiser(gaussian_oracle(linear, "eps"), linear, "eps")
    out = sample(denoiser, (8000, 1), method=method, steps=steps, generator=torch.Generator().manual_seed(2))
    assert out.mean().item() == pytest.approx(M, abs=0.02)
    assert out.std().item() == pytest.approx(S, rel=0.03)


# ------------------------------------------------------------------ the solver error bench eval measures
SOLVER_ERROR_STEPS = {"ddim": [25, 50, 100], "euler": [25, 50, 100], "heun": [16, 32, 64],
                      "dpmpp-2m": [16, 32, 64]}  # fmt: skip


@pytest.mark.parametrize("method", list(SOLVER_ERROR_STEPS))
def test_the_solver_error_shrinks_at_each_solvers_order(linear, method):
    """bench eval --solver-error's measure, through the library's own reference (Heun, 511 calls, karras)
    and distance, with the exact denoiser of Gaussian data: the reference is within 1e-4 of the exact ODE
    endpoint, and each solver's RMS distance to it from the same noises falls with its network calls at its
    order on the karras grid (log-log slope 1 for DDIM and Euler, 2 for Heun and DPM-Solver++(2M); we see
    0.98, 0.98, 2.16 and 2.01)."""
    from bench.evaluation.solver_error import reference_noise, solution, solver_rms

    denoiser = Denoiser(gaussian_oracle(linear, "eps"), linear, "eps")
    x_T = reference_noise(64, (4,), seed=0).double()
    reference = solution(denoiser, x_T)
    assert solver_rms(reference, GAUSSIAN.ode_endpoint(linear, x_T)) < 1e-4
    settings = {"eta": 0.0} if method == "ddim" else {}
    steps = SOLVER_ERROR_STEPS[method]
    errors = [
        solver_rms(sample(denoiser, tuple(x_T.shape), method=method, steps=n, x_T=x_T, grid="karras",
                          **settings), reference)
        for n in steps
    ]  # fmt: skip
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    slope = -np.polyfit(np.log([network_calls(method, n) for n in steps]), np.log(errors), 1)[0]
    assert slope == pytest.approx(ORDER[method], abs=0.25), errors


def test_only_a_sampler_that_follows_the_ode_has_a_solver_error():
    from bench.config import SampleConfig
    from bench.evaluation.solver_error import has_solver_error

    assert has_solver_error(SampleConfig(method="ddim", eta=0.0))
    assert has_solver_error(SampleConfig(method="heun")) and has_solver_error(SampleConfig(method="dpmpp-2m"))
    assert not has_solver_error(SampleConfig(method="ddim", eta=1.0))
    assert not has_solver_error(SampleConfig(method="heun", s_churn=40.0))
    assert not has_solver_error(SampleConfig(method="ancestral"))
    assert not has_solver_error(SampleConfig(method="consistency"))
