"""Progressive distillation (Salimans & Ho 2022; ``bench/training/objectives/progressive.py`` and the
``progressive-distilled`` design): the student's DDIM grid is every other point of its teacher's, checked
against grids written here from ``torch.linspace``; on Gaussian data, where the exact teacher makes every
DDIM step affine, a student
affine in its input trained with the objective takes in N steps exactly the map its teacher takes in
2N - 1, composed here in closed form, and targets broken on purpose (one teacher step, a wrong ratio) do
not; and from the CLI a student round samples on its own grid, counts its two teacher calls per image,
teaches the next round, refuses teacher steps that do not halve, and resumes bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import schedules
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.grids import ddim_timesteps
from bench.process.oracles import GaussianData
from bench.process.sampling import SAMPLERS
from bench.training.objectives import Batch
from bench.training.objectives.progressive import (
    CLEAN,
    ProgressiveObjective,
    coefficients,
    ddim_step,
    halving_steps,
    student_steps,
)
from tests.helpers import refused_run as refused
from tests.helpers import run_metrics as metrics
from tests.helpers import stop_at_two_and_resume
from tests.helpers import tiny_run_ok as run_ok


# ------------------------------------------------------------------------------------------- the grids
def linspace_grid(num_timesteps: int, steps: int) -> list[int]:
    """DDIM's uniform grid, written here: ``steps`` points of linspace(0, T-1) rounded, descending."""
    if steps == 1:
        return [num_timesteps - 1]
    points = torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long()
    return points.flip(0).tolist()


@pytest.mark.parametrize("T", [50, 100, 999, 1000])
def test_the_students_grid_is_every_other_point_of_its_teachers(T):
    """Point k of the N-point grid, k (T-1) / (N-1), is point 2k of the (2N-1)-point grid, exactly, and
    both round it the same way: equality of integer lists, no tolerance."""
    for n in range(2, 18):
        assert ddim_timesteps(T, n) == ddim_timesteps(T, 2 * n - 1)[::2], (T, n)
        assert ddim_timesteps(T, n) == linspace_grid(T, n)


@pytest.mark.parametrize("T", [50, 1000])
@pytest.mark.parametrize("n", range(2, 18))
def test_each_student_step_is_two_consecutive_teacher_steps_and_the_last_is_the_teachers_own(T, n):
    """Every one of the student's n steps is trained: n - 1 of two teacher steps each, and the last, from
    t = 0 to the image, the teacher's one step there (written with the image as its middle)."""
    teacher = linspace_grid(T, 2 * n - 1)
    starts, middles, ends = halving_steps(T, 2 * n - 1)
    triples = [tuple(teacher[i : i + 3]) for i in range(0, len(teacher) - 2, 2)]
    assert len(triples) == n - 1
    assert list(zip(starts, middles, ends, strict=True)) == [*triples, (0, CLEAN, CLEAN)]
    assert starts == linspace_grid(T, n) and ends[-2:] == [0, CLEAN]
    assert student_steps(2 * n - 1) == n


@pytest.mark.parametrize("T", [50, 1000])
def test_two_teacher_steps_halve_to_one_call_from_pure_noise_to_the_image(T):
    assert halving_steps(T, 2) == ([T - 1], [0], [CLEAN])
    assert student_steps(2) == 1


@pytest.mark.parametrize("teacher_steps", [0, 1, 4, 6, 32, -3])
def test_teacher_steps_that_do_not_halve_are_refused_with_the_valid_choices(teacher_steps):
    with pytest.raises(ValueError, match=rf"odd --teacher-steps >= 3 .*or 2 \(-> 1\), got {teacher_steps}$"):
        student_steps(teacher_steps)
    with pytest.raises(ValueError, match="odd --teacher-steps >= 3"):
        halving_steps(1000, teacher_steps)


# ------------------------------------------------------------------------- the Gaussian-data oracle
M, SD = 0.3, 0.6  # data N(M, SD^2) in every dimension
T = 100


def linear_diffusion() -> Diffusion:
    return Diffusion(schedules.make("linear", T))


def ab(diffusion: Diffusion, t: int) -> tuple[float, float]:
    """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)); (1, 0) for the image at the end of the last step."""
    if t == CLEAN:
        return 1.0, 0.0
    alpha_bar = float(diffusion.alpha_bar[t])
    return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)


def exact_x0_map(diffusion: Diffusion, t: int) -> tuple[float, float]:
    """E[x0 | z_t] = m + a s^2 (z - a m) / (a^2 s^2 + b^2) as (slope, intercept) in z."""
    a, b = ab(diffusion, t)
    d = a * a * SD * SD + b * b
    return a * SD * SD / d, M * (1.0 - a * a * SD * SD / d)


def teacher_map(diffusion: Diffusion, grid: list[int]) -> tuple[float, float]:
    """The exact teacher's deterministic DDIM on ``grid`` then to the image, as (slope, intercept) from
    x_T: each step z' = a' x0_hat + b' eps_hat with x0_hat = m + a s^2 (z - a m) / D and eps_hat = b (z -
    a m) / D (D = a^2 s^2 + b^2) is affine in z, and the last, to the image, returns x0_hat."""
    slope, intercept = 1.0, 0.0
    for t, t_next in zip(grid, [*grid[1:], CLEAN], strict=True):
        a, b = ab(diffusion, t)
        a_next, b_next = ab(diffusion, t_next)
        d = a * a * SD * SD + b * b
        x0_slope, x0_intercept = a * SD * SD / d, M - a * a * SD * SD * M / d
        eps_slope, eps_intercept = b / d, -a * b * M / d
        step_slope = a_next * x0_slope + b_next * eps_slope
        step_intercept = a_next * x0_intercept + b_next * eps_intercept
        slope, intercept = step_slope * slope, step_slope * intercept + step_intercept
    return slope, intercept


def exact_teacher(diffusion: Diffusion) -> Denoiser:
    return Denoiser(GaussianData(M, SD).network(diffusion, "eps"), diffusion, "eps")


def sampler_map(denoiser: Denoiser, grid: list[int]) -> tuple[float, float]:
    """(slope, intercept) of the DDIM eta-0 map, run in float64 at x_T = 0 and 1 (it is affine)."""
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    with torch.no_grad():
        out = SAMPLERS.get("ddim")(denoiser, x, grid, eta=0.0)
    return float(out[1, 0] - out[0, 0]), float(out[0, 0])


def map_error(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]))


@pytest.mark.parametrize("teacher_steps", [2, 3, 5, 9])
def test_the_closed_form_is_the_exact_teachers_own_ddim(teacher_steps):
    """The map written above against the sampler run on the exact network: float64 round-off only, 1e-12."""
    diffusion = linear_diffusion()
    grid = ddim_timesteps(T, teacher_steps)
    closed = teacher_map(diffusion, grid)
    assert map_error(sampler_map(exact_teacher(diffusion), grid), closed) < 1e-12


class AffineStudent(nn.Module):
    """x0_hat = A[t] z + B[t]: one slope and intercept per integer timestep, float64, started from the exact
    teacher's x0 map at every t, as the real student starts from its teacher's weights (or, with
    ``from_teacher=False``, from the identity map, so that every step it takes must be learnt)."""

    def __init__(self, diffusion: Diffusion, from_teacher: bool = True) -> None:
        super().__init__()
        maps = torch.tensor([exact_x0_map(diffusion, t) for t in range(T)], dtype=torch.float64)
        if not from_teacher:
            maps = torch.tensor([[1.0, 0.0]] * T, dtype=torch.float64)
        self.A = nn.Parameter(maps[:, 0].clone())
        self.B = nn.Parameter(maps[:, 1].clone())

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shape = (-1, *[1] * (z.ndim - 1))
        return self.A[t].view(shape) * z + self.B[t].view(shape)


def train_student(
    teacher_steps: int, *, steps: int = 1000, batch: int = 32, from_teacher: bool = True
) -> Denoiser:
    """Adam on the objective's loss, the learning rate decaying 1e-2 -> 1e-5 over ``steps``, seeded."""
    diffusion = linear_diffusion()
    net = AffineStudent(diffusion, from_teacher)
    student = Denoiser(net, diffusion, "x0")
    objective = ProgressiveObjective(diffusion, exact_teacher(diffusion), teacher_steps)
    objective.bind(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1e-3 ** (k / steps))
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        x0 = M + SD * torch.randn(batch, 4, generator=generator, dtype=torch.float64)
        loss = objective.loss(student, Batch(x0), step, generator).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
    return student


TOL = 1e-6


@pytest.mark.parametrize("teacher_steps", [2, 3, 5, 9])
def test_the_trained_student_takes_in_n_steps_the_teachers_2n_minus_1(teacher_steps):
    """The student's N-step DDIM (the sampler, float64, on ddim_timesteps(T, N)) against the teacher's
    (2N-1)-step map in closed form: slope and intercept within 1e-6. The optimum is exact (the targets are
    affine in z_t and so is the student), and what is left is the optimiser's: the objective's loss is taken
    in float32, yet we see errors of about 1e-11; 1e-6 keeps a margin and is still five orders below what
    the broken targets below leave (>= 0.1). The inherited student, before training, is the teacher's own
    N-step map, more than 1e-3 away, so the comparison has teeth."""
    n = student_steps(teacher_steps)
    diffusion = linear_diffusion()
    expected = teacher_map(diffusion, ddim_timesteps(T, teacher_steps))
    before = sampler_map(Denoiser(AffineStudent(diffusion), diffusion, "x0"), ddim_timesteps(T, n))
    assert map_error(before, expected) > 1e-3
    after = sampler_map(train_student(teacher_steps), ddim_timesteps(T, n))
    assert map_error(after, expected) < TOL, (after, expected)


@pytest.mark.parametrize("teacher_steps", [3, 5])
def test_a_student_that_does_not_start_at_its_teachers_last_step_learns_it(teacher_steps):
    """Started from the identity map at every t, the student must learn its last step (t = 0 to the image)
    too: its table there ends at the teacher's own x0 map, (0.99773, 0.00083) for this schedule, within
    1e-6 (we see 1e-11). A student whose last step were left out of the loss keeps the identity (1, 0), 2e-3
    away. The real student is a network shared across timesteps: training its other steps moves its step
    at t = 0 as surely as this one starts away from it."""
    diffusion = linear_diffusion()
    net = train_student(teacher_steps, from_teacher=False).net
    last = (net.A[0].item(), net.B[0].item())
    assert map_error(last, exact_x0_map(diffusion, 0)) < TOL, last


def test_two_teacher_steps_make_a_one_call_student():
    """S = 2: the student's one call from T-1 is the teacher's two steps (T-1 -> 0 -> image), read off its
    table; 1e-6 as above."""
    diffusion = linear_diffusion()
    net = train_student(2).net
    one_call = (net.A[T - 1].item(), net.B[T - 1].item())
    assert map_error(one_call, teacher_map(diffusion, [T - 1, 0])) < TOL


# ------------------------------------------------------------------------------ broken on purpose
def broken_target(*, one_step: bool = False, ratio=lambda a, b, a_end, b_end: b_end / b):
    """ProgressiveObjective.target as eq. 7 writes it, with one teacher step or another ratio."""

    def target(self, z_t, t, t_mid, t_end):
        with torch.no_grad():
            if one_step:
                z_end = ddim_step(self.teacher, z_t, t, t_end)
            else:
                z_end = ddim_step(self.teacher, ddim_step(self.teacher, z_t, t, t_mid), t_mid, t_end)
        a, b = coefficients(self.diffusion, t, z_t)
        a_end, b_end = coefficients(self.diffusion, t_end, z_t)
        r = ratio(a, b, a_end, b_end)
        return (z_end - r * z_t) / (a_end - r * a)

    return target


BREAKS = {
    # the student learns the teacher's single step: its N-step map is the teacher's N-step map
    "one-teacher-step": broken_target(one_step=True),
    # EDM's sigma = b / a in place of sqrt(1 - alpha_bar): the step no longer lands where the teacher's do
    "edm-sigma-ratio": broken_target(ratio=lambda a, b, a_end, b_end: (b_end / a_end) / (b / a)),
    # alphas for sigmas: the denominator a_end - (a_end / a) a is about 0, the target blows up
    "alpha-ratio": broken_target(ratio=lambda a, b, a_end, b_end: a_end / a),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_a_broken_target_leaves_the_student_off_the_teachers_map(monkeypatch, name):
    """The same training as above with the target broken: the error stays above 1e-2 (we see >= 0.1 for the
    first two), or is not finite (the third): never within the tolerance the right target meets."""
    monkeypatch.setattr(ProgressiveObjective, "target", BREAKS[name])
    diffusion = linear_diffusion()
    expected = teacher_map(diffusion, ddim_timesteps(T, 5))
    error = map_error(sampler_map(train_student(5), ddim_timesteps(T, 3)), expected)
    assert not error < 1e-2, error


# ------------------------------------------------------------------------------------ CLI: the runs
STEPS, BATCH = 6, 16
PROGRESSIVE = ["--denoiser", "progressive-distilled"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An EDM U-Net teacher, its 5 -> 3-step student, and that student's 3 -> 2-step student."""
    out = tmp_path_factory.mktemp("progressive")
    folders = {"teacher": run_ok(out, "teacher", "--target", "edm")}
    folders["round1"] = run_ok(
        out, "round1", *PROGRESSIVE, "--teacher", str(folders["teacher"]), "--teacher-steps", "5"
    )
    folders["round2"] = run_ok(
        out, "round2", *PROGRESSIVE, "--teacher", str(folders["round1"]), "--teacher-steps", "3"
    )
    return folders


@pytest.mark.parametrize(("name", "calls"), [("round1", 3), ("round2", 2)])
def test_a_student_samples_with_deterministic_ddim_on_its_own_grid(runs, name, calls):
    sample = metrics(runs[name])["sample"]
    assert (sample["method"], sample["steps"], sample["eta"]) == ("ddim", calls, 0.0)
    assert sample["network_evaluations_per_image"] == calls


@pytest.mark.parametrize(("name", "teacher"), [("round1", "teacher"), ("round2", "round1")])
def test_a_student_pays_two_teacher_calls_per_image_and_its_teachers_whole_cost(runs, name, teacher):
    data, taught_by = metrics(runs[name]), metrics(runs[teacher])
    cost, train = data["cost"], data["train"]
    seen = train["images_seen"]
    assert seen == STEPS * BATCH
    assert cost["train_flops"] == seen * train["training_flops_per_image"]  # no extra forward of its own
    assert cost["teacher_calls"] == seen * 2
    assert cost["teacher_call_flops"] == cost["teacher_calls"] * taught_by["train"]["forward_flops_per_image"]
    assert cost["teacher_flops"] == taught_by["cost"]["total_flops"]
    assert cost["pair_flops"] is None
    assert cost["total_flops"] == cost["train_flops"] + cost["teacher_flops"] + cost["teacher_call_flops"]


def test_two_teacher_steps_make_a_one_call_student_from_the_cli(runs, tmp_path):
    data = metrics(run_ok(tmp_path, "round3", *PROGRESSIVE, "--teacher", str(runs["round2"]),
                          "--teacher-steps", "2"))  # fmt: skip
    assert (data["sample"]["method"], data["sample"]["steps"], data["sample"]["eta"]) == ("ddim", 1, 0.0)
    assert data["sample"]["network_evaluations_per_image"] == 1


@pytest.mark.parametrize(
    ("teacher", "args", "message"),
    [
        (True, ["--teacher-steps", "4"], "odd --teacher-steps >= 3 (2N - 1 steps -> N, e.g. 33, 17, 9, 5, 3) "
                                         "or 2 (-> 1), got 4"),
        (True, ["--teacher-steps", "1"], "odd --teacher-steps >= 3"),
        (False, ["--teacher-steps", "5"], "denoiser 'progressive-distilled' learns from a teacher: give "
                                          "--teacher RUN_DIR"),
        (True, ["--teacher-steps", "5", "-o", "target=eps"], "eps"),
    ],
    ids=["even", "one", "no-teacher", "eps-target"],
)  # fmt: skip
def test_a_progressive_run_that_cannot_halve_is_a_usage_error_and_nothing_is_written(
    runs, tmp_path, teacher, args, message
):
    extra = ["--teacher", str(runs["teacher"])] if teacher else []
    assert message in refused(tmp_path, *PROGRESSIVE, *args, *extra)


def test_a_student_stopped_part_way_and_resumed_ends_bit_identical_to_a_straight_run(
    runs, tmp_path, monkeypatch
):
    """The straight run is the fixture's round 1, made with the same arguments."""
    args = [*PROGRESSIVE, "--teacher", str(runs["teacher"]), "--teacher-steps", "5"]
    cut = stop_at_two_and_resume(tmp_path, monkeypatch, *args)
    straight = torch.load(runs["round1"] / "checkpoint.pt", weights_only=True)
    again = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert straight["step"] == again["step"] == STEPS
    for first, second in (
        (straight["model"], again["model"]),
        (straight["ema"]["module"], again["ema"]["module"]),
    ):
        assert first.keys() == second.keys()
        differing = [key for key in first if not torch.equal(first[key], second[key])]
        assert not differing, differing[:3]
