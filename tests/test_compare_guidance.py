"""`bench compare` and the run summary on class-conditional runs sampled with classifier-free guidance: each
guidance scale and interval is its own design, seeds still group, an evaluation row keeps its own guidance,
the class-mean ceiling is among the references, and unconditional runs read as before. Run folders are
written by hand (config.json and metrics.json), never trained."""

import dataclasses
import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.cli import main
from bench.config import RunConfig
from bench.reports import compare, compare_report
from bench.runs.row import DESIGN, run_rows
from bench.runs.run_folder import (
    EvalSample,
    EvaluationEntry,
    RunFolder,
    RunMetrics,
    SampleMetrics,
    TrainMetrics,
)
from bench.runs.run_summary import summary

PLAIN_REFS = {
    "real": {"fd": 1.5, "precision": 0.9, "recall": 0.9},
    "mean-image": {"fd": 543.0, "precision": 0.0, "recall": 0.0},
}
CONDITIONAL_REFS = {
    "real": {"fd": 1.6, "precision": 0.9, "recall": 0.9, "class_accuracy": 0.98, "fd_class_mean": 3.25,
             "fd_class_worst": 5.5},
    "mean-image": {"fd": 543.0, "precision": 0.0, "recall": 0.0},
    "class-mean-image": {"fd": 300.0, "precision": 0.0, "recall": 0.0, "class_accuracy": 1.0,
                         "fd_class_mean": 41.5, "fd_class_worst": 77.0},
}  # fmt: skip
STEPS = 20


def quality(scale: float | None, seed: int, interval: list[float] | None = None) -> dict[str, float]:
    """Scores that say which sampling made them: FD 10 x scale + seed (+0.5 with an interval)."""
    if scale is None:
        return {"fd": 50.0 + seed, "precision": 0.6, "recall": 0.7}
    return {
        "fd": 10 * scale + seed + (0.5 if interval else 0.0),
        "precision": 0.5 + 0.1 * scale,
        "recall": 0.9 - 0.1 * scale,
        "class_accuracy": 0.6 + 0.1 * scale,
        "fd_class_mean": 20.0 + scale,
        "fd_class_worst": 30.0 + scale,
        "fd_class_worst_index": 7.0,
        "classes_scored": 10.0,
    }


def nfe(scale: float | None, interval: list[float] | None) -> int:
    """A guided step calls the network twice; an interval guides only some of the steps."""
    if scale is None or scale == 1:
        return STEPS
    return STEPS + (STEPS // 2 if interval else STEPS)


def write_run(root, name, seed, *, conditional=True, own=(1.0, None), evals=(), old_config=False):
    """A finished run folder: ``own`` is the (scale, interval) of the run's sampling, ``evals`` those of
    its later ``bench eval`` entries; ``conditional=False`` gives an unconditional run (scale None)."""
    run = root / name
    run.mkdir(parents=True)
    config = RunConfig(denoiser="unet", seed=seed, conditional=conditional).to_dict()
    if old_config:  # written before conditioning existed
        del config["conditional"]
    (run / "config.json").write_text(json.dumps(config))
    scale, interval = own if conditional else (None, None)
    entries = [
        EvaluationEntry(
            quality=quality(s, seed, iv),
            sample=EvalSample(
                "ddim", STEPS, 1.0, 100, seed, 40.0, nfe(s, iv), guidance_scale=s, guidance_interval=iv
            ),
        )
        for s, iv in evals
    ]
    RunFolder(run).write_metrics(
        RunMetrics(
            run_id=name,
            parameters=1000,
            train=TrainMetrics(1500, 96000, 100.0, 0.0, 0.1, "steps", 960.0, 2e8),
            sample=SampleMetrics(
                "ddim",
                STEPS,
                1.0,
                100,
                50.0,
                network_evaluations_per_image=nfe(scale, interval),
                guidance_scale=scale,
                guidance_interval=interval,
            ),
            quality=quality(scale, seed, interval),
            references=CONDITIONAL_REFS if conditional else PLAIN_REFS,
            evaluations=entries,
        )
    )
    return run


SCALES = [(1.5, None), (2.0, None), (3.0, None), (2.0, [0.3, 5.0])]


@pytest.fixture
def results(tmp_path):
    """Two seeds of a conditional run (own sampling at scale 1, evaluated at four more settings) and two of
    an unconditional one, the second with a config from before conditioning."""
    root = tmp_path / "results"
    for seed in (0, 1):
        write_run(root, f"cond-s{seed}", seed, evals=SCALES)
        write_run(root, f"plain-s{seed}", seed, conditional=False, old_config=seed == 1)
    return root


def test_each_scale_and_interval_is_its_own_row_and_seeds_group(results):
    table = compare.summarize(compare.collect([results]).runs)
    conditional = table[table["conditional"]].set_index(["guidance", "interval"])
    assert sorted(conditional.index) == [(1.0, ""), (1.5, ""), (2.0, ""), (2.0, "0.3-5"), (3.0, "")]
    assert (conditional["seeds"] == 2).all()
    assert conditional.loc[(2.0, ""), "fd"] == pytest.approx(20.5)  # mean of 20 and 21
    assert conditional.loc[(2.0, "0.3-5"), "fd"] == pytest.approx(21.0)
    assert conditional.loc[(2.0, "0.3-5"), "nfe"] == 30 and conditional.loc[(2.0, ""), "nfe"] == 40
    assert conditional.loc[(3.0, ""), "class_accuracy"] == pytest.approx(0.9)


def test_unconditional_runs_keep_their_columns_and_group_with_old_configs(results):
    table = compare.summarize(compare.collect([results]).runs)
    plain = table[~table["conditional"].astype(bool)]
    assert len(plain) == 1 and plain["seeds"].iloc[0] == 2  # the config without the key reads as False
    assert math.isnan(plain["guidance"].iloc[0]) and plain["interval"].iloc[0] == ""
    assert plain["fd"].iloc[0] == pytest.approx(50.5)
    assert math.isnan(plain["class_accuracy"].iloc[0])
    only_plain = compare.summarize(compare.collect([results / "plain-s0", results / "plain-s1"]).runs)
    headline = compare.headline_columns(only_plain)
    assert "class_accuracy" not in headline and "fd_class_mean" not in headline
    assert {"class_accuracy", "fd_class_mean"} <= set(compare.headline_columns(table))


def test_an_eval_row_takes_its_own_guidance_never_its_runs(tmp_path):
    run = write_run(tmp_path, "cond", 0, own=(4.0, [1.0, 2.0]), evals=[(1.0, None), (None, None)])
    own, unguided, unrecorded = run_rows(RunFolder(run))
    assert (own["guidance"], own["interval"]) == (4.0, "1-2")
    assert (unguided["guidance"], unguided["interval"]) == (1.0, "")
    assert math.isnan(unrecorded["guidance"]) and unrecorded["interval"] == ""
    assert unguided["conditional"] is True and unguided["fd"] == pytest.approx(10.0)


def test_samples_of_one_class_are_a_design_of_their_own(tmp_path):
    """``bench eval --class 3`` scores samples all of class 3: a row of its own, never grouped with the
    balanced samples of the same scale, and labelled with the class in reports and figures."""
    run = write_run(tmp_path, "cond", 0)
    metrics = RunFolder(run).read_metrics()
    one_class = EvaluationEntry(
        quality=quality(1.0, 0),
        sample=EvalSample("ddim", STEPS, 1.0, 100, 0, 40.0, STEPS, guidance_scale=1.0, class_label=3),
    )
    RunFolder(run).write_metrics(dataclasses.replace(metrics, evaluations=[one_class]))
    own, of_class_3 = run_rows(RunFolder(run))
    assert (own["class_label"], of_class_3["class_label"]) == ("", "3")
    assert "class_label" in DESIGN
    table = compare.summarize(compare.collect([tmp_path]).runs)
    assert sorted(table["class_label"]) == ["", "3"]
    assert compare_report.design_label(pd.Series(of_class_3)).endswith(", guidance 1, class 3")


def test_class_mean_image_is_among_the_references_beside_an_unconditional_floor(results):
    runs = compare.collect([results]).runs
    refs = compare.references(runs)
    assert sorted(refs) == ["class-mean-image", "mean-image", "real"]
    assert refs["real"]["fd"] == pytest.approx(1.6)  # the first run (cond-s0) has every row
    assert refs["class-mean-image"]["fd_class_mean"] == pytest.approx(41.5)
    plain_first = compare.references(runs.iloc[::-1])  # an unconditional run first: it lends no class rows
    assert plain_first["real"]["fd"] == pytest.approx(1.5)
    assert plain_first["real"]["class_accuracy"] == pytest.approx(0.98)
    assert plain_first["class-mean-image"]["class_accuracy"] == pytest.approx(1.0)
    plain = compare.references(runs[~runs["conditional"]])
    assert sorted(plain) == ["mean-image", "real"]


def test_the_report_plots_quality_against_guidance_when_scales_vary(results, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", str(results), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = result.output.split("wrote")[0]
    assert "class_accuracy" in table and "reference: class-mean-image" in table
    png = out / "quality_vs_guidance.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    csv = pd.read_csv(out / "comparison.csv")
    assert {"conditional", "guidance", "interval"} <= set(csv.columns)
    assert csv.loc[csv["denoiser"] == "reference: class-mean-image", "fd_class_mean"].item() == 41.5


def test_no_guidance_figure_without_two_scales_of_one_design(tmp_path):
    write_run(tmp_path, "plain", 0, conditional=False)
    write_run(tmp_path, "cond", 0, own=(2.0, None))
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "comparison.csv").is_file() and not (out / "quality_vs_guidance.png").exists()


def test_guidance_lines_are_designs_without_the_scale_and_say_the_interval(results):
    runs = compare.collect([results]).runs
    lines = compare_report.guidance_lines(runs, ["fd", "class_accuracy"])
    assert [(interval, list(mean.index)) for _, interval, mean in lines] == [
        ("", [1.0, 1.5, 2.0, 3.0]),
        ("0.3-5", [1.0, 2.0]),  # scale 1 guides nowhere: the unguided point starts the interval's line
    ]
    assert lines[1][2].loc[2.0, "fd"] == pytest.approx(21.0)
    assert lines[0][0] == "unet conditional / linear / ddim 20 steps, eta 1"
    row = runs[(runs["interval"] == "0.3-5")].iloc[0]
    assert compare_report.design_label(row).endswith("guidance 2 on sigma 0.3-5")
    plain = runs[~runs["conditional"]].iloc[0]
    assert "conditional" not in compare_report.design_label(plain)
    assert "guidance" not in compare_report.design_label(plain)
    # each scale is its own line against NFE too: one NFE per scale here, so no line to draw
    assert compare_report.quality_vs_nfe(runs, "fd", results / "nfe.png") is None


def conditional_metrics(**sample: object) -> RunMetrics:
    return RunMetrics(
        run_id="r",
        parameters=1,
        train=TrainMetrics(1500, 96000, 360.0, 0.1, 0.03, "steps", 260.0),
        sample=SampleMetrics("ddim", 20, 1.0, 500, 32.0, 30, **sample),
        quality={"fd": 42.0, "precision": 0.75, "recall": 0.5, "class_accuracy": 0.91, "fd_class_mean": 12.5,
                 "fd_class_worst": 19.25, "fd_class_worst_index": 7.0, "classes_scored": 10.0},
        references=CONDITIONAL_REFS,
    )  # fmt: skip


def test_the_summary_puts_class_metrics_beside_the_class_mean_ceiling():
    text = summary(conditional_metrics(guidance_scale=2.0, guidance_interval=[0.3, 5.0])).splitlines()
    rows = {line.split("  ")[0]: line.split()[-3:] for line in text}
    assert rows["class accuracy"] == ["0.91", "0.98", "1"]
    assert rows["per-class FD, mean"] == ["12.5", "3.25", "41.5"]
    assert rows["per-class FD, worst (class 7)"] == ["19.25", "5.5", "77"]
    assert rows["FD (lower is better)"] == ["42", "1.6", "543"]  # the dataset mean image stays FD's ceiling
    assert any(
        line.startswith("classes asked for") and "class-mean images (ceiling)" in line for line in text
    )
    sampling = next(line for line in text if line.startswith("sampling:"))
    assert sampling.endswith("ddim 20 steps, 30 NFE, guidance 2 on sigma (0.3, 5]")


def test_an_unconditional_summary_has_no_class_rows_nor_guidance():
    plain = conditional_metrics()
    quality = {k: v for k, v in plain.quality.items() if not k.startswith(("class", "fd_class"))}
    text = summary(dataclasses.replace(plain, quality=quality, references=PLAIN_REFS))
    assert "class" not in text and "guidance" not in text
    assert text.splitlines()[-1].endswith("ddim 20 steps, 30 NFE")
