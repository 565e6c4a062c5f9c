"""The one-step designs after the seed's question: consistency models (``consistency``: iCT, no teacher;
``consistency-distilled``: CD, with ``--teacher``) and ``reflow`` (a flow trained on a flow teacher's own
pairs), their parametrisation and sampler checked against formulas written here, the teacher and option
checks that refuse a run before anything is written, each design trained and sampled from the CLI with the
``cost`` section of its metrics.json recomputed here from the runs' own training metrics, and exact resume
of the designs whose state goes beyond the regression designs' (CD's target network, iCT's schedule of N).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import denoisers
import schedules
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.grids import Grid
from bench.process.sampling import called_timesteps, grid_points, network_calls, sample
from bench.training.objectives import needs_teacher
from bench.training.objectives.consistency import ict_levels
from tests.helpers import invoke, stop_at_two_and_resume
from tests.helpers import refused_run as refused
from tests.helpers import run_metrics as metrics
from tests.helpers import tiny_run_ok as run_ok

SD = 0.5  # EDM's sigma_data, the designs' default


# --------------------------------------------------------------------------------- the parametrisation
def expected_coefficients(sigma: float, sigma_min: float, sd: float = SD) -> tuple[float, float, float]:
    """Song et al. 2023 (appendix C), written here: c_skip, c_out, and EDM's c_in on y."""
    c_skip = sd**2 / ((sigma - sigma_min) ** 2 + sd**2)
    c_out = (sigma - sigma_min) * sd / math.sqrt(sd**2 + sigma**2)
    c_in = 1.0 / math.sqrt(sigma**2 + sd**2)
    return c_skip, c_out, c_in


class FixedOutput:
    """A 'network' that returns a fixed tensor whatever it is given, and keeps what it was called with."""

    def __init__(self, output: torch.Tensor) -> None:
        self.output = output
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.output


def linear_1000() -> Diffusion:
    return Diffusion(schedules.get("linear")(1000))


def sigma_of_t(diffusion: Diffusion, t: float) -> float:
    """sigma = sqrt((1 - ab) / ab) from the schedule's alpha_bar; between grid points, log sigma linear."""
    ab = diffusion.alpha_bar.double()
    sigmas = ((1 - ab) / ab).sqrt()
    low = math.floor(t)
    if t == low:
        return float(sigmas[low])
    w = t - low
    return math.exp((1 - w) * math.log(float(sigmas[low])) + w * math.log(float(sigmas[low + 1])))


@pytest.mark.parametrize("sd", [0.5, 0.25])
@pytest.mark.parametrize("t", [1, 7, 100, 500, 999, 123.4])
def test_consistency_parametrisation_matches_the_formulas(t, sd):
    diffusion = linear_1000()
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    output = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    net = FixedOutput(output)
    x0, eps = Denoiser(net, diffusion, "consistency", sigma_data=sd)(x_t, t)

    sigma, sigma_min = sigma_of_t(diffusion, t), sigma_of_t(diffusion, 0)
    c_skip, c_out, c_in = expected_coefficients(sigma, sigma_min, sd)
    y = x_t * math.sqrt(1 + sigma**2)  # x_t / sqrt(alpha_bar)
    torch.testing.assert_close(x0, c_skip * y + c_out * output, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(net.inputs[0], c_in * y, rtol=1e-9, atol=1e-12)
    assert torch.isfinite(eps).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_at_t_zero_f_is_the_identity_in_y_whatever_the_network_says(dtype):
    """f(y, sigma_min) = y: c_out is exactly 0 at t = 0, so two wildly different network outputs give the
    same x0, bit for bit, and that x0 is y = x_t / sqrt(alpha_bar_0)."""
    diffusion = linear_1000()
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 3, 4, 4, generator=g).to(dtype)
    outputs = [torch.zeros_like(x_t), 1e6 * torch.randn(x_t.shape, generator=g).to(dtype)]
    x0s = [Denoiser(FixedOutput(o), diffusion, "consistency")(x_t, 0)[0] for o in outputs]
    assert torch.equal(x0s[0], x0s[1])
    y = x_t / diffusion.alpha_bar[0].sqrt().to(dtype)
    torch.testing.assert_close(x0s[0], y, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_finite_at_infinite_sigma_on_rectified_flow(dtype):
    """At t = T-1 of rectified flow sigma = inf: c_skip y -> 0, c_out -> sigma_data, c_in y -> x_t."""
    diffusion = Diffusion(schedules.get("rectified-flow")(50))
    assert math.isinf(float(diffusion.sigmas[-1]))
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(2, 1, 4, 4, generator=g).to(dtype)
    output = torch.randn(2, 1, 4, 4, generator=g).to(dtype)
    net = FixedOutput(output)
    x0, eps = Denoiser(net, diffusion, "consistency")(x_t, 49)
    assert torch.isfinite(x0).all() and torch.isfinite(eps).all() and torch.isfinite(net.inputs[0]).all()
    torch.testing.assert_close(x0, SD * output)
    torch.testing.assert_close(net.inputs[0], x_t)
    # the finite level next to it still follows the formulas
    sigma, sigma_min = sigma_of_t(diffusion, 48), sigma_of_t(diffusion, 0)
    c_skip, c_out, _ = expected_coefficients(sigma, sigma_min)
    x0, _ = Denoiser(FixedOutput(output), diffusion, "consistency")(x_t, 48)
    y = x_t.double() * math.sqrt(1 + sigma**2)
    torch.testing.assert_close(x0.double(), c_skip * y + c_out * output.double(), rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------------------- sampler
class CountingNet(torch.nn.Module):
    """A deterministic smooth function of (x, t) that counts its calls and keeps their timesteps."""

    def __init__(self) -> None:
        super().__init__()
        self.timesteps: list[float] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert bool((t == t[0]).all())
        self.timesteps.append(t[0].item())
        return torch.tanh(2 * x + t.double().view(-1, 1, 1, 1).to(x.dtype) / 1000)


def test_one_consistency_step_is_the_one_shot_call_bit_for_bit():
    diffusion = linear_1000()
    x_T = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    nets = [CountingNet(), CountingNet()]
    shape = tuple(x_T.shape)
    one = sample(Denoiser(nets[0], diffusion, "consistency"), shape, method="consistency", steps=1, x_T=x_T)
    shot = sample(Denoiser(nets[1], diffusion, "consistency"), shape, method="one_shot", x_T=x_T)
    assert torch.equal(one, shot)
    assert nets[0].timesteps == nets[1].timesteps == [999]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (1, [999]),
        (2, [999, 500]),  # grid 999, 500 (499.5 rounds to even), 0
        (4, [999, 749, 500, 250]),  # grid 999, 749.25, 499.5, 249.75, 0 rounded; the last not called
    ],
)
def test_k_consistency_steps_make_k_calls_at_the_declared_timesteps(steps, expected):
    diffusion = linear_1000()
    net = CountingNet()
    generator = torch.Generator().manual_seed(4)
    sample(Denoiser(net, diffusion, "consistency"), (2, 1, 4, 4), method="consistency", steps=steps,
           generator=generator)  # fmt: skip
    assert net.timesteps == expected
    assert network_calls("consistency", steps) == steps
    grid = Grid().timesteps(diffusion, grid_points("consistency", steps))
    assert grid[-1] == 0 and len(grid) == steps + 1
    assert called_timesteps("consistency", grid) == expected


def test_consistency_steps_on_the_karras_grid_call_each_level_but_the_last():
    diffusion = linear_1000()
    net = CountingNet()
    sample(Denoiser(net, diffusion, "consistency"), (2, 1, 4, 4), method="consistency", steps=3,
           grid="karras", generator=torch.Generator().manual_seed(5))  # fmt: skip
    grid = Grid("karras").timesteps(diffusion, 4)
    assert len(net.timesteps) == 3
    assert net.timesteps == pytest.approx(called_timesteps("consistency", grid))
    assert net.timesteps == pytest.approx(grid[:3]) and grid[-1] == pytest.approx(0, abs=1e-9)


def test_zero_consistency_steps_are_a_clear_error():
    denoiser = Denoiser(CountingNet(), linear_1000(), "consistency")
    with pytest.raises(ValueError, match=r"steps.*got 0"):
        sample(denoiser, (2, 1, 4, 4), method="consistency", steps=0)


def test_too_many_consistency_steps_are_refused_with_the_most_it_takes():
    """N steps walk N + 1 grid points: on T = 50 timesteps, at most 49 steps."""
    denoiser = Denoiser(CountingNet(), Diffusion(schedules.get("linear")(50)), "consistency")
    with pytest.raises(ValueError, match=r"sampler 'consistency' .* for 50 steps.* at most 49 steps"):
        sample(denoiser, (2, 1, 4, 4), method="consistency", steps=50)
    assert sample(denoiser, (2, 1, 4, 4), method="consistency", steps=49).shape == (2, 1, 4, 4)


M, S = 0.3, 0.4  # Gaussian data, per pixel


class ExactConsistencyFunction:
    """F such that the consistency wrapper's f(y, sigma) is the exact ODE map of N(M, S^2) data from sigma
    to sigma_min: along the probability-flow ODE, y - M scales as sqrt(S^2 + sigma^2)."""

    def __init__(self, diffusion: Diffusion) -> None:
        self.diffusion = diffusion
        self.sigma_min = sigma_of_t(diffusion, 0)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = float(self.diffusion.t_to_sigma(t[:1].double())[0])
        c_skip, c_out, c_in = expected_coefficients(sigma, self.sigma_min)
        y = x.double() / c_in
        f = M + (y - M) * math.sqrt(S**2 + self.sigma_min**2) / math.sqrt(S**2 + sigma**2)
        return ((f - c_skip * y) / c_out).to(x.dtype)


def test_multistep_sampling_with_the_exact_consistency_function_follows_the_closed_form():
    """From x_T ~ N(0, I) at a truncated sigma_max = 2 (so the first call is off the data's trajectory), the
    mean and variance after each re-noise (tau^2 - sigma_min^2) and call are an affine recursion, computed
    here; three steps land near N(M, S^2 + sigma_min^2)."""
    diffusion = linear_1000()
    steps, n = 3, 40_000
    denoiser = Denoiser(ExactConsistencyFunction(diffusion), diffusion, "consistency")
    generator = torch.Generator().manual_seed(6)
    out = sample(denoiser, (n, 1, 2, 2), method="consistency", steps=steps, generator=generator,
                 grid="karras", sigma_max=2.0)  # fmt: skip
    grid = Grid("karras", sigma_max=2.0).timesteps(diffusion, steps + 1)
    sigmas = [sigma_of_t(diffusion, t) for t in grid[:-1]]
    smin = sigma_of_t(diffusion, 0)

    def gain(sigma: float) -> float:
        return math.sqrt(S**2 + smin**2) / math.sqrt(S**2 + sigma**2)

    mean, var = M * (1 - gain(sigmas[0])), gain(sigmas[0]) ** 2 * (1 + sigmas[0] ** 2)  # y_T ~ N(0, 1 + s^2)
    for sigma in sigmas[1:]:
        mean, var = M + (mean - M) * gain(sigma), gain(sigma) ** 2 * (var + sigma**2 - smin**2)
    assert out.mean().item() == pytest.approx(mean, abs=0.005)
    assert out.std().item() == pytest.approx(math.sqrt(var), rel=0.01)
    assert abs(mean - M) > 0.01  # the recursion is not trivially at the data's moments yet


# ------------------------------------------------------------------------------------- iCT's schedule
def test_ict_levels_double_in_equal_stretches():
    """Song & Dhariwal 2023, section 3.4: N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K /
    (log2 floor(s1 / s0) + 1)); for s0 = 10, s1 = 1280, K = 400,000: K' = 50,000."""
    assert [ict_levels(k, 400_000, 10, 1280) for k in (0, 49_999, 50_000, 100_000, 349_999)] == [
        11, 11, 21, 41, 641,
    ]  # fmt: skip
    assert ict_levels(350_000, 400_000, 10, 1280) == ict_levels(399_999, 400_000, 10, 1280) == 1281
    assert [ict_levels(k, 6, 2, 4) for k in range(6)] == [3, 3, 3, 5, 5, 5]


def test_ict_levels_reach_s1_when_the_ratio_is_not_a_power_of_two():
    """The paper's K' does not round log2: s0 = 10, s1 = 1000, K = 70,000 give log2(100) + 1 = 7.6439, K' =
    floor(70,000 / 7.6439) = 9,157, and at the last step floor(69,999 / 9,157) = 7 doublings, min(10 x 128,
    1000) + 1 = 1001 levels from step 7 x 9,157 = 64,099 (rounding log2 down to 6 gives K' = 10,000, and N
    ends at 10 x 64 + 1 = 641)."""
    assert [ict_levels(k, 70_000, 10, 1000) for k in (0, 9_156, 9_157, 18_314, 64_098, 64_099, 69_999)] == [
        11, 11, 21, 41, 641, 1001, 1001,
    ]  # fmt: skip


# ------------------------------------------------------------------------------------- CLI: the runs
STEPS, BATCH = 6, 16


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Each teacher trained once: an eps U-Net, an EDM one (a consistency student's), a class-conditional
    one, a flow on rectified flow; and the designs that learn from them (a reflow of the flow and the
    reflow's one-call student)."""
    out = tmp_path_factory.mktemp("runs")
    folders = {
        "teacher": run_ok(out, "teacher"),
        "edm": run_ok(out, "edm", "--target", "edm"),
        "conditional": run_ok(out, "conditional", "--conditional"),
        "flow": run_ok(out, "flow", "--target", "flow", "--schedule", "rectified-flow"),
    }
    flow = ["--schedule", "rectified-flow", "--pairs", "32"]
    folders["reflow"] = run_ok(
        out, "reflow", "--denoiser", "reflow", *flow, "--teacher", str(folders["flow"]),
        "--teacher-steps", "3",
    )  # fmt: skip
    folders["student"] = run_ok(
        out, "student", "--denoiser", "direct-distilled", "-o", "target=flow", *flow,
        "--teacher", str(folders["reflow"]), "--teacher-steps", "2",
    )  # fmt: skip
    return folders


@pytest.mark.parametrize(
    ("teacher", "args", "message"),
    [
        (None, ["--denoiser", "consistency-distilled"],
         "denoiser 'consistency-distilled' learns from a teacher: give --teacher RUN_DIR"),
        ("teacher", ["--denoiser", "consistency-distilled", "--image-size", "12"],
         "makes 1x8x8 images, but this run trains on 1x12x12"),
        ("teacher", ["--denoiser", "consistency-distilled", "--schedule", "cosine"],
         "was trained on the 'linear' schedule (T=50) and this run uses 'cosine' (T=50)"),
        ("teacher", ["--denoiser", "consistency-distilled", "--timesteps", "40"],
         "so give this run --schedule linear --timesteps 50"),
        ("conditional", ["--denoiser", "consistency-distilled"],
         "is class-conditional (10 classes) and this run is unconditional"),
        ("edm", ["--denoiser", "consistency-distilled", "-o", "base_channels=16"],
         "the student cannot start from the teacher's weights"),
        ("teacher", ["--denoiser", "consistency-distilled"],
         "the teacher predicts 'eps' (sigma_data 0.5) and this student 'consistency' (sigma_data 0.5): the "
         "student starts from the teacher's weights and would read their output as its own; use a teacher "
         "trained with --target edm (sigma_data 0.5), or pass --student-init random"),
        ("teacher", ["--denoiser", "consistency-distilled", "--student-init", "random"], None),
        ("teacher", ["--denoiser", "reflow"],
         "predicts 'eps': reflow trains on a flow's own (noise, image) pairs"),
        ("flow", ["--denoiser", "reflow"],  # a flow teacher, but the student left on the linear schedule
         "was trained on the 'rectified-flow' schedule"),
        (None, ["--denoiser", "reflow"], "with --target flow"),
        ("reflow", ["--denoiser", "consistency-distilled", "--schedule", "rectified-flow",
                    "--student-init", "random"], None),  # a reflow run is a teacher: accepted (below)
    ],
    ids=["no-teacher", "image-size", "schedule", "timesteps", "classes", "network", "eps-weights",
         "eps-random-init", "reflow-of-eps",
         "reflow-schedule", "reflow-no-teacher", "reflow-teaches"],
)  # fmt: skip
def test_a_teacher_that_cannot_teach_is_a_usage_error_and_nothing_is_written(
    runs, tmp_path, teacher, args, message
):
    extra = ["--teacher", str(runs[teacher])] if teacher else []
    if message is None:
        run_ok(tmp_path / "out", "accepted", *args, *extra, "--steps", "1")
        return
    assert message in refused(tmp_path, *args, *extra)


def test_a_consistency_run_is_no_teacher(tmp_path):
    ct = run_ok(tmp_path / "ct", "ct", "--denoiser", "consistency", "--steps", "1")
    message = refused(tmp_path, "--denoiser", "consistency-distilled", "--teacher", str(ct))
    assert "is a 'consistency' run" in message and "ODE to follow" in message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--levels", "1"], "levels must be >= 2, got 1"),
        (["--levels-start", "1"], "levels_start must be >= 2, got 1"),
        (["--levels-start", "20", "--levels-end", "10"], "levels_end (10) must be at least levels_start"),
        (["--target-ema", "1"], "target_ema must be in [0, 1), got 1.0"),
        (["--target-ema", "-0.1"], "target_ema must be in [0, 1), got -0.1"),
        (["--huber-c", "0"], "huber_c must be a positive number, got 0.0"),
        (["--huber-c", "-1"], "huber_c must be a positive number, got -1.0"),
        (["--distance", "lpips"], "'lpips' is not one of 'pseudo-huber', 'l2'"),
        (["--teacher-solver", "euler"], "'euler' is not one of 'heun', 'ddim'"),
        (["--sampler", "consistency", "--sample-steps", "0"], "steps must be a positive integer, got 0"),
        (["--loss-weight", "edm"], "draws its own noise levels and weights its own loss"),
    ],
)
def test_bad_consistency_options_are_usage_errors_and_nothing_is_written(tmp_path, args, message):
    assert message in refused(tmp_path, "--denoiser", "consistency", *args)


def cost_of(run_dir: Path) -> tuple[dict, dict]:
    data = metrics(run_dir)
    return data["cost"], data["train"]


def test_a_regression_run_costs_its_own_training(runs):
    cost, train = cost_of(runs["teacher"])
    assert train["images_seen"] == STEPS * BATCH
    assert cost == {"train_flops": STEPS * BATCH * train["training_flops_per_image"],
                    "total_flops": STEPS * BATCH * train["training_flops_per_image"]}  # fmt: skip


def test_consistency_training_runs_samples_in_one_call_and_pays_its_target_forward(tmp_path):
    run_dir = run_ok(tmp_path, "ct", "--denoiser", "consistency")
    data = metrics(run_dir)
    assert (data["sample"]["method"], data["sample"]["steps"]) == ("consistency", 1)
    assert data["sample"]["network_evaluations_per_image"] == 1
    cost, train = data["cost"], data["train"]
    assert train["images_seen"] == STEPS * BATCH
    own = STEPS * BATCH * (train["training_flops_per_image"] + train["forward_flops_per_image"])
    assert cost == {"train_flops": own, "total_flops": own}


@pytest.mark.parametrize(("solver", "calls"), [("heun", 2), ("ddim", 1)])
def test_consistency_distillation_counts_its_teacher_and_the_teachers_calls(runs, tmp_path, solver, calls):
    teacher = metrics(runs["edm"])
    run_dir = run_ok(
        tmp_path, "cd", "--denoiser", "consistency-distilled", "--teacher", str(runs["edm"]),
        "--teacher-solver", solver, "--sampler", "consistency", "--sample-steps", "2",
    )  # fmt: skip
    data = metrics(run_dir)
    assert (data["sample"]["method"], data["sample"]["steps"]) == ("consistency", 2)
    assert data["sample"]["network_evaluations_per_image"] == 2
    cost, train = data["cost"], data["train"]
    seen = train["images_seen"]
    assert seen == STEPS * BATCH
    per_image = train["training_flops_per_image"] + train["forward_flops_per_image"]  # + the target's forward
    assert cost["train_flops"] == seen * per_image
    assert cost["teacher_calls"] == seen * calls
    assert cost["teacher_call_flops"] == cost["teacher_calls"] * teacher["train"]["forward_flops_per_image"]
    assert cost["teacher_flops"] == teacher["cost"]["total_flops"]
    assert cost["pair_flops"] is None
    assert cost["total_flops"] == cost["train_flops"] + cost["teacher_flops"] + cost["teacher_call_flops"]


def test_reflow_and_its_one_call_student_count_the_whole_chain(runs):
    flow, reflow, student = (metrics(runs[name]) for name in ("flow", "reflow", "student"))
    assert reflow["sample"]["method"] == "ddim" and student["sample"]["method"] == "one_shot"
    assert reflow["sample"]["eta"] == 0.0  # along its ODE, the coupling it learnt, not with fresh noise
    for data, teacher, steps in ((reflow, flow, 3), (student, reflow, 2)):
        cost, train = data["cost"], data["train"]
        assert train["images_seen"] == STEPS * BATCH
        assert cost["train_flops"] == train["images_seen"] * train["training_flops_per_image"]
        assert cost["pair_flops"] == 32 * steps * teacher["train"]["forward_flops_per_image"]
        assert cost["pair_flops"] == data["distillation"]["pair_flops"]
        assert cost["teacher_calls"] == 0 and not cost["teacher_call_flops"]
        assert cost["teacher_flops"] == teacher["cost"]["total_flops"]
        assert cost["total_flops"] == cost["train_flops"] + cost["teacher_flops"] + cost["pair_flops"]
    # the student's teacher cost is the reflow's total, which holds the flow's
    assert reflow["cost"]["teacher_flops"] == flow["cost"]["total_flops"] == flow["cost"]["train_flops"]
    assert student["cost"]["teacher_flops"] == reflow["cost"]["total_flops"] > flow["cost"]["total_flops"]


# --------------------------------------------------------------------------------------------- resume


def checkpoint_parts(run_dir: Path) -> dict[str, dict]:
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == STEPS
    parts = {"model": ckpt["model"], "ema": ckpt["ema"]["module"]}
    if ckpt.get("objective"):
        parts["target"] = ckpt["objective"]["target"]["module"]
    return parts


def assert_same_weights(a: Path, b: Path, *, parts: set[str]) -> None:
    first, second = checkpoint_parts(a), checkpoint_parts(b)
    assert set(first) == set(second) == parts
    for part in parts:
        x, y = first[part], second[part]
        assert x.keys() == y.keys()
        differing = [key for key in x if not torch.equal(x[key], y[key])]
        assert not differing, f"{part}: {len(differing)} of {len(x)} tensors differ, e.g. {differing[:3]}"


DESIGNS = {
    "consistency-distilled": (["--denoiser", "consistency-distilled"], {"model", "ema", "target"}),
    # N doubles every 3 steps of 6: the cut falls inside the first stretch, the resume crosses to N = 5
    "consistency": (["--denoiser", "consistency", "--levels-start", "2", "--levels-end", "4"],
                    {"model", "ema"}),
}  # fmt: skip


@pytest.mark.parametrize("design", list(DESIGNS))
def test_a_run_stopped_part_way_and_resumed_ends_bit_identical_to_a_straight_run(
    runs, tmp_path, monkeypatch, design
):
    args, parts = DESIGNS[design]
    if design == "consistency-distilled":
        args = [*args, "--teacher", str(runs["edm"])]
    straight = run_ok(tmp_path, "straight", *args)
    assert_same_weights(straight, stop_at_two_and_resume(tmp_path, monkeypatch, *args), parts=parts)


def test_consistency_distillation_cut_by_its_budget_and_extended_ends_bit_identical(runs, tmp_path):
    """The existing pattern (tests/test_resume_exact.py): a run of N steps, resumed with --steps 2N."""
    args = ["--denoiser", "consistency-distilled", "--teacher", str(runs["edm"])]
    straight = run_ok(tmp_path, "straight", *args)
    run_ok(tmp_path, "cut", *args, "--steps", str(STEPS // 2))
    resumed = invoke("run", "--resume", str(tmp_path / "cut"), "--steps", str(STEPS), "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(straight, tmp_path / "cut", parts={"model", "ema", "target"})


def test_extending_a_consistency_training_run_is_refused_and_changes_nothing(tmp_path):
    """iCT's N doubles in stretches of the planned steps: a longer budget on resume would make a run that is
    neither the planned one nor the longer one, so it is a usage error and the folder is left as it was."""
    args = DESIGNS["consistency"][0]
    run_ok(tmp_path, "cut", *args, "--steps", str(STEPS // 2))
    before = {p.name: p.read_bytes() for p in (tmp_path / "cut").iterdir() if p.is_file()}
    resumed = invoke("run", "--resume", str(tmp_path / "cut"), "--steps", str(STEPS), "--quiet")
    assert resumed.exit_code == 2, resumed.output
    assert f"planned for {STEPS // 2} steps" in resumed.output and "cannot be extended" in resumed.output
    after = {p.name: p.read_bytes() for p in (tmp_path / "cut").iterdir() if p.is_file()}
    assert after == before


# ------------------------------------------------------------------------------- what the sampler meets
@pytest.mark.parametrize(("schedule", "grid"), [("linear", Grid()), ("rectified-flow", Grid("karras"))])
def test_the_consistency_samplers_first_call_is_at_a_level_the_objective_trains(schedule, grid):
    from bench.config import ConsistencyConfig
    from bench.training.objectives.consistency import ConsistencyObjective

    diffusion = Diffusion(schedules.get(schedule)(50))
    objective = ConsistencyObjective("consistency-training", ConsistencyConfig(), diffusion, total_steps=10,
                                     image_shape=(1, 8, 8))  # fmt: skip
    _, trained_t = objective.grid(18, torch.device("cpu"))
    timesteps = grid.timesteps(diffusion, grid_points("consistency", 1))
    first_call = called_timesteps("consistency", timesteps)[0]
    assert first_call <= float(trained_t.max()) + 1e-9


def test_the_consistency_sampler_refuses_to_start_at_pure_noise():
    """On a zero-terminal-SNR schedule the uniform grid starts at sigma = inf, which the objectives never
    train at: refused with the grids that start at the largest finite level."""
    from bench.process.denoiser import ImpossibleDesign

    denoiser = Denoiser(CountingNet(), Diffusion(schedules.get("rectified-flow")(50)), "consistency")
    with pytest.raises(ImpossibleDesign, match="--grid karras or log-snr"):
        sample(denoiser, (2, 1, 4, 4), method="consistency", steps=1)
    assert sample(denoiser, (2, 1, 4, 4), method="consistency", steps=1, grid="karras").isfinite().all()


# ----------------------------------------------------------------------------------------- bench list
def test_bench_list_names_the_new_designs_and_which_need_a_teacher():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    text = result.output.splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("denoisers (at "))
    end = text.index("", start)
    rows = [line for line in text[start + 1 : end] if line.startswith("  ") and line[2] != " "]
    lines = {line.split()[0]: line for line in rows}
    for name in ("consistency", "consistency-distilled", "reflow"):
        assert name in lines, result.output
        recipe = denoisers.recipe_of(denoisers.get(name)((1, 8, 8)))
        assert ("needs --teacher" in lines[name]) == needs_teacher(recipe)
    assert "needs --teacher" in lines["consistency-distilled"] and "needs --teacher" in lines["reflow"]
    assert "needs --teacher" not in lines["consistency"]
    assert any(line.split()[:2] == ["consistency", "Multistep"] for line in text[end:])  # the sampler
