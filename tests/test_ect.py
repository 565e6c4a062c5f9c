"""Easy consistency tuning (``ect``): ECT's mapping function and stages against the paper's formula written
here, its first stage as the teacher's own denoising loss, and the design from the command line (started
from an EDM run, sampled in one call, resumed bit for bit, and refused without its initial run)."""

from __future__ import annotations

import math

import pytest
import torch

import denoisers
import schedules
from bench.config import ConsistencyConfig
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.training.objectives import Batch, declaration
from bench.training.objectives import tuning as ect
from bench.training.objectives.consistency import pseudo_huber
from tests.helpers import invoke, stop_at_two_and_resume
from tests.helpers import refused_run as refused
from tests.helpers import run_metrics as metrics
from tests.helpers import tiny_run_ok as run_ok

STEPS = 6  # TINY_RUN's


def paper_r(t: float, a: int, sigma_min: float) -> float:
    """Geng et al. 2024: r = t (1 - n(t) / q^a), n(t) = 1 + k sigmoid(-b t), k = 8, b = 1, q = 2."""
    n = 1 + 8 / (1 + math.exp(t))
    return max(t * (1 - n / 2**a), sigma_min)


@pytest.mark.parametrize("a", range(8))
def test_the_mapping_function_is_the_papers(a):
    sigmas = torch.tensor([0.01, 0.05, 0.3, 1.0, 2.5, 10.0, 80.0], dtype=torch.float64)
    got = ect.lower_level(sigmas, a, 0.002)
    want = torch.tensor([paper_r(float(s), a, 0.002) for s in sigmas], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert (got < sigmas).all()


def test_the_stages_split_the_planned_steps_evenly_and_halve_t_minus_r():
    assert [ect.stage(step, 800) for step in (0, 99, 100, 399, 400, 799)] == [0, 0, 1, 3, 4, 7]
    assert ect.stage(10_000, 800) == 7
    t = torch.tensor([5.0], dtype=torch.float64)
    gaps = [float(t - ect.lower_level(t, a, 1e-3)) for a in range(3, 8)]  # where r > sigma_min
    for before, after in zip(gaps, gaps[1:], strict=False):
        assert after == pytest.approx(before / 2, rel=1e-12)


class Affine(torch.nn.Module):
    """A network whose output is a fixed affine map of its input, so the test can compute f by hand."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.7 * x + 0.1


def test_the_first_stage_is_the_denoising_loss():
    """In stage 0 r is the schedule's smallest level for every t, where f is the identity, so the target is
    y_r = x0 + sigma_min z: the loss is the distance of f(y_t, t) to (almost) the clean image, over t - r."""
    diffusion = Diffusion(schedules.make("linear", 1000))
    student = Denoiser(Affine(), diffusion, "consistency")
    objective = ect.ConsistencyTuning(ConsistencyConfig(), diffusion, total_steps=800, image_shape=(1, 4, 4))
    x0 = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loss = objective.loss(student, Batch(x0), 0, torch.Generator().manual_seed(1))
    # the same draws, made here: log sigma, then the shared noise
    g = torch.Generator().manual_seed(1)
    sigma_min = objective.sigma_min
    log_sigma = -1.1 + 2.0 * torch.randn(16, generator=g, dtype=torch.float64)
    sigma = log_sigma.clamp(math.log(2 * sigma_min), math.log(objective.sigma_max)).exp()
    z = torch.randn(x0.shape, generator=g)
    y = x0 + sigma.float().view(-1, 1, 1, 1) * z
    t = diffusion.sigma_to_t(sigma)
    online = student(y * (1 + sigma.float().view(-1, 1, 1, 1) ** 2).rsqrt(), t)[0]
    c = 0.00054 * math.sqrt(16)
    want = pseudo_huber(online, x0 + sigma_min * z, c) / (sigma - sigma_min).float()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ect-runs")
    teacher = run_ok(out, "edm", "--target", "edm")
    return {
        "edm": teacher,
        "eps": run_ok(out, "eps"),
        "ect": run_ok(out, "ect", "--denoiser", "ect", "--teacher", str(teacher)),
    }


def test_ect_starts_from_its_teacher_and_samples_in_one_call(runs):
    result = metrics(runs["ect"])
    assert (result["sample"]["method"], result["sample"]["steps"]) == ("consistency", 1)
    assert result["cost"]["teacher_flops"] == metrics(runs["edm"])["cost"]["total_flops"]
    assert result["cost"]["total_flops"] == pytest.approx(
        result["cost"]["train_flops"] + result["cost"]["teacher_flops"]
    )
    assert declaration("consistency-tuning").teacher == "init"


def test_ect_resumes_bit_for_bit(runs, tmp_path, monkeypatch):
    args = ["--denoiser", "ect", "--teacher", str(runs["edm"])]
    cut = stop_at_two_and_resume(tmp_path, monkeypatch, *args)
    a = torch.load(runs["ect"] / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == STEPS
    for part in (a["model"], a["ema"]["module"]):
        other = b["model"] if part is a["model"] else b["ema"]["module"]
        assert all(torch.equal(part[key], other[key]) for key in part)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--denoiser", "ect"], "learns from a teacher: give --teacher RUN_DIR"),
        (["--denoiser", "ect", "--teacher", "EPS"], "the teacher predicts 'eps'"),
        (
            ["--denoiser", "ect", "--teacher", "EDM", "--target-ema", "0.5"],
            "--target-ema is for consistency-distilled",
        ),
        (
            ["--denoiser", "ect", "--teacher", "EDM", "--levels-start", "4"],
            "--levels-start is for consistency",
        ),
        (["--denoiser", "ect", "--teacher", "EDM", "--loss-weight", "edm"], "draws its own noise levels"),
    ],
)
def test_bad_ect_input_is_a_usage_error_and_nothing_is_written(runs, tmp_path, args, message):
    args = [{"EPS": str(runs["eps"]), "EDM": str(runs["edm"])}.get(a, a) for a in args]
    assert message in refused(tmp_path, *args)


def test_extending_an_ect_run_is_refused(runs, tmp_path):
    run_ok(tmp_path, "short", "--denoiser", "ect", "--teacher", str(runs["edm"]), "--steps", "3")
    result = invoke("run", "--resume", str(tmp_path / "short"), "--steps", "6", "--quiet")
    assert result.exit_code == 2, result.output
    assert "halves in stages of that plan" in " ".join(result.output.split())


def test_the_design_is_registered_with_the_consistency_parametrisation():
    recipe = denoisers.recipe_of(denoisers.get("ect")((1, 8, 8)))
    assert (recipe.prediction, recipe.objective, recipe.sampler) == (
        "consistency",
        "consistency-tuning",
        "consistency",
    )
