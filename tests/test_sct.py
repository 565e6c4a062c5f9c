"""Continuous-time consistency training (``sct``): its tangent against the Gaussian closed form, and the
design from the command line (trains, samples in one call, resumes bit for bit, refuses bad input).

For data N(m, q^2) the probability-flow ODE's consistency function is affine, f(y, sigma) = m + (y - m)
sqrt(q^2 + sigma_min^2) / sqrt(q^2 + sigma^2) (the invariant (y - m) / sqrt(q^2 + sigma^2), ending at the
schedule's sigma_min), and the ODE's velocity in TrigFlow's variables is E[cos s sd z - sin s x0 | x_s]
from the Gaussian posterior. sCT's tangent is cos s df/ds: along the ODE it vanishes for the exact f, and
at the warm-up's start (w = 0) it vanishes for the exact denoiser E[x0 | x_s] instead."""

from __future__ import annotations

import math

import pytest
import torch

import denoisers
import schedules
from bench.process.denoiser import CONSISTENCY, TRIGFLOW, Denoiser
from bench.process.diffusion import Diffusion
from bench.training.objectives import continuous as sct
from bench.training.objectives import declaration
from tests.helpers import invoke, stop_at_two_and_resume
from tests.helpers import refused_run as refused
from tests.helpers import run_metrics as metrics
from tests.helpers import tiny_run_ok as run_ok

M, Q, SD = 0.4, 0.3, 0.5
STEPS = 6  # TINY_RUN's


def diffusion() -> Diffusion:
    return Diffusion(schedules.make("linear", 1000))


def exact(diff: Diffusion, kind: str):
    """A network whose output the ``consistency`` wrapper turns into the exact consistency function
    (``kind="consistency"``) or the exact denoiser E[x0 | y] (``"denoiser"``); written from the closed forms,
    differentiable in its input and time."""
    sigma_min = float(diff.sigmas[0])

    def net(net_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = diff.sigma_at(t).reshape(-1, 1, 1, 1).to(net_input.dtype)
        y = net_input * (sigma**2 + SD**2).sqrt()  # the input is EDM's c_in y
        if kind == "consistency":
            f = M + (y - M) * math.sqrt(Q**2 + sigma_min**2) / (Q**2 + sigma**2).sqrt()
        else:
            f = M + Q**2 / (Q**2 + sigma**2) * (y - M)
        shifted = sigma - sigma_min
        c_skip = SD**2 / (shifted**2 + SD**2)
        c_out = shifted * SD / (SD**2 + sigma**2).sqrt()
        return (f - c_skip * y) / c_out

    return net


def ode_velocity(x_s: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E[cos s sd z - sin s x0 | x_s] for x_s = cos s x0 + sin s sd z, x0 ~ N(M, Q^2), z ~ N(0, 1)."""
    cos, sin = s.cos().reshape(-1, 1, 1, 1), s.sin().reshape(-1, 1, 1, 1)
    x0 = M + cos * Q**2 * (x_s - cos * M) / (cos**2 * Q**2 + sin**2 * SD**2)
    noise = (x_s - cos * x0) / sin  # E[sd z | x_s]
    return (cos * noise - sin * x0).float()


def tangent_at(kind: str, warmup: float, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """sCT's tangent g along the ODE (the path through x_s with the ODE's velocity) for the exact network
    ``kind``, and the size of its first term for scale."""
    diff = diffusion()
    denoiser = Denoiser(exact(diff, kind), diff, CONSISTENCY, sigma_data=SD)
    torch.manual_seed(0)
    s = torch.tensor([0.1, 0.4, 0.8, 1.2, 1.5], dtype=torch.float64)
    x_s = (torch.randn(5, 1, 4, 4) * 0.6).to(torch.float64).float()
    v = ode_velocity(x_s.double(), s)
    cos, sin = s.cos().reshape(-1, 1, 1, 1).float(), s.sin().reshape(-1, 1, 1, 1).float()
    x0, z = cos * x_s - sin * v, (sin * x_s + cos * v) / SD  # the path through x_s with velocity v
    with torch.no_grad():
        scaled = sct.scaled_derivative(denoiser, x0, z, s, method)
        F = sct.trigflow_output(denoiser, x_s, s)
    g = sct.tangent(F, scaled, x_s, v, s, SD, warmup)
    first = cos * cos * (SD * F - v)
    return g, first


@pytest.mark.parametrize(("method", "tolerance"), [("jvp", 1e-5), ("finite-difference", 3e-3)])
def test_the_tangent_vanishes_along_the_ode_at_the_exact_consistency_function(method, tolerance):
    """Within float32 (the JVP; 1e-6 of a tangent of 0.86) or the difference's rounding (1e-3)."""
    g, _ = tangent_at("consistency", 1.0, method)
    scale = tangent_at("denoiser", 1.0, method)[0].abs().max()
    assert g.abs().max() < tolerance * scale, (g.abs().max(), scale)


@pytest.mark.parametrize("method", ["jvp", "finite-difference"])
def test_at_the_warmups_start_the_tangent_vanishes_at_the_exact_denoiser_instead(method):
    """w = 0 leaves -cos^2 s (sd F - dx/ds): TrigFlow's diffusion loss, whose minimiser is E[x0 | x_s]."""
    g, first = tangent_at("denoiser", 0.0, method)
    assert g.abs().max() < 1e-5
    g, first = tangent_at("consistency", 0.0, method)
    assert g.abs().max() > 1e-2


def test_the_exact_denoiser_is_not_a_consistency_function():
    """The control: at w = 1 the denoiser's tangent is far from zero, so the first test can fail."""
    g, _ = tangent_at("denoiser", 1.0, "jvp")
    assert g.abs().max() > 1e-2


def test_the_jvp_and_the_finite_difference_agree_on_a_network():
    """Through the timestep's interpolation and the U-Net's time embedding, from near the data (s = 0.05)
    to near pure noise (s = 1.5)."""
    torch.manual_seed(0)

    net = denoisers.get("sct")((1, 8, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    net.eval()
    diff = diffusion()
    denoiser = Denoiser.of(net, diff)
    assert denoiser.prediction == TRIGFLOW
    x0, z = torch.randn(5, 1, 8, 8).clamp(-1, 1), torch.randn(5, 1, 8, 8)
    s = torch.tensor([0.05, 0.3, 0.9, 1.3, 1.5], dtype=torch.float64)
    with torch.no_grad(), sct.differentiable_forward(net):
        by_jvp = sct.scaled_derivative(denoiser, x0, z, s, "jvp")
        by_difference = sct.scaled_derivative(denoiser, x0, z, s, "finite-difference")
    error = (by_jvp - by_difference).flatten(1).norm(dim=1) / by_jvp.flatten(1).norm(dim=1)
    assert (error < 1e-2).all(), error


class Recorder(torch.nn.Module):
    """A network that returns a fixed affine map of its input and remembers the times it was called at."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.times = t
        return 0.7 * x - 0.2


def test_the_trigflow_wrapper_is_the_papers_f_and_sees_trigflows_time():
    """x0_hat = cos s x_s - sd sin s F(x_s / sd, s) with x_s = cos s y, written here from the paper; and F
    read back from it by the objective is the network's output."""
    diff = diffusion()
    net = Recorder()
    denoiser = Denoiser(net, diff, TRIGFLOW, sigma_data=SD)
    t = torch.tensor([0, 10, 300, 999])
    x_t = torch.randn(4, 1, 3, 3)
    sigma = diff.sigmas[t].reshape(-1, 1, 1, 1)
    s = torch.atan(sigma / SD)
    y = x_t * (1 + sigma**2).sqrt()
    x_s = (s.cos() * y).float()
    want = s.cos() * x_s - SD * s.sin() * (0.7 * x_s / SD - 0.2)
    torch.testing.assert_close(denoiser(x_t, t)[0], want.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.times, s.flatten())
    F = sct.trigflow_output(denoiser, x_s, s.flatten().double())
    torch.testing.assert_close(F, 0.7 * x_s / SD - 0.2, rtol=1e-4, atol=1e-4)


def test_the_tangent_normalisation_and_the_warmup():
    g = torch.zeros(2, 1, 2, 2)
    g[0] = 3.0  # norm 6
    g[1, 0, 0, 0] = 0.1  # norm 0.1
    n = sct.normalised(g, 0.1)
    assert n[0].flatten().norm() == pytest.approx(6 / 6.1)
    assert n[1].flatten().norm() == pytest.approx(0.1 / 0.2)
    assert [sct.warmup_weight(step, 100) for step in (0, 50, 100, 500)] == [0.0, 0.5, 1.0, 1.0]
    assert sct.warmup_weight(0, 0) == 1.0


# ----------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sct-runs")
    return {
        "sct": run_ok(out, "sct", "--denoiser", "sct", "--tangent-warmup", "3"),
        "sct-fd": run_ok(out, "sct-fd", "--denoiser", "sct", "--derivative", "finite-difference"),
    }


@pytest.mark.parametrize("design", ["sct", "sct-fd"])
def test_sct_trains_and_samples_in_one_call(runs, design):
    result = metrics(runs[design])
    sampled = result["sample"]
    assert (sampled["method"], sampled["steps"], sampled["network_evaluations_per_image"]) == (
        "consistency",
        1,
        1,
    )
    assert result["train"]["steps"] == STEPS
    assert math.isfinite(result["train"]["final_loss"])


def test_the_cost_counts_the_jvp_measured_on_the_network(runs):
    for design, extra in (("sct", 3.0), ("sct-fd", 2)):
        result = metrics(runs[design])
        train = result["train"]
        expected = train["images_seen"] * (
            train["training_flops_per_image"] + extra * train["forward_flops_per_image"]
        )
        assert result["cost"]["train_flops"] == pytest.approx(expected, rel=1e-3), design


@pytest.mark.parametrize(
    "args",
    [
        ["--denoiser", "sct", "--tangent-warmup", "4"],
        ["--denoiser", "sct", "--derivative", "finite-difference"],
    ],
    ids=["jvp", "fd"],
)
def test_a_stopped_sct_run_resumes_bit_identical(tmp_path, monkeypatch, args):
    straight = run_ok(tmp_path, "straight", *args)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(stop_at_two_and_resume(tmp_path, monkeypatch, *args) / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == STEPS
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_bench_list_shows_sct_and_what_it_needs():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(
        line.split()[:1] == ["sct"] and "predicts trigflow, samples with consistency" in line
        for line in lines
    )
    objectives = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()}
    assert "forward-mode AD (JVP)" in objectives["continuous-consistency"]
    assert declaration("continuous-consistency").jvp


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--denoiser", "sct", "--tangent-c", "0"], "tangent_c must be a positive number"),
        (["--denoiser", "sct", "--tangent-warmup", "-1"], "tangent_warmup must be >= 0"),
        (["--denoiser", "sct", "--levels", "20"], "--levels is for consistency-distilled"),
        (["--denoiser", "sct", "--teacher", "somewhere"], "--teacher is for"),
        (["--denoiser", "unet", "--tangent-c", "0.2"], "--tangent-c is for sct"),
        (["--denoiser", "consistency", "--tangent-warmup", "10"], "--tangent-warmup is for sct"),
        (["--denoiser", "sct", "--sampler", "heun"], "a consistency model's f(x_t) is where its ODE ends"),
        (["--denoiser", "sct", "--loss-weight", "min-snr"], "draws its own noise levels"),
    ],
)
def test_bad_sct_input_is_a_usage_error_and_nothing_is_written(tmp_path, args, message):
    assert message in refused(tmp_path, *args)


# ------------------------------------------------------------------------------ the training oracle
class GaussianConsistency(torch.nn.Module):
    """The consistency functions of Gaussian data N(m, q^2), m and q its parameters: f(y, sigma) = m + (y -
    m) sqrt(q^2 + sigma_min^2) / sqrt(q^2 + sigma^2), given to the ``consistency`` wrapper as the output it
    turns into that f."""

    def __init__(self, diff: Diffusion) -> None:
        super().__init__()
        self.diff = diff
        self.m = torch.nn.Parameter(torch.tensor(0.0))
        self.log_q = torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, net_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma_min = float(self.diff.sigmas[0])
        sigma = self.diff.sigma_at(t).reshape(-1, 1, 1, 1).to(net_input.dtype)
        y, q = net_input * (sigma**2 + SD**2).sqrt(), self.log_q.exp()
        f = self.m + (y - self.m) * (q**2 + sigma_min**2).sqrt() / (q**2 + sigma**2).sqrt()
        shifted = sigma - sigma_min
        c_skip = SD**2 / (shifted**2 + SD**2)
        c_out = torch.where(shifted > 0, shifted * SD / (SD**2 + sigma**2).sqrt(), 1.0)  # f = y at sigma_min
        return (f - c_skip * y) / c_out


def trained_gaussian(method: str, tangent_c: float, steps: int = 300) -> tuple[float, float]:
    """(m, q) of a GaussianConsistency started at (0, 1) and trained by the library's sCT loss on single
    samples of N(M, Q^2), 2x2 images, after the warm-up (w = 1)."""
    from bench.config import ConsistencyConfig
    from bench.training.objectives import Batch

    torch.manual_seed(0)
    diff = diffusion()
    model = GaussianConsistency(diff)
    objective = sct.ContinuousConsistency(ConsistencyConfig(tangent_c=tangent_c), diff, method)
    objective.bind(model)
    student = Denoiser(model, diff, CONSISTENCY, sigma_data=SD)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x0 = M + Q * torch.randn(2048, 1, 2, 2, generator=generator)
        loss = objective.loss(student, Batch(x0), 10**6, generator).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.m.item(), model.log_q.exp().item()


@pytest.mark.parametrize("method", ["jvp", "finite-difference"])
def test_a_student_trained_by_sct_lands_on_the_gaussian_consistency_function(method):
    """From (0, 1) to (M, Q) = (0.4, 0.3) within 0.01, with the paper's tangent normalisation (c = 0.1).
    Seen with the JVP: (0.397, 0.3007); with the warm-up term's sign flipped q lands at 0.114."""
    m, q = trained_gaussian(method, 0.1)
    assert abs(m - M) < 0.01 and abs(q - Q) < 0.01, (m, q)
