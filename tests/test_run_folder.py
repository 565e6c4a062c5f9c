"""The run folder's one owner: what `bench run` writes, `bench compare` reads through the same layout, so a
field renamed on one side fails here instead of becoming a column of NaNs."""

import json
import math

import pytest

from bench.reports import compare
from bench.runs.row import run_rows
from bench.runs.run_folder import MetricsFormatError, RunFolder, RunMetrics, find_runs
from tests.helpers import run_ok

# Columns `bench compare` takes from metrics.json's train and sample sections.
SPEED_COLUMNS = [
    "parameters",
    "forward_gflops",
    "train_gflops",
    "train_images_per_s",
    "sample_images_per_s",
    "train_fraction_of_peak",
    "train_images",
    "sample_steps",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return run_ok(tmp_path_factory.mktemp("runs"))


def test_metrics_round_trip_through_the_layout(run_dir):
    folder = RunFolder(run_dir)
    raw = json.loads((run_dir / "metrics.json").read_text())
    metrics = folder.read_metrics()
    assert json.loads(json.dumps(metrics.to_dict())) == raw
    assert metrics.run_id == run_dir.name and metrics.train.steps == 10
    assert folder.read_config().train.steps == 10
    assert folder.state() == "complete"
    assert [row["step"] for row in folder.read_loss_curve()] == [5, 10]


def test_compare_fills_every_column_bench_run_writes(run_dir):
    row = run_rows(RunFolder(run_dir))[0]
    missing = [c for c in SPEED_COLUMNS if row[c] is None or math.isnan(float(row[c]))]
    assert not missing, f"bench compare lost {missing} from a run bench run wrote"
    assert row["train_images"] == 10 * 16


@pytest.mark.parametrize(
    ("section", "old", "new"),
    [("train", "images_per_s", "img_per_s"), ("sample", "method", "sampler"), (None, "parameters", "params")],
)
def test_a_renamed_metrics_key_is_an_error_not_a_column_of_nans(run_dir, tmp_path, section, old, new):
    copy = tmp_path / "renamed"
    copy.mkdir()
    for name in ("config.json", "status.json"):
        (copy / name).write_text((run_dir / name).read_text())
    data = json.loads((run_dir / "metrics.json").read_text())
    where = data[section] if section else data
    where[new] = where.pop(old)
    (copy / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(MetricsFormatError, match=f"{section + '.' if section else ''}{old}"):
        RunFolder(copy).read_metrics()
    with pytest.warns(UserWarning, match="skipping"):
        collection = compare.collect([copy])
    assert collection.runs.empty and old in collection.skipped[0][1]


def test_a_folder_without_metrics_says_its_state(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_status("training", step=3)
    with pytest.raises(FileNotFoundError, match=r"no metrics.json yet \(state: training\)"):
        folder.read_metrics()
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        folder.read_config()


def test_find_runs_lists_folders_with_a_config(run_dir, tmp_path):
    assert [f.path for f in find_runs([run_dir.parent])] == [run_dir]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_runs([tmp_path / "nowhere"])


def test_sections_a_run_did_not_produce_are_left_out():
    data = RunMetrics(run_id="r", parameters=1).to_dict()
    assert "quality" not in data and "evaluations" not in data and "nll" not in data


def test_bench_run_ends_with_its_result(tmp_path):
    from tests.helpers import FAST, invoke

    result = invoke("run", *FAST, "--out", str(tmp_path), "--run-id", "r")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]  # progress bars end in "\r" and spaces
    assert any(line.startswith("training:") and "images/s" in line and "10 steps" in line for line in lines)
    assert any(line.startswith("sampling:") and "ddim 5 steps" in line for line in lines)
    assert any(line.startswith("time:") and "training" in line and "sampling" in line for line in lines)
    assert f"run folder: {tmp_path / 'r'}" in lines


def test_the_summary_puts_each_metric_beside_its_floor_and_ceiling():
    from bench.runs.run_folder import SampleMetrics, TrainMetrics
    from bench.runs.run_summary import summary

    metrics = RunMetrics(
        run_id="r",
        parameters=1,
        train=TrainMetrics(1500, 96000, 360.0, 0.1, 0.03, "steps", 260.0, 1e8, 3e8, 1e11, 0.5),
        sample=SampleMetrics("ddim", 50, 1.0, 500, 32.0, fraction_of_peak=0.25),
        quality={"fd": 42.08, "precision": 0.746, "recall": 0.895},
        references={"real": {"fd": 4.211, "precision": 0.91}, "mean-image": {"fd": 1742.3, "recall": 0.0}},
        nll={"bits_per_dim": 2.98, "standard_error": 0.18},
        phases={"train_s": 261.1, "sample_s": 15.5},
    )
    text = summary(metrics).splitlines()
    assert text[0].split()[:2] == ["quality", "this"]
    assert [line.split() for line in text if line.startswith("FD")] == [
        ["FD", "(lower", "is", "better)", "42.08", "4.211", "1,742"]
    ]
    assert [line.split()[1:] for line in text if line.startswith("recall")] == [["0.895", "-", "0"]]
    assert "NLL bound, bits/dim   2.98 ± 0.18" in "\n".join(text)
    assert "training:  360.0 images/s (50% of peak), 1,500 steps" in text
    assert "sampling:  32.0 images/s (25% of peak), ddim 50 steps" in text
    assert text[-1] == "time:      training 261.1 s, sampling 15.5 s"


def test_eval_every_scores_during_training_without_changing_it(tmp_path):
    from tests.helpers import invoke

    plain = run_ok(tmp_path, run_id="plain")
    scored = run_ok(tmp_path, "--eval-every", "5", run_id="scored")
    rows = RunFolder(scored).read_eval_curve()
    assert [row["step"] for row in rows] == [5, 10]
    assert all(row["fd"] > 0 and 0 <= row["precision"] <= 1 and row["seconds"] > 0 for row in rows)
    import torch

    a, b = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (plain, scored))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # scoring left the RNGs alone
    # a resumed run keeps the rows up to its checkpoint and adds the rest
    half = run_ok(tmp_path, "--eval-every", "5", "--steps", "5", run_id="half")
    assert invoke("run", "--resume", str(half), "--steps", "10", "--quiet").exit_code == 0
    assert [row["step"] for row in RunFolder(half).read_eval_curve()] == [5, 10]
    result = invoke("compare", str(tmp_path), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0 and (tmp_path / "report" / "quality_vs_training_step.png").is_file()


def test_a_metrics_file_from_before_flops_were_counted_still_reads(run_dir, tmp_path):
    copy = tmp_path / "old"
    copy.mkdir()
    for name in ("config.json", "status.json"):
        (copy / name).write_text((run_dir / name).read_text())
    data = json.loads((run_dir / "metrics.json").read_text())
    del data["train"]["forward_flops_per_image"], data["train"]["training_flops_per_image"]
    (copy / "metrics.json").write_text(json.dumps(data))
    row = run_rows(RunFolder(copy))[0]
    assert math.isnan(row["forward_gflops"]) and row["train_images"] == 10 * 16


def test_an_eval_row_never_shows_its_runs_fid(run_dir, tmp_path):
    import dataclasses

    from bench.runs.run_folder import EvalSample, EvaluationEntry

    copy = tmp_path / "fid"
    copy.mkdir()
    for name in ("config.json", "status.json"):
        (copy / name).write_text((run_dir / name).read_text())
    metrics = RunFolder(run_dir).read_metrics()
    entry = EvaluationEntry(quality={"fd": 3.0}, sample=EvalSample("ddim", 10, 1.0, 8, 0, 5.0))
    RunFolder(copy).write_metrics(dataclasses.replace(metrics, fid=5.0, evaluations=[entry]))
    own, evaluated = run_rows(RunFolder(copy))
    assert own["fid"] == 5.0 and math.isnan(evaluated["fid"]) and evaluated["sample_steps"] == 10
