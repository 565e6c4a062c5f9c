"""`bench sweep`: the grid, one fair budget, skipping complete runs, resuming a half-done one exactly,
refusing a folder that holds another experiment, and clear usage errors."""

import json
import math
import shutil
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import denoisers
from bench.cli import main
from bench.cluster.sweep import Budget, apply_budget, grid, run_id
from bench.config import RunConfig, TrainConfig
from bench.registry import Plugin
from bench.runs.row import budget_label
from denoisers import Recipe
from tests.helpers import FAST, TINY_UNET, invoke

# FAST without the denoiser (a list in a sweep) and the budget (added unless a test gives one)
SWEEP = list(FAST)
for option in ("--denoiser", "--steps"):
    del SWEEP[SWEEP.index(option) : SWEEP.index(option) + 2]


def sweep(out, *extra: str):
    budget = [] if {"--steps", "--minutes", "--budget-flops"} & set(extra) else ["--steps", "10"]
    return CliRunner().invoke(main, ["sweep", *SWEEP, *budget, *extra, "--out", str(out), "--quiet"])


def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def test_sweep_trains_the_grid_then_skips_it(tmp_path):
    out = tmp_path / "sweep"
    result = sweep(out, "--denoiser", "tiny-test", "--schedule", "linear,cosine", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    names = ["tiny-test-linear-s0", "tiny-test-linear-s1", "tiny-test-cosine-s0", "tiny-test-cosine-s1"]
    for name in names:
        assert json.loads((out / name / "status.json").read_text())["state"] == "complete"
        config = json.loads((out / name / "config.json").read_text())
        assert config["train"]["steps"] == 10
    assert json.loads((out / "tiny-test-cosine-s1" / "config.json").read_text())["seed"] == 1
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["budget"]["kind"] == "steps" and set(manifest["runs"]) == set(names)
    table = (out / "report" / "comparison.md").read_text()
    assert "| mnist5k" not in table and table.count("| digits | 8x8 | tiny-test |") == 2  # seeds grouped
    assert "10 steps x 16" in table

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if "report" not in p.parts}
    again = sweep(out, "--denoiser", "tiny-test", "--schedule", "linear,cosine", "--seeds", "0,1")
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten


def test_sweep_resumes_a_half_done_run_to_the_same_weights(tmp_path):
    out = tmp_path / "sweep"
    assert sweep(out, "--denoiser", "tiny-test").exit_code == 0
    run_dir = out / "tiny-test-linear-s0"
    finished = weights(run_dir)
    # the same run stopped at step 5: its checkpoint and loss curve, no metrics yet
    half = CliRunner().invoke(
        main, ["run", *FAST, "--steps", "5", "--out", str(tmp_path), "--run-id", "half", "--quiet"]
    )
    assert half.exit_code == 0, half.output
    for name in ("checkpoint.pt", "loss.csv"):
        shutil.copy(tmp_path / "half" / name, run_dir / name)
    (run_dir / "metrics.json").unlink()
    (run_dir / "status.json").write_text(json.dumps({"state": "interrupted", "step": 5}))

    result = sweep(out, "--denoiser", "tiny-test")
    assert result.exit_code == 0, result.output
    assert "[1/1] tiny-test-linear-s0: complete" in result.output
    resumed = weights(run_dir)
    assert all(torch.equal(finished[k], resumed[k]) for k in finished)


def test_a_run_stopped_before_its_first_checkpoint_starts_over_in_its_folder(tmp_path):
    out = tmp_path / "sweep"
    assert sweep(out, "--denoiser", "tiny-test").exit_code == 0
    run_dir = out / "tiny-test-linear-s0"
    finished = weights(run_dir)
    for name in ("checkpoint.pt", "metrics.json", "loss.csv"):
        (run_dir / name).unlink()
    (run_dir / "status.json").write_text(json.dumps({"state": "training", "step": 0}))
    assert sweep(out, "--denoiser", "tiny-test").exit_code == 0
    resumed = weights(run_dir)
    assert all(torch.equal(finished[k], resumed[k]) for k in finished)


def test_a_folder_holding_another_experiment_is_refused(tmp_path):
    out = tmp_path / "sweep"
    assert sweep(out, "--denoiser", "tiny-test").exit_code == 0
    checkpoint = (out / "tiny-test-linear-s0" / "checkpoint.pt").read_bytes()
    other_budget = sweep(out, "--denoiser", "tiny-test", "--steps", "12")
    assert other_budget.exit_code == 2
    assert "holds a sweep with budget '10 optimizer steps'" in other_budget.output
    other_recipe = sweep(out, "--denoiser", "tiny-test", "--lr", "0.01")
    assert other_recipe.exit_code == 2
    assert "train.lr: 0.001 in the folder, 0.01 asked" in other_recipe.output
    assert (out / "tiny-test-linear-s0" / "checkpoint.pt").read_bytes() == checkpoint


class TwoLayers(nn.Module):
    """Pixels -> hidden -> pixels, two bias-free linear maps: training FLOPs known in closed form."""

    def __init__(self, image_shape, hidden: int) -> None:
        super().__init__()
        self.recipe = Recipe()
        d = math.prod(image_shape)
        self.net = nn.Sequential(nn.Linear(d, hidden, bias=False), nn.Linear(hidden, d, bias=False))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).view_as(x)


def two_layers(image_shape, *, hidden: int = 8) -> TwoLayers:
    """Two linear maps (FLOP-budget tests)."""
    return TwoLayers(image_shape, hidden)


def test_a_flop_budget_gives_each_design_the_same_compute(monkeypatch):
    plugin = Plugin("two-layers-test", two_layers, "Two linear maps.", "test")
    monkeypatch.setitem(denoisers.REGISTRY._plugins, "two-layers-test", plugin)
    base = RunConfig(dataset="digits", denoiser="two-layers-test", train=TrainConfig(batch_size=16))
    # Per 8x8 image (d = 64 pixels) and hidden width h: forward 2dh + 2hd; backward the second layer's
    # weight and input gradients (2hd each) and the first layer's weight gradient (2dh; the image needs
    # none): 10 d h FLOPs. One step is 16 images.
    per_step = {h: 10 * 64 * h * 16 for h in (8, 64)}  # 81,920 and 655,360
    budget = Budget("flops", 100 * per_step[64])
    for h, steps in ((8, 800), (64, 100)):
        config = apply_budget(replace(base, denoiser_options={"hidden": h}), budget)
        assert config.train.steps == steps and steps * per_step[h] == budget.value
        assert config.train.budget_flops == budget.value and config.train.minutes is None
    # a budget between two step counts rounds to the nearer one
    wide = replace(base, denoiser_options={"hidden": 64})
    assert apply_budget(wide, Budget("flops", 100.4 * per_step[64])).train.steps == 100
    assert apply_budget(wide, Budget("flops", 100.6 * per_step[64])).train.steps == 101
    assert budget_label(config.to_dict()["train"]) == "6.6e+07 FLOPs"


def test_grid_names_and_order():
    configs = grid(
        RunConfig(), denoisers=["unet", "direct"], schedules=["linear"], seeds=[0, 1], targets=[None, "x0"]
    )
    assert [run_id(c) for c in configs] == [
        "unet-linear-s0",
        "unet-linear-s1",
        "unet-x0-linear-s0",
        "unet-x0-linear-s1",
        "direct-linear-s0",
        "direct-linear-s1",
        "direct-x0-linear-s0",
        "direct-x0-linear-s1",
    ]
    with pytest.raises(ValueError, match="same run twice: unet-linear-s0"):
        grid(RunConfig(), denoisers=["unet"], schedules=["linear"], seeds=[0, 0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--denoiser", "tiny-test,nope"], "unknown denoiser 'nope'"),
        (["--denoiser", "tiny-test", "--schedule", "linear,"], None),
        (["--denoiser", "tiny-test", "--seeds", "a,b"], "seeds must be whole numbers"),
        (["--denoiser", "tiny-test", "--target", "noise"], "noise not allowed; choose from eps, x0, v"),
        (
            ["--denoiser", "tiny-test", "--steps", "5", "--budget-flops", "1e9"],
            "not --budget-flops and --steps",
        ),
        (["--denoiser", "tiny-test", "--budget-flops", "-1"], "must be a positive number"),
        (["--denoiser", ","], "expected a comma-separated list"),
    ],
)
def test_bad_sweeps_are_usage_errors(tmp_path, args, message):
    result = sweep(tmp_path / "sweep", *args)
    if message is None:  # a trailing comma is harmless
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "sweep").exists()


def test_a_minutes_budget_is_the_only_limit():
    config = apply_budget(RunConfig(), Budget("minutes", 2.5))
    assert config.train.minutes == 2.5 and config.train.steps >= 10**9
    assert budget_label(config.to_dict()["train"]) == "2.5 min"
    with pytest.raises(ValueError, match="whole number"):
        apply_budget(RunConfig(), Budget("steps", 2.5))


def test_every_grid_point_is_checked_before_the_first_trains(tmp_path):
    """An option the second denoiser refuses stops the sweep before the first point trains: nothing is
    written."""
    out = tmp_path / "sweep"
    result = invoke("sweep", *TINY_UNET, "--denoiser", "unet,transformer", "--out", str(out), "--quiet")
    assert result.exit_code == 2, result.output
    assert "transformer" in result.output and "base_channels" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_points_of_jobs_that_run_on_gpus_are_checked_here_on_the_cpu(tmp_path):
    """A sweep submitted from a login node without GPUs checks its points without asking for CUDA there."""
    from bench.cluster.sweep import check_points

    config = RunConfig(denoiser="tiny-test", dataset="digits", device="cuda")
    check_points([config], ["tiny-test-linear-s0"], tmp_path, download=False)  # no "no CUDA GPU" error
    assert not list(tmp_path.iterdir())  # and nothing written
