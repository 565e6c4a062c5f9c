"""What the user asked is what runs. Under ``--method auto`` a design's own sampling (a consistency model's
one call, a progressive student's halved grid) never replaces a setting that was given; a setting the
design does not use is a usage error naming the designs it is for; a consistency model is not fed to the
ODE solvers; noise levels that put nearly all training at one end are said so; and the teacher's x0 is
not clipped in what a student learns unless asked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.config import RunConfig, TrainConfig
from bench.training.noise_levels import spread
from tests.helpers import invoke, refused_run, tiny_run_ok


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """An iCT run, an EDM U-Net and its progressive student (5 teacher steps -> 3)."""
    out = tmp_path_factory.mktemp("asked")
    folders = {
        "ict": tiny_run_ok(out, "ict", "--denoiser", "consistency"),
        "edm": tiny_run_ok(out, "edm", "--target", "edm"),
    }
    folders["student"] = tiny_run_ok(
        out, "student", "--denoiser", "progressive-distilled", "--teacher", str(folders["edm"]),
        "--teacher-steps", "5",
    )  # fmt: skip
    return folders


def evaluated(run: Path, tmp_path: Path, *args: str) -> list[dict]:
    """``bench eval`` of a copy of ``run`` with ``args``; the sampling of each entry it appended."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    result = invoke("eval", str(copy), "--n", "8", *args, "--quiet")
    assert result.exit_code == 0, result.output
    return [entry["sample"] for entry in json.loads((copy / "metrics.json").read_text())["evaluations"]]


def test_bench_eval_of_a_consistency_model_samples_the_steps_asked(runs, tmp_path):
    samplings = evaluated(runs["ict"], tmp_path, "--steps", "1,2,4")
    assert [(s["method"], s["steps"]) for s in samplings] == [("consistency", 1), ("consistency", 2),
                                                              ("consistency", 4)]  # fmt: skip
    assert [s["nfe"] for s in samplings] == [1, 2, 4]


def test_a_progressive_student_is_evaluated_on_its_own_grid_unless_told_otherwise(runs, tmp_path):
    """Its own sampling is 3 deterministic DDIM steps on every other point of its teacher's 5; what is given
    stands (4 steps, or the karras grid with rho 5), the rest is still the design's (eta 0)."""
    own, = evaluated(runs["student"], tmp_path / "own")
    assert (own["method"], own["steps"], own["eta"], own["grid"]) == ("ddim", 3, 0.0, "uniform")
    four, = evaluated(runs["student"], tmp_path / "four", "--steps", "4")
    assert (four["steps"], four["eta"]) == (4, 0.0)
    karras, = evaluated(runs["student"], tmp_path / "karras", "--grid", "karras", "--rho", "5")
    assert (karras["steps"], karras["eta"], karras["grid"], karras["rho"]) == (3, 0.0, "karras", 5.0)


def test_a_run_samples_with_the_steps_it_was_given(tmp_path):
    run = tiny_run_ok(tmp_path, "ict", "--denoiser", "consistency", "--sample-steps", "2")
    sample = json.loads((run / "metrics.json").read_text())["sample"]
    assert (sample["method"], sample["steps"]) == ("consistency", 2)
    assert json.loads((run / "config.json").read_text())["sample"]["given"] == ["steps"]


def test_steps_given_to_a_one_call_sampler_are_refused(runs, tmp_path):
    """Named with a step count, one_shot is refused; a one-call design evaluated at several step counts
    (auto) would score one sampling several times, and is refused too."""
    result = invoke("sample", str(runs["ict"]), "--method", "one_shot", "--steps", "4", "--quiet")
    assert result.exit_code == 2
    assert "sampler 'one_shot' takes one network call: a number of steps (4) does not apply" in result.output
    direct = tiny_run_ok(tmp_path, "direct", "--denoiser", "direct")
    result = invoke("eval", str(direct), "--n", "8", "--steps", "1,2,4", "--quiet")
    assert result.exit_code == 2
    assert "steps 1, 2, 4 all sample this run as one_shot-1steps" in result.output


@pytest.mark.parametrize(("method", "extra"), [("dpmpp-2m", ["--grid", "log-snr"]), ("heun", []),
                                               ("ddim", ["--eta", "0"])])  # fmt: skip
def test_a_consistency_model_is_not_fed_to_an_ode_solver(runs, method, extra):
    before = (runs["ict"] / "metrics.json").read_bytes()
    result = invoke("eval", str(runs["ict"]), "--n", "8", "--method", method, "--steps", "3", *extra)
    assert result.exit_code == 2, result.output
    assert "a consistency model's f(x_t) is where its ODE ends, not the denoiser E[x0 | x_t]" in result.output
    assert (runs["ict"] / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "{edm}"], "denoiser 'unet' does not use --teacher: --teacher is for consistency-"
                                 "distilled, direct-distilled, ect, progressive-distilled, reflow"),
        (["--pairs", "32"], "denoiser 'unet' does not use --pairs: --pairs is for direct-distilled, reflow"),
        (["--denoiser", "consistency", "--target-ema", "0.5"],
         "denoiser 'consistency' does not use --target-ema: --target-ema is for consistency-distilled"),
        (["--denoiser", "consistency", "--teacher-solver", "ddim", "--levels", "4"],
         "does not use --levels, --teacher-solver: --levels is for consistency-distilled; --teacher-solver "
         "is for consistency-distilled. Leave them out"),
        (["--denoiser", "progressive-distilled", "--teacher", "{edm}", "--levels-start", "4"],
         "--levels-start is for consistency"),
    ],
    ids=["teacher", "pairs", "target-ema", "two", "levels-start"],
)  # fmt: skip
def test_a_setting_the_design_does_not_use_is_refused(runs, tmp_path, args, message):
    args = [arg.format(edm=runs["edm"]) for arg in args]
    assert message in refused_run(tmp_path, *args)


def test_noise_levels_that_put_training_at_one_end_are_said_so(tmp_path):
    with pytest.warns(UserWarning, match=r"--logit-mean 1e\+09 --logit-std 1: only 0.000% of the training"):
        tiny_run_ok(tmp_path, "far", "--noise-levels", "logit-normal", "--logit-mean", "1e9", "--steps", "1")


def test_the_spread_of_the_noise_levels_is_the_normal_cdf_between_the_edges():
    """ln sigma = logit(t), so the fraction in t in (0.01, 0.99) is Phi((ln 99 - m) / s) - Phi((-ln 99 - m)
    / s): 1 - 2 Phi(-4.5951) = 0.99999567 for SD3's (0, 1); Phi(4.8293) - Phi(-2.8293) = 0.99766657 for
    EDM's (-1.2, 1.2); and for m = ln 99, s = 1 exactly one half."""
    assert spread(TrainConfig(noise_levels="logit-normal")) == pytest.approx(0.99999567, abs=1e-8)
    assert spread(TrainConfig(noise_levels="lognormal")) == pytest.approx(0.99766657, abs=1e-8)
    half = TrainConfig(noise_levels="logit-normal", logit_mean=4.59511985013459, logit_std=1.0)
    assert spread(half) == pytest.approx(0.5, abs=1e-9)
    assert spread(TrainConfig()) is None


def test_a_teachers_x0_is_not_clipped_in_what_its_student_learns_unless_asked(runs):
    """The teacher a student loads follows the probability-flow ODE itself unless --teacher-clip-x0; a
    config.json of before the setting, whose teacher was clipped, reads as clipped."""
    from bench.runs.experiment import build_experiment
    from bench.runs.teacher import load_teacher

    config = json.loads((runs["student"] / "config.json").read_text())
    student = build_experiment(RunConfig.from_dict(config))
    assert load_teacher(RunConfig.from_dict(config).distill, student).denoiser.clip_x0 is False
    config["distill"]["teacher_clip_x0"] = True
    assert load_teacher(RunConfig.from_dict(config).distill, student).denoiser.clip_x0 is True
    del config["distill"]["teacher_clip_x0"]
    assert RunConfig.from_dict(config).distill.teacher_clip_x0 is True
    config["distill"]["teacher"] = None
    assert RunConfig.from_dict(config).distill.teacher_clip_x0 is False  # no teacher: nothing was clipped
