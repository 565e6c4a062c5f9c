"""`bench compare` on a results folder built by hand: seeds grouped with a 95% interval, a damaged and a
still-running run reported and skipped, nothing in any run folder rewritten, and clear usage errors."""

import json
import math

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import ConsistencyConfig, DistillConfig, RunConfig, TrainConfig
from bench.images import save_grid
from bench.reports import compare
from bench.runs.row import COLUMN_FIELDS, NON_DESIGN, leaves
from bench.runs.run_folder import RunFolder, RunMetrics, SampleMetrics, TrainMetrics

FD = {("unet", 0): 10.0, ("unet", 1): 12.0, ("unet", 2): 14.0, ("direct", 0): 90.0, ("direct", 1): 92.0}


def make_run(root, name, denoiser, seed, fd=None, *, metrics=True, damaged=False, size=None, **fields):
    import torch

    run = root / name
    run.mkdir(parents=True)
    config = RunConfig(denoiser=denoiser, seed=seed, image_size=size, **fields).to_dict()
    (run / "config.json").write_text(json.dumps(config))
    (run / "status.json").write_text(json.dumps({"state": "complete" if metrics else "training"}))
    (run / "loss.csv").write_text(
        "step,loss,lr,images_per_s,train_seconds\n25,0.5,1e-3,100,1\n50,0.3,1e-3,100,2\n"
    )
    save_grid(run / "samples.png", torch.zeros(4, 1, 8, 8))
    if damaged:
        (run / "metrics.json").write_text('{"parameters": 12, "train": ')
    elif metrics:
        method = "one_shot" if denoiser == "direct" else "ddim"
        RunFolder(run).write_metrics(
            RunMetrics(
                run_id=name,
                parameters=1000,
                train=TrainMetrics(
                    steps=1500,
                    images_seen=96000,
                    images_per_s=100.0,
                    data_wait_s=0.0,
                    final_loss=0.1,
                    stop_reason="steps",
                    train_seconds_total=960.0,
                    forward_flops_per_image=2e8,
                ),
                sample=SampleMetrics(
                    method=method, steps=1 if method == "one_shot" else 50, eta=1.0, n=8, images_per_s=50.0
                ),
                quality={"fd": fd, "kid": {"mean": fd / 100}},
                references={"real": {"fd": 1.5 * (size or 1)}, "mean-image": {"fd": 543.0}},
            )
        )
    return run


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    for (denoiser, seed), fd in FD.items():
        make_run(root, f"{denoiser}-s{seed}", denoiser, seed, fd)
    make_run(root, "broken", "unet", 7, damaged=True)
    make_run(root, "running", "unet", 8, metrics=False)
    return root


def snapshot(root):
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "comparison" not in p.parts}


def test_table_groups_seeds_with_a_95_interval(results):
    with pytest.warns(UserWarning, match="skipping"):
        collection = compare.collect([results])
    assert sorted(str(p.name) for p, _ in collection.skipped) == ["broken", "running"]
    assert any("state: training" in reason for _, reason in collection.skipped)
    table = compare.summarize(collection.runs).set_index("denoiser")
    assert table.loc["unet", "seeds"] == 3 and table.loc["direct", "seeds"] == 2
    assert table.loc["unet", "fd"] == pytest.approx(12.0)
    # t_{0.975, 2} * s / sqrt(3) with s = 2
    assert table.loc["unet", "fd_ci95"] == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-5)
    assert table.loc["unet", "kid.mean"] == pytest.approx(0.12)


def test_cli_reports_skips_writes_the_report_and_rewrites_no_run(results, tmp_path):
    before = snapshot(results)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", str(results), "--out", str(out), "--sort", "fd"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken" in result.output and "running" in result.output
    assert "12 ± 4.968" in result.output
    assert "reference: real" in result.output and "543" in result.output  # floor and ceiling beside runs
    assert {p.name for p in out.iterdir()} >= {
        "comparison.csv",
        "comparison.md",
        "samples.png",
        "quality_vs_compute.png",
        "loss_curves.png",
    }
    assert snapshot(results) == before
    md = (out / "comparison.md").read_text()
    assert md.startswith("| dataset | image | denoiser |") and "direct" in md
    import pandas as pd

    csv = pd.read_csv(out / "comparison.csv").set_index("denoiser")
    assert csv.loc["unet", "fd"] == pytest.approx(12.0) and csv.loc["unet", "fd_ci95"] > 0
    assert csv.loc["reference: mean-image", "fd"] == pytest.approx(543.0)


def test_filters_and_columns(results, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "compare",
            str(results),
            "--where",
            "denoiser=direct",
            "--columns",
            "fd",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "direct" in result.output and "unet" not in result.output.split("wrote")[0]
    assert "91 ± 12.71" in result.output  # the interval stays with a chosen column: t_{0.975,1} * s / sqrt(2)
    assert "kid" not in result.output.split("wrote")[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "colour=red"], "unknown column 'colour'"),
        (["--where", "nokey"], "expects KEY=VALUE"),
        (["--columns", "nope"], "unknown column(s) nope"),
        (["--sort", "nope"], "unknown column 'nope' for --sort"),
        (["--where", "denoiser=transformer"], "no run matches"),
    ],
)
def test_bad_options_are_usage_errors(results, tmp_path, args, message):
    result = CliRunner().invoke(main, ["compare", str(results), *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and message in result.output


def test_empty_and_missing_paths(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["compare", str(empty)])
    assert result.exit_code == 2 and "no complete run folders" in result.output
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_pareto_front():
    from bench.reports.compare_report import pareto_front

    assert pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)]) == [(1, 5), (2, 3), (4, 1)]


def test_reads_pytest_benchmark_json(tmp_path):
    data = {
        "machine_info": {"cpu": {"brand_raw": "Test CPU"}},
        "benchmarks": [
            {
                "group": "train-step:unet",
                "name": "test_train_step[unet-small]",
                "param": "unet-small",
                "stats": {"median": 0.25, "iqr": 0.01},
                "extra_info": {
                    "batch": 64,
                    "images_per_s": 256.0,
                    "forward_flops_per_image": 3.7e8,
                    "device": "cpu",
                },
            },
        ],
    }
    (tmp_path / "bench-cpu.json").write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "bench-cpu.json")])
    assert result.exit_code == 0, result.output
    assert "unet-small" in result.output and "250" in result.output and "256" in result.output


def test_image_sizes_are_separate_designs_with_their_own_references(tmp_path):
    for seed, size in ((0, 14), (1, 14), (0, 28)):
        make_run(tmp_path, f"unet-{size}-s{seed}", "unet", seed, 10.0 + seed + size, size=size)
    collection = compare.collect([tmp_path])
    table = compare.summarize(collection.runs).set_index("image")
    assert table.loc["14x14", "seeds"] == 2 and table.loc["28x28", "seeds"] == 1
    assert table.loc["14x14", "fd"] == pytest.approx(24.5)
    refs = compare.references(collection.runs)
    assert refs["real (mnist5k 14x14)"]["fd"] == pytest.approx(21.0)
    assert refs["real (mnist5k 28x28)"]["fd"] == pytest.approx(42.0)


def test_the_terminal_shows_the_headline_and_the_csv_everything(results, tmp_path):
    import pandas as pd

    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["compare", str(results), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.split("wrote")[0].splitlines() if not line.startswith("skipped")]
    assert lines[0].startswith("every row: dataset mnist5k")  # the shared design, said once
    header = lines[1].split()
    assert header[0] == "denoiser" and "fd" in header and "seeds" in header
    assert "parameters" not in header and "forward_gflops" not in header  # in the CSV only
    csv_columns = set(pd.read_csv(out / "comparison.csv").columns)
    assert {"parameters", "forward_gflops", "fd", "dataset"} <= csv_columns
    every = CliRunner().invoke(main, ["compare", str(results), "--out", str(out), "--columns", "all"])
    assert "parameters" in every.output and "every row" not in every.output


# ------------------------------------------------------------------------------ what makes a design
SETTINGS = {
    *("train.lr", "train.warmup_steps", "train.weight_decay", "train.grad_clip", "train.ema_decay"),
    *("train.precision", "train.hflip", "train.label_dropout", "diffusion.timesteps"),
    *("sample.variance", "sample.clip_x0", "sample.use_ema"),
    *("distill.teacher", "distill.teacher_steps", "distill.pairs", "distill.teacher_clip_x0"),
    *("consistency.levels", "consistency.levels_start", "consistency.levels_end"),
    *("consistency.teacher_solver", "consistency.target_ema", "consistency.distance", "consistency.huber_c"),
    *("consistency.student_init", "consistency.tangent_warmup", "consistency.tangent_c"),
    *("flow_map.equal_fraction", "flow_map.time_mean", "flow_map.time_std", "flow_map.derivative"),
    *("flow_map.adaptive_power", "flow_map.consistency_fraction", "flow_map.shortcut_steps"),
}
"""The config fields that change the trained weights or the samples and have no column of their own."""


def test_every_config_field_is_a_design_column_a_setting_or_named_as_no_design():
    """A field added to the config fails here until it is placed: a column of its own, one of the settings
    column (both part of the design, so runs that differ in it are never averaged as seeds), or a field
    that changes neither the weights nor the samples."""
    fields = set(leaves(RunConfig().to_dict()))
    columns = {path for paths in COLUMN_FIELDS.values() for path in paths if path in fields}
    assert not columns & SETTINGS and not columns & set(NON_DESIGN) and not SETTINGS & set(NON_DESIGN)
    placed = columns | SETTINGS | set(NON_DESIGN)
    assert fields == placed, sorted(fields ^ placed)


def test_runs_that_differ_only_in_a_setting_are_two_designs_not_two_seeds(tmp_path):
    """CD with Heun and with DDIM as its teacher's step, sharing a seed, are two rows with one seed each;
    so are two learning rates, and two teachers (named by their run folder)."""
    make_run(tmp_path, "heun", "unet", 0, 20.0)
    make_run(tmp_path, "ddim", "unet", 0, 30.0, consistency=ConsistencyConfig(teacher_solver="ddim"))
    make_run(tmp_path, "lr", "unet", 0, 40.0, train=TrainConfig(lr=5e-4))
    teacher = DistillConfig(teacher="/x/results/unet-edm", pairs=8)
    make_run(tmp_path, "teacher", "unet", 0, 50.0, distill=teacher)
    table = compare.summarize(compare.collect([tmp_path]).runs)
    assert sorted(table["settings"]) == ["", "lr=0.0005", "pairs=8, teacher=unet-edm", "teacher_solver=ddim"]
    assert list(table["seeds"]) == [1, 1, 1, 1]
    assert sorted(table["fd"]) == [20.0, 30.0, 40.0, 50.0]
