"""Where the samplers step (bench.process.grids) and EDM's stochastic churn, against closed forms and the
Gaussian oracle: each grid is its paper's formula, the samplers see exactly its noise levels, a grid changes
no sampler's network calls, churn 0 is the deterministic sampler bit for bit, and churn > 0 with the exact
denoiser reproduces the data distribution within what its sample size allows. End to end: the grid and churn
are recorded in metrics.json, named in sample files, a design column of bench compare, and bad input is a
usage error that writes nothing."""

import csv
import io
import json
import math
import warnings

import pytest
import torch

import schedules
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.grids import Grid, ddim_timesteps, get_sigmas_exponential, get_sigmas_karras
from bench.process.sampling import network_calls, sample, sigma_of
from tests.helpers import FAST, invoke, run_ok
from tests.oracles import M, S, gaussian_oracle

GRID_SAMPLERS = [("ddim", {"eta": 0.0}), ("euler", {}), ("heun", {}), ("dpmpp-2m", {})]
CHURN = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.0}


@pytest.fixture(scope="module")
def linear() -> Diffusion:
    return Diffusion(schedules.get("linear")(1000))


def grid_sigmas(diffusion: Diffusion, grid: Grid, steps: int) -> list[float]:
    """The noise levels a sampler sees on ``grid``: its timesteps' sigma through the interpolation."""
    return [sigma_of(diffusion, t) for t in grid.timesteps(diffusion, steps)]


def test_the_karras_grid_is_edms_eq_5_over_the_schedules_range(linear):
    sigma_min, sigma_max, n, rho = linear.sigmas[0].item(), linear.sigmas[-1].item(), 10, 7.0
    expected = [
        (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        for i in range(n)
    ]
    torch.testing.assert_close(get_sigmas_karras(n, sigma_min, sigma_max, rho).tolist(), expected)
    seen = grid_sigmas(linear, Grid("karras"), n)
    torch.testing.assert_close(seen, expected, rtol=1e-12, atol=0)
    assert seen[0] == pytest.approx(sigma_max, rel=1e-12) and seen[-1] == pytest.approx(sigma_min, rel=1e-12)
    rho3 = grid_sigmas(linear, Grid("karras", rho=3.0, sigma_max=80.0, sigma_min=0.02), 5)
    torch.testing.assert_close(rho3, get_sigmas_karras(5, 0.02, 80.0, 3.0).tolist(), rtol=1e-12, atol=0)


def test_the_log_snr_grid_takes_equal_steps_in_lambda(linear):
    seen = grid_sigmas(linear, Grid("log-snr"), 12)
    lambdas = [-math.log(sigma) for sigma in seen]
    steps = [b - a for a, b in zip(lambdas, lambdas[1:], strict=False)]
    expected = (math.log(linear.sigmas[-1].item()) - math.log(linear.sigmas[0].item())) / 11
    torch.testing.assert_close(steps, [expected] * 11, rtol=1e-10, atol=0)
    torch.testing.assert_close(get_sigmas_exponential(3, 0.1, 10.0).tolist(), [10.0, 1.0, 0.1])


def test_the_uniform_grid_is_ddims_integer_timesteps(linear):
    assert Grid().timesteps(linear, 50) == ddim_timesteps(1000, 50)
    assert all(isinstance(t, int) for t in Grid().timesteps(linear, 7))


def test_a_sigma_outside_the_schedule_is_clamped_with_a_warning(linear):
    with pytest.warns(UserWarning, match=r"sigma_max 1000 is outside the schedule's noise levels"):
        seen = grid_sigmas(linear, Grid("karras", sigma_max=1000.0), 5)
    assert seen[0] == pytest.approx(linear.sigmas[-1].item(), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the range: no warning
        grid_sigmas(linear, Grid("log-snr", sigma_max=80.0, sigma_min=0.02), 5)


@pytest.mark.parametrize("grid", ["karras", "log-snr"])
@pytest.mark.parametrize(("method", "settings"), GRID_SAMPLERS, ids=[m for m, _ in GRID_SAMPLERS])
def test_a_grid_changes_no_samplers_network_calls(linear, method, settings, grid):
    calls = []
    oracle = gaussian_oracle(linear)

    def net(x, t):
        calls.append(t)
        return oracle(x, t)

    sample(Denoiser(net, linear), (4, 1), method=method, steps=6, grid=grid, **settings)
    assert len(calls) == network_calls(method, 6)
    assert all(t.is_floating_point() for t in calls)  # real-valued timesteps between the integer ones


def test_dpmpp_2m_on_the_log_snr_grid_beats_the_uniform_one_at_few_calls(linear):
    """The oracle's reason for grids: at 10 calls DPM-Solver++(2M) lands 10 times closer to the exact
    endpoint on the log-SNR grid than on DDIM's uniform timesteps (0.026 against 0.22)."""
    from tests.oracles import GAUSSIAN

    uniform = GAUSSIAN.sampler_error(linear, "dpmpp-2m", 10)
    log_snr = GAUSSIAN.sampler_error(linear, "dpmpp-2m", 10, grid=Grid("log-snr"))
    assert log_snr < 0.2 * uniform


# ------------------------------------------------------------------------------------------ churn
@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("grid", ["uniform", "karras"])
def test_churn_zero_is_the_deterministic_sampler_bit_for_bit(linear, method, grid):
    denoiser = Denoiser(gaussian_oracle(linear), linear)
    generators = [torch.Generator().manual_seed(5) for _ in range(3)]
    plain = sample(denoiser, (64, 2), method=method, steps=8, grid=grid, generator=generators[0])
    zero = sample(
        denoiser, (64, 2), method=method, steps=8, grid=grid, generator=generators[1],
        **{**CHURN, "s_churn": 0.0},
    )  # fmt: skip
    out_of_range = sample(
        denoiser, (64, 2), method=method, steps=8, grid=grid, generator=generators[2],
        **{**CHURN, "s_tmin": 1e6, "s_tmax": 2e6},
    )  # fmt: skip
    assert torch.equal(plain, zero) and torch.equal(plain, out_of_range)
    assert torch.equal(generators[0].get_state(), generators[1].get_state())  # nothing drawn


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_churn_draws_from_the_samplers_generator_and_costs_no_call(linear, method):
    calls = []
    oracle = gaussian_oracle(linear)

    def net(x, t):
        calls.append(t)
        return oracle(x, t)

    denoiser = Denoiser(net, linear)
    runs = [
        sample(denoiser, (16, 1), method=method, steps=8, generator=torch.Generator().manual_seed(s), **CHURN)
        for s in (1, 1, 2)
    ]
    assert len(calls) == 3 * network_calls(method, 8)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    plain = sample(denoiser, (16, 1), method=method, steps=8, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(runs[0], plain)


def test_churn_with_the_exact_denoiser_reproduces_the_data_distribution(linear):
    """EDM's Algorithm 2 (Heun, 200 steps on the karras grid, S_churn 40) from N(0, 1) noise with the exact
    denoiser of N(M, S^2) gives N(M, S^2): mean and std within four standard errors of their estimates at
    this sample size (S / sqrt(n) and S / sqrt(2n): 0.0085 and 0.006), well above the sampler's own bias at
    200 steps (below 0.001 in mean and std, measured with ten times the samples). Adding no fresh noise, or
    too little (sigma_hat - sigma instead of sqrt(sigma_hat^2 - sigma^2)), narrows them to 0 or 0.09."""
    n = 20_000
    out = sample(
        Denoiser(gaussian_oracle(linear), linear), (n, 1), method="heun", steps=200, grid="karras",
        generator=torch.Generator().manual_seed(11), **CHURN,
    )  # fmt: skip
    assert out.mean().item() == pytest.approx(M, abs=4 * S / math.sqrt(n))
    assert out.std().item() == pytest.approx(S, abs=4 * S / math.sqrt(2 * n))


# ------------------------------------------------------------------------------------- end to end
def test_a_run_records_and_names_its_grid_and_churn_and_compare_shows_them(tmp_path):
    run_dir = run_ok(
        tmp_path, "--sampler", "heun", "--sample-steps", "3", "--grid", "karras", "--rho", "5",
        "--s-churn", "10", "--s-tmax", "50", run_id="k",
    )  # fmt: skip
    sample_metrics = json.loads((run_dir / "metrics.json").read_text())["sample"]
    assert {k: sample_metrics.get(k) for k in ("grid", "rho", "s_churn", "s_tmin", "s_tmax", "s_noise")} == {
        "grid": "karras", "rho": 5.0, "s_churn": 10.0, "s_tmin": 0.0, "s_tmax": 50.0, "s_noise": 1.0,
    }  # fmt: skip
    assert sample_metrics["network_evaluations_per_image"] == 5
    result = invoke(
        "sample", str(run_dir), "--n", "2", "--method", "dpmpp-2m", "--steps", "3", "--grid", "log-snr",
        "--sigma-max", "50", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (npz,) = (run_dir / "samples").glob("*.npz")
    assert npz.name.startswith("dpmpp-2m-3steps-log-snr-smax50-n2-seed0-ema-")
    result = invoke("eval", str(run_dir), "--n", "8", "--method", "ddim", "--steps", "3", "--grid", "log-snr",
                    "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    assert invoke("compare", str(run_dir), "--out", str(out)).exit_code == 0
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    found = {(row["grid"], row["churn"]) for row in rows if not row["denoiser"].startswith("reference")}
    assert found == {("karras (rho 5)", "10 in sigma 0-50, noise 1"), ("log-snr", "")}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "karas"], "'karas' is not one of 'uniform', 'karras', 'log-snr'"),
        (["--grid", "karras", "--rho", "0"], "rho must be a positive number, got 0.0"),
        (["--grid", "karras", "--rho", "-2"], "rho must be a positive number, got -2.0"),
        (["--grid", "log-snr", "--sigma-min", "2", "--sigma-max", "1"], "sigma_min must be below sigma_max"),
        (["--grid", "log-snr", "--sigma-min", "1", "--sigma-max", "1"], "sigma_min must be below sigma_max"),
        (["--grid", "karras", "--sigma-max", "-80"], "sigma_max must be a positive number, got -80.0"),
        (["--grid", "karras", "--sigma-max", "inf"], "sigma_max must be a positive number, got inf"),
        (["--grid", "karras", "--sigma-min", "nan"], "sigma_min must be a positive number, got nan"),
        (["--grid", "karras", "--sigma-min", "1000", "--sigma-max", "2000"], "must be below sigma_max"),
        (["--sampler", "heun", "--s-churn", "-1"], "s_churn must be >= 0, got -1.0"),
        (["--sampler", "heun", "--s-churn", "1", "--s-noise", "0"], "s_noise must be a positive number"),
        (["--sampler", "heun", "--s-churn", "1", "--s-tmin", "5", "--s-tmax", "1"], "s_tmin must be at most"),
        (["--sampler", "ancestral", "--grid", "karras"], "sampler 'ancestral' walks no grid but its own"),
        (["--sampler", "one_shot", "--grid", "log-snr"], "sampler 'one_shot' walks no grid but its own"),
        (["--sampler", "ancestral", "--s-churn", "5"], "sampler 'ancestral' takes no s_churn"),
        (["--sampler", "one_shot", "--s-churn", "5"], "sampler 'one_shot' takes no s_churn"),
        (["--sampler", "ddim", "--s-noise", "1.003"], "sampler 'ddim' takes no s_noise"),
        (["--sampler", "ddim", "--sigma-max", "80"], "the uniform grid is the schedule's own timesteps"),
    ],
)
def test_bad_grid_or_churn_is_a_usage_error_and_writes_nothing(tmp_path, args, message):
    result = invoke("run", *FAST, *args, "--out", str(tmp_path), "--quiet")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_bad_grid_in_sample_and_eval_is_a_usage_error_that_leaves_the_run_alone(tmp_path):
    run_dir = run_ok(tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    for command, args, message in (
        ("sample", ["--method", "ancestral", "--grid", "karras"], "walks no grid but its own"),
        ("eval", ["--method", "dpmpp-2m", "--s-churn", "3"], "sampler 'dpmpp-2m' takes no s_churn"),
        ("eval", ["--grid", "log-snr", "--rho", "3"], "rho is the karras grid's"),
    ):
        result = invoke(command, str(run_dir), "--n", "4", *args, "--quiet")
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert before == {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert not (run_dir / "samples").exists()
