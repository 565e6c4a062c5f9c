"""Flow matching in the one Denoiser wrapper: the velocity target ``flow`` on any schedule, the
``rectified-flow`` schedule and SD3's logit-normal noise levels, checked against closed forms written here
from the path x = (1 - t) x0 + t eps (not from the wrapper's own formulas) and against the Gaussian oracle."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

import schedules
from bench.config import DiffusionConfig, RunConfig, TrainConfig
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.grids import Grid, ddim_timesteps
from bench.process.sampling import SAMPLERS, check_start, network_calls, sample
from bench.reports import compare
from bench.runs.row import design_line
from bench.training.noise_levels import training_timesteps
from bench.training.objectives.regression import training_loss
from tests.helpers import FAST, TINY_UNET, invoke, make_trainer, run_ok
from tests.oracles import GAUSSIAN, M, S, gaussian_oracle

T = 1000


@pytest.fixture(scope="module")
def flow() -> Diffusion:
    return Diffusion(schedules.make("rectified-flow", T))


@pytest.fixture(scope="module")
def linear() -> Diffusion:
    return Diffusion(schedules.make("linear", T))


def flow_time(diffusion: Diffusion, t: torch.Tensor) -> torch.Tensor:
    """t_flow of each timestep from EDM's sigma = t / (1 - t): sigma / (1 + sigma), 1 where sigma = inf."""
    sigma = diffusion.sigma_at(t)
    return torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1 + sigma))


# ------------------------------------------------------------------------------------------ the schedule
def test_rectified_flow_schedule_is_the_straight_path_evenly_spaced_in_t(flow):
    """t_i = (i + 1) / T up to t = 1, alpha_bar = (1 - t)^2 / ((1 - t)^2 + t^2), zero terminal SNR."""
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    expected = (1 - t) ** 2 / ((1 - t) ** 2 + t**2)
    torch.testing.assert_close(flow.alpha_bar, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(flow_time(flow, torch.arange(T)), t, rtol=1e-12, atol=1e-12)
    assert flow.alpha_bar[-1].item() == 0.0 and flow.zero_terminal_snr
    assert flow.betas[-1].item() == 1.0 and bool((flow.betas[:-1] < 1).all())


# ------------------------------------------------------------------------------------ the velocity target
def problem(diffusion: Diffusion, t: torch.Tensor):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(len(t), 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = diffusion.q_sample(x0, t, eps)
    tf = flow_time(diffusion, t).view(-1, 1, 1, 1)
    return x0, eps, x_t, tf


@pytest.mark.parametrize("schedule", ["linear", "cosine", "rectified-flow"])
def test_flow_target_net_input_and_inverse_are_the_paths(schedule):
    """The network sees (1 - t) x0 + t eps, learns u = eps - x0, and its exact output gives back x0 and eps,
    at every timestep including pure noise. Dropping the path's scale r, or the velocity's sign, fails."""
    diffusion = Diffusion(schedules.make(schedule, T))
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    x0, eps, x_t, tf = problem(diffusion, t)
    denoiser = Denoiser(lambda inputs, tt: eps - x0, diffusion, "flow")
    torch.testing.assert_close(denoiser.net_input(x_t, t), (1 - tf) * x0 + tf * eps, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(denoiser.target(x0, eps, t), eps - x0, rtol=0, atol=0)
    x0_hat, eps_hat = denoiser(x_t, t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-9, atol=1e-9)
    assert training_loss(denoiser, x0, t, eps=eps).max().item() < 1e-20


def test_flow_loss_weighs_the_x0_error_by_one_over_t_squared(linear):
    """With x_t fixed, x0_hat - x0 = -t (u_hat - u), so the plain velocity loss is ||x0_hat - x0||^2 / t^2 =
    (1 + sqrt(SNR))^2 ||x0_hat - x0||^2; min-SNR and EDM's weighting make it min(SNR, 5) and SNR + 4 times."""
    t = torch.tensor([0, 5, 100, 300, 600, 900, 990])
    x0, eps, x_t, tf = problem(linear, t)
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps_hat = (x_t - linear.sqrt_alpha_bar[t].view(-1, 1, 1, 1) * x0_hat) / linear.sqrt_one_minus_alpha_bar[
        t
    ].view(-1, 1, 1, 1)
    x0_error = (x0_hat - x0).pow(2).flatten(1).mean(1)
    snr = linear.snr_at(t)
    denoiser = Denoiser(lambda inputs, tt: eps_hat - x0_hat, linear, "flow", sigma_data=0.5)
    expected = {"uniform": 1 / tf.flatten() ** 2, "min-snr": snr.clamp(max=5.0), "edm": snr + 4.0}
    for kind, scale in expected.items():
        loss = training_loss(denoiser, x0, t, eps=eps, weight=kind, min_snr_gamma=5.0)
        torch.testing.assert_close(loss, (scale * x0_error).float(), rtol=1e-4, atol=0, msg=kind)
    # and the weights themselves are finite at pure noise, where SNR = 0
    zero = torch.zeros(1, dtype=torch.float64)
    assert Denoiser(lambda x, tt: x, linear, "flow").loss_weight("edm", zero).item() == 4.0
    assert Denoiser(lambda x, tt: x, linear, "flow").loss_weight("min-snr", zero).item() == 0.0


# ---------------------------------------------------------------------------------------------- samplers
def flow_euler(net, diffusion: Diffusion, x: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """Euler steps of dx/dt = u in flow matching's own variables (x = r x_t, t_flow), ending at t = 0, written
    without the wrapper: x' = x + (t' - t) u(x, t)."""
    ts = [flow_time(diffusion, torch.tensor([t])).item() for t in timesteps] + [0.0]
    a, b = diffusion.sqrt_alpha_bar, diffusion.sqrt_one_minus_alpha_bar
    z = x / (a[timesteps[0]] + b[timesteps[0]]).item()
    for i, t in enumerate(timesteps):
        u = net(z, torch.full((x.shape[0],), t))
        z = z + (ts[i + 1] - ts[i]) * u
    return z  # at t = 0 the path is the data: r = 1


@pytest.mark.parametrize("schedule", ["linear", "rectified-flow"])
def test_an_euler_step_of_a_flow_model_is_ddim_with_eta_zero(schedule):
    """A flow model's Euler step in (x, t) holds x0_hat and eps_hat fixed, as DDIM's deterministic step does:
    for any network (here a fixed random nonlinear one), the two samplers agree to float precision."""
    diffusion = Diffusion(schedules.make(schedule, T))
    w = torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ w) + 1e-3 * t.view(-1, 1).double()

    x_T = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    denoiser = Denoiser(net, diffusion, "flow")
    for steps in (1, 2, 7, 50):
        timesteps = ddim_timesteps(T, steps)
        by_ddim = SAMPLERS.get("ddim")(denoiser, x_T.clone(), timesteps, eta=0.0)
        torch.testing.assert_close(flow_euler(net, diffusion, x_T.clone(), timesteps), by_ddim, rtol=1e-9,
                                   atol=1e-9)  # fmt: skip


CAN_START_AT_PURE_NOISE = [
    ("ddim", 500, {"eta": 0.0}),
    ("ddim", 500, {"eta": 1.0}),
    ("dpmpp-2m", 100, {}),
    ("ancestral", None, {}),
    ("euler", 500, {"grid": "karras"}),
    ("heun", 100, {"grid": "log-snr"}),
    ("dpmpp-2m", 100, {"grid": "log-snr"}),
]


@pytest.mark.parametrize(("method", "steps", "settings"), CAN_START_AT_PURE_NOISE)
def test_the_exact_velocity_reproduces_the_data_on_the_rectified_flow(flow, method, steps, settings):
    """From N(0, 1) at t = 1 (or the largest finite noise level, for the samplers in y on a karras or log-snr
    grid), every sampler with the exact velocity of N(M, S^2) data gives N(M, S^2): mean and std within 5
    standard errors of n samples, plus the sampler's own discretisation error at these steps (< 0.004)."""
    n = 20000
    denoiser = Denoiser(gaussian_oracle(flow, "flow"), flow, "flow")
    out = sample(denoiser, (n, 1), method=method, steps=steps, generator=torch.Generator().manual_seed(0),
                 **settings)  # fmt: skip
    mean_tol, std_tol = 5 * S / math.sqrt(n) + 0.004, 5 * S / math.sqrt(2 * n) + 0.004
    assert out.mean().item() == pytest.approx(M, abs=mean_tol)
    assert out.std().item() == pytest.approx(S, abs=std_tol)


ORDERS = [("ddim", Grid(), 1), ("dpmpp-2m", Grid(), 2), ("euler", Grid("karras"), 1),
          ("heun", Grid("karras"), 2), ("dpmpp-2m", Grid("log-snr"), 2),
          ("heun", Grid("log-snr"), 2)]  # fmt: skip


@pytest.mark.parametrize(("method", "grid", "order"), ORDERS, ids=[f"{m}-{g.kind}" for m, g, _ in ORDERS])
def test_each_solver_keeps_its_order_on_the_rectified_flow(flow, method, grid, order):
    """Against the exact ODE endpoint from t = 1 (or the grid's finite start), with the exact velocity, the
    log-log slope of the error against network calls is each solver's order."""
    steps = [25, 50, 100, 200] if method == "heun" else [50, 100, 200, 400]
    settings = {"eta": 0.0} if method == "ddim" else {}
    errors = [
        GAUSSIAN.sampler_error(flow, method, s, prediction="flow", grid=grid, **settings) for s in steps
    ]
    nfe = [network_calls(method, s) for s in steps]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    slope = -np.polyfit(np.log(nfe), np.log(errors), 1)[0]
    assert slope == pytest.approx(order, abs=0.2), (nfe, errors)


def test_flow_prediction_integrates_the_same_ode_as_eps(linear):
    """On the linear schedule the exact velocity is the same denoiser as the exact eps: each solver lands
    where it does with eps."""
    for method in ("ddim", "heun", "dpmpp-2m"):
        settings = {"eta": 0.0} if method == "ddim" else {}
        by_flow = GAUSSIAN.sampler_error(linear, method, 20, prediction="flow", **settings)
        by_eps = GAUSSIAN.sampler_error(linear, method, 20, prediction="eps", **settings)
        assert by_flow == pytest.approx(by_eps, rel=1e-6, abs=1e-9)


def test_what_cannot_start_at_pure_noise_is_refused(flow):
    """An eps model at alpha_bar = 0, and Euler or Heun from sigma = inf, are refused with what would work."""
    with pytest.raises(ValueError, match="x0 cannot be recovered from an eps prediction; use target v, x0"):
        check_start(flow, "eps", "ddim", Grid())
    for method in ("euler", "heun"):
        with pytest.raises(ValueError, match="infinite where its grid starts at pure noise"):
            check_start(flow, "flow", method, Grid())
        check_start(flow, "flow", method, Grid("karras"))  # a karras grid starts at a finite noise level
    denoiser = Denoiser(gaussian_oracle(flow, "flow"), flow, "flow")
    with pytest.raises(ValueError, match="infinite where its grid starts at pure noise"):
        sample(denoiser, (2, 1), method="heun", steps=4)


# ------------------------------------------------------------------------------------ logit-normal levels
def test_logit_normal_noise_levels_are_sd3s(flow):
    """The trainer's logit-normal draws, read back as flow times through the schedule's interpolation, follow
    t = sigmoid(n), n ~ N(m, s^2) (a Kolmogorov-Smirnov test against that CDF, Phi((logit t - m) / s)), with
    the logit-normal's own settings, not the log-normal's."""
    m, s = 0.5, 0.8
    trainer = make_trainer(1, noise_levels="logit-normal", logit_mean=m, logit_std=s)
    trainer.diffusion = flow
    t = training_timesteps(trainer.recipe, flow, trainer.config, 20000, trainer.generator, trainer.device)
    tf = flow_time(flow, t).numpy()
    result = stats.kstest(tf, lambda x: stats.norm.cdf((np.log(x / (1 - x)) - m) / s))
    assert result.pvalue > 1e-3, result


def test_logit_normal_std_must_be_positive():
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="logit_std must be a positive number"):
            TrainConfig(noise_levels="logit-normal", logit_std=bad)


# ------------------------------------------------------------------------------------------ end to end
def test_a_rectified_flow_run_with_sd3s_levels_records_its_design(tmp_path):
    run_dir = run_ok(tmp_path, "--schedule", "rectified-flow", "--target", "flow", "--noise-levels",
                     "logit-normal", "--logit-mean", "0.2", "--sampler", "dpmpp-2m")  # fmt: skip
    config = json.loads((run_dir / "config.json").read_text())
    assert config["diffusion"]["schedule"] == "rectified-flow"
    assert config["denoiser_options"]["target"] == "flow"
    assert (config["train"]["noise_levels"], config["train"]["logit_mean"], config["train"]["logit_std"]) == (
        "logit-normal", 0.2, 1.0
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sample"]["method"] == "dpmpp-2m" and math.isfinite(metrics["train"]["final_loss"])
    printed = invoke("run", "--resume", str(run_dir))  # complete: prints its table again, with the design
    design = "design:    target flow, noise levels logit-normal(0.2, 1), schedule rectified-flow"
    assert design in printed.output
    row = compare.collect([run_dir]).runs.iloc[0]
    design = (row["schedule"], row["target"], row["noise_levels"])
    assert design == ("rectified-flow", "flow", "logit-normal(0.2, 1)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise-levels", "logit-normal", "--logit-std", "0"], "logit_std must be a positive number"),
        (["--noise-levels", "logit-normal", "--logit-std", "-1"], "logit_std must be a positive number"),
        (["--schedule", "rectified-flow"], "x0 cannot be recovered from an eps prediction; use target v"),
        (["--schedule", "rectified-flow", "--loss-weight", "edm"], "infinite where SNR = 0"),
        (["--schedule", "rectified-flow", "--target", "flow", "--sampler", "euler"],
         "infinite where its grid starts at pure noise"),
        (["--schedule", "rectified-flow", "--target", "flow", "--sampler", "heun"],
         "infinite where its grid starts at pure noise"),
    ],
)  # fmt: skip
def test_bad_flow_input_is_a_usage_error_and_writes_nothing(tmp_path, args, message):
    result = invoke("run", *FAST, *args, "--out", str(tmp_path), "--quiet")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("schedule", ["linear", "rectified-flow"])
def test_direct_takes_the_flow_target_and_samples_in_one_call(tmp_path, schedule):
    """At t = T-1, x0_hat = r x_T - t u_hat: the one-call design learns the image as its input minus its
    output, and samples in one call."""
    args = [a if a != "unet" else "direct" for a in TINY_UNET]
    result = invoke("run", *args, "--target", "flow", "--schedule", schedule, "--out", str(tmp_path),
                    "--run-id", "d", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["sample"]["method"] == "one_shot"
    assert metrics["sample"]["network_evaluations_per_image"] == 1


def test_a_sweep_over_targets_and_schedules_skips_the_impossible_point(tmp_path):
    """eps on the rectified flow cannot start at pure noise: that one point is skipped with the reason (in a
    warning and in sweep.json), and the three others train."""
    out = tmp_path / "sweep"
    args = [a for a in FAST if a not in ("--denoiser", "tiny-test")]
    with pytest.warns(UserWarning, match="tiny-test-eps-rectified-flow-s0 skipped: .*eps prediction"):
        result = invoke("sweep", *args, "--denoiser", "tiny-test", "--target", "eps,flow", "--schedule",
                        "linear,rectified-flow", "--out", str(out), "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "sweep.json").read_text())
    ran = ["tiny-test-eps-linear-s0", "tiny-test-flow-linear-s0", "tiny-test-flow-rectified-flow-s0"]
    assert list(manifest["runs"]) == ran
    assert list(manifest["skipped"]) == ["tiny-test-eps-rectified-flow-s0"]
    for name in ran:
        assert json.loads((out / name / "status.json").read_text())["state"] == "complete"
    assert not (out / "tiny-test-eps-rectified-flow-s0").exists()
    status = invoke("sweep", "status", str(out))
    assert "tiny-test-eps-rectified-flow-s0 skipped: a zero-terminal-SNR schedule" in status.output
    only_impossible = invoke("sweep", *args, "--denoiser", "tiny-test", "--schedule", "rectified-flow",
                             "--out", str(tmp_path / "none"), "--quiet")  # fmt: skip
    assert only_impossible.exit_code == 2 and "no grid point can run" in only_impossible.output


def test_the_end_of_run_table_names_a_design_only_when_it_is_not_ddpms():
    assert design_line(RunConfig().to_dict()) is None  # the default run prints what it always did
    flow = replace(RunConfig(), denoiser_options={"target": "flow"},
                   diffusion=DiffusionConfig(schedule="rectified-flow"))  # fmt: skip
    assert design_line(flow.to_dict()) == "target flow, schedule rectified-flow"
