"""One-step distillation (`direct-distilled`): the Gaussian oracle where the answer is known, pairs that are
deterministic and resume bit for bit, the teacher checks, and a run end to end."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import schedules
from bench.config import DistillConfig, TrainConfig
from bench.process.denoiser import Denoiser
from bench.process.diffusion import Diffusion
from bench.process.sampling import sample
from bench.training.pairs import Pairs, Teacher, distillation_metrics, make_pairs
from bench.training.trainer import Trainer
from denoisers import Recipe
from tests.helpers import FAST, invoke, run_ok
from tests.oracles import M, S, ddim_moments_exact, gaussian_oracle

SHAPE = (1, 2, 2)
STEPS = 50


@pytest.fixture(scope="module")
def diffusion() -> Diffusion:
    return Diffusion(schedules.get("linear")(1000))


def oracle_teacher(diffusion: Diffusion) -> Teacher:
    """The exact E[eps | x_t] for x0 ~ N(M, S^2) as a teacher: its DDIM map x_T -> x0 is affine."""
    denoiser = Denoiser(gaussian_oracle(diffusion), diffusion)
    return Teacher(Path("oracle"), denoiser, 0, 0.0, SHAPE, torch.device("cpu"))


class LinearStudent(nn.Module):
    """x0_hat = a x_T + b, one (a, b) for every pixel: the family the DDIM map of Gaussian data lies in."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe
        self.a, self.b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.a * x_t + self.b


def train_student(diffusion, images, inputs, pairs: str) -> nn.Module:
    recipe = Recipe(prediction="x0", timesteps="terminal", sampler="one_shot", pairs=pairs)
    student = LinearStudent(recipe)
    config = TrainConfig(
        steps=600,
        batch_size=256,
        lr=0.05,
        warmup_steps=0,
        ema_decay=0.99,
        grad_clip=0.0,
        checkpoint_every=600,
    )
    trainer = Trainer(
        student, diffusion, images, config, recipe, device=torch.device("cpu"), seed=0, inputs=inputs
    )
    trainer.run(progress=False)
    return trainer.ema.module  # the average of the last ~100 steps: SGD's jitter left out


def one_call_moments(diffusion, student) -> tuple[float, float]:
    x_T = torch.randn(20_000, *SHAPE, generator=torch.Generator().manual_seed(9))
    x = sample(Denoiser(student, diffusion, "x0"), tuple(x_T.shape), method="one_shot", x_T=x_T)
    return x.mean().item(), x.std().item()


def test_gaussian_oracle_coupled_pairs_recover_the_data_independent_pairs_collapse(diffusion, tmp_path):
    teacher = oracle_teacher(diffusion)
    pairs = make_pairs(
        teacher, DistillConfig("oracle", STEPS, 4000), seed=0, path=tmp_path / "pairs.pt", progress=False
    )
    coupled = train_student(diffusion, pairs.x0, pairs.x_T, "teacher")
    exact_mean, exact_std = ddim_moments_exact(diffusion, STEPS)  # what the teacher's map gives
    mean, std = one_call_moments(diffusion, coupled)
    assert mean == pytest.approx(exact_mean, abs=0.02)
    assert std == pytest.approx(exact_std, rel=0.05)
    assert std == pytest.approx(S, rel=0.1)  # ... which is the data distribution

    # The same student on independent pairs: x0 from the data, x_T from q(x_T | x0), almost independent.
    data = M + S * torch.randn(4000, *SHAPE, generator=torch.Generator().manual_seed(1))
    independent = train_student(diffusion, data, None, "independent")
    mean, std = one_call_moments(diffusion, independent)
    assert mean == pytest.approx(M, abs=0.02)
    assert std < 0.05 * S  # every noise gives (nearly) the mean: collapse


def test_pairs_are_deterministic_and_resume_bit_for_bit(diffusion, tmp_path, monkeypatch):
    import bench.training.pairs

    teacher, config = oracle_teacher(diffusion), DistillConfig("oracle", 10, 600)  # three chunks
    straight = make_pairs(teacher, config, seed=3, path=tmp_path / "a.pt", progress=False)
    again = make_pairs(teacher, config, seed=3, path=tmp_path / "again.pt", progress=False)
    assert torch.equal(straight.x_T, again.x_T) and torch.equal(straight.x0, again.x0)
    assert straight.x0.shape == (600, *SHAPE)

    real, calls = bench.training.pairs.teacher_images, []

    def interrupted_after_one_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench.training.pairs, "teacher_images", interrupted_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        make_pairs(teacher, config, seed=3, path=tmp_path / "b.pt", progress=False)
    assert len(torch.load(tmp_path / "b.pt", weights_only=True)["x0"]) == 1
    resumed = make_pairs(teacher, config, seed=3, path=tmp_path / "b.pt", progress=False)
    assert torch.equal(resumed.x_T, straight.x_T) and torch.equal(resumed.x0, straight.x0)
    assert len(calls) == 4  # the interrupted chunk and the two left, nothing made twice
    cached = make_pairs(teacher, config, seed=3, path=tmp_path / "b.pt", progress=False)
    assert len(calls) == 4 and torch.equal(cached.x0, straight.x0)
    with pytest.raises(ValueError, match="other settings"):
        make_pairs(teacher, DistillConfig("oracle", 10, 600), seed=4, path=tmp_path / "b.pt", progress=False)


class RecordingStudent(LinearStudent):
    """The linear student, keeping the noises it is called on."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__(Recipe(prediction="x0", timesteps="terminal", sampler="one_shot", pairs="teacher"))
        self.a.data.fill_(a)
        self.b.data.fill_(b)
        self.inputs = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x_t.clone())
        return super().forward(x_t, t)


def rms_per_image(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over images of each image's RMS pixel distance, one image at a time."""
    pairs = zip(a.double(), b.double(), strict=True)
    return math.fsum((x - y).pow(2).mean().sqrt().item() for x, y in pairs) / len(a)


def test_distillation_metrics_against_the_oracle_teachers_affine_map(diffusion):
    """For Gaussian data the oracle teacher's DDIM map is x0 = K x_T + C, K and C known for each number of
    steps (ddim_moments_exact: K is the std of the outputs, C their mean), so every distance the report
    holds has a value computed here from the very noises the student was called on."""
    denoiser = Denoiser(gaussian_oracle(diffusion), diffusion)
    teacher = Teacher(Path("oracle"), denoiser, 7, 123.0, SHAPE, torch.device("cpu"))
    settings = {"teacher": "oracle", "teacher_step": 7, "teacher_steps": 5}
    pairs = Pairs(torch.zeros(40, *SHAPE), torch.zeros(40, *SHAPE), settings, 2.5)
    C, K = ddim_moments_exact(diffusion, 5)
    C1, K1 = ddim_moments_exact(diffusion, 1)
    net = RecordingStudent(0.5 * K, C + 0.6)  # half the teacher's gain, and shifted: some outputs clamp at 1
    mean_image = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, *SHAPE)
    report = distillation_metrics(teacher, pairs, Denoiser(net, diffusion, "x0"), mean_image, seed=3)

    (x_T,) = net.inputs
    assert x_T.shape == (500, *SHAPE) and report["held_out"] == 500
    target = K * x_T + C
    assert ((0.5 * K * x_T + C + 0.6) > 1).any()
    assert report["rms_to_teacher"] == pytest.approx(
        rms_per_image((0.5 * K * x_T + C + 0.6).clamp(-1, 1), target), rel=1e-5
    )
    assert report["rms_teacher_1_step_to_teacher"] == pytest.approx(
        rms_per_image(K1 * x_T + C1, target), rel=1e-4
    )
    assert report["rms_mean_image_to_teacher"] == pytest.approx(
        rms_per_image(mean_image.expand_as(target), target), rel=1e-5
    )
    assert report["pair_flops"] == 40 * 5 * 123.0 and report["pairs"] == 40 and report["pair_seconds"] == 2.5
    assert (report["teacher"], report["teacher_step"], report["teacher_steps"]) == ("oracle", 7, 5)


STUDENT = ["--denoiser", "direct-distilled", "-o", "base_channels=8", "--pairs", "40", "--teacher-steps", "3"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return run_ok(tmp_path_factory.mktemp("teacher"))


def student_run(tmp_path, *extra: str):
    return invoke("run", *FAST, *STUDENT, *extra, "--out", str(tmp_path / "out"), "--run-id", "s", "--quiet")


def test_distilled_run_trains_on_the_teachers_pairs(teacher_dir, tmp_path):
    """The teacher here is ten steps of a tiny network, whose unclipped x0 estimates leave the data range by
    orders of magnitude; its pairs are made with its x0 clipped, as its own sampling does, so that the
    distances below compare images."""
    result = student_run(tmp_path, "--teacher", str(teacher_dir), "--teacher-clip-x0")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "out" / "s"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sample"]["method"] == "one_shot"
    report = metrics["distillation"]
    assert report["teacher"] == str(teacher_dir) and report["pairs"] == 40 and report["teacher_steps"] == 3
    assert report["pair_flops"] > 0 and report["pair_seconds"] > 0
    # what the study reads from it: the student's one call is nearer its teacher's image than the mean
    # image is (and, trained for ten steps, not on it)
    assert 0 < report["rms_to_teacher"] < report["rms_mean_image_to_teacher"]
    assert report["rms_teacher_1_step_to_teacher"] > 0
    pairs = torch.load(run_dir / "pairs.pt", weights_only=True)
    assert pairs["settings"]["teacher_step"] == 10 and sum(len(x) for x in pairs["x0"]) == 40
    assert pairs["settings"]["clip_x0"] is True


def damage(teacher_dir: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / f"teacher-{how}"
    copy.mkdir()
    for path in teacher_dir.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    if how == "incomplete":
        (copy / "status.json").write_text(json.dumps({"state": "training", "step": 5}))
    elif how == "corrupt":
        (copy / "checkpoint.pt").write_bytes(b"not a checkpoint")
    elif how == "empty":
        for path in copy.iterdir():
            path.unlink()
    return copy


@pytest.mark.parametrize(
    ("how", "extra", "message"),
    [
        ("none", [], "give --teacher RUN_DIR"),
        ("empty", [], "is not a run folder"),
        ("incomplete", [], "is not a complete run (state: training)"),
        ("corrupt", [], "checkpoint"),
        ("good", ["--image-size", "12"], "makes 1x8x8 images, but this run trains on 1x12x12"),
        ("good", ["--hflip"], "--hflip breaks teacher pairs"),
    ],
)
def test_a_teacher_that_cannot_teach_is_a_usage_error(teacher_dir, tmp_path, how, extra, message):
    teacher = {"none": [], "good": ["--teacher", str(teacher_dir)]}.get(
        how, ["--teacher", str(damage(teacher_dir, tmp_path, how)) if how != "none" else ""]
    )
    result = student_run(tmp_path, *teacher, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing was created


def test_a_one_shot_teacher_is_refused(tmp_path):
    direct = run_ok(tmp_path / "direct", "-o", "terminal=True", "--target", "x0")
    result = student_run(tmp_path, "--teacher", str(direct))
    assert result.exit_code == 2 and "trained only on pure noise" in result.output


def test_an_interrupted_pair_phase_resumes_to_the_same_pairs(teacher_dir, tmp_path, monkeypatch):
    import bench.training.pairs

    args = ["--teacher", str(teacher_dir), "--pairs", "260"]  # two chunks, the second of 10
    straight = invoke("run", *FAST, *STUDENT, *args, "--out", str(tmp_path), "--run-id", "a", "--quiet")
    assert straight.exit_code == 0, straight.output
    real, calls = bench.training.pairs.teacher_images, []

    def interrupted_at_the_second_chunk(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(bench.training.pairs, "teacher_images", interrupted_at_the_second_chunk)
    cut = invoke("run", *FAST, *STUDENT, *args, "--out", str(tmp_path), "--run-id", "b", "--quiet")
    assert cut.exit_code == 130 and "stopped while making teacher pairs" in cut.output
    assert f"bench run --resume {tmp_path / 'b'}" in cut.output
    monkeypatch.setattr(bench.training.pairs, "teacher_images", real)
    resumed = invoke("run", "--resume", str(tmp_path / "b"), "--quiet")
    assert resumed.exit_code == 0, resumed.output
    a, b = (torch.load(tmp_path / r / "pairs.pt", weights_only=True) for r in ("a", "b"))
    assert all(torch.equal(x, y) for x, y in zip(a["x0"], b["x0"], strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a["x_T"], b["x_T"], strict=True))
    weights = [torch.load(tmp_path / r / "checkpoint.pt", weights_only=True)["model"] for r in ("a", "b")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
