"""A run folder written by earlier code reads, samples, scores, compares and resumes with today's.

``tests/fixtures/run-before-packages`` is ``bench run`` of the 8-channel U-Net on the 8x8 digits for 6 steps
(``--denoiser unet -o base_channels=8 -o "channel_mult=(1,)" -o num_res_blocks=1 --dataset digits --steps 6
--batch-size 16 --checkpoint-every 3 --timesteps 50 --n-samples 8 --sample-steps 5 --no-eval --device cpu
--no-tensorboard``), made by the code of commit d7fa9d5, before ``bench/`` was split into packages by role
and the training objective became a registry. Its files are kept as that code wrote them: what changed in
the code must not change what a run folder is.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.runs.experiment import build_experiment
from bench.runs.run_folder import RunFolder
from bench.training.checkpoint import load_checkpoint
from tests.helpers import invoke

FIXTURE = Path(__file__).parent / "fixtures" / "run-before-packages"


@pytest.fixture
def earlier_run(tmp_path) -> Path:
    run = tmp_path / "results" / "earlier"
    shutil.copytree(FIXTURE, run)
    return run


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_its_config_metrics_and_checkpoint_read_as_written(earlier_run):
    folder = RunFolder(earlier_run)
    assert folder.state() == "complete"
    config = folder.read_config()
    assert (config.denoiser, config.dataset, config.train.steps) == ("unet", "digits", 6)
    written = json.loads((earlier_run / "config.json").read_text())
    read = config.to_dict()
    for section, fields in written.items():  # every field it has reads back as written (newer ones default)
        assert (read[section] | fields if isinstance(fields, dict) else fields) == read[section], section
    metrics = folder.read_metrics()
    assert (metrics.train.images_seen, metrics.sample.method, metrics.sample.steps) == (96, "ddim", 5)
    checkpoint = load_checkpoint(folder.checkpoint, build_experiment(config).identity)
    assert checkpoint["step"] == 6
    assert "objective" not in checkpoint  # written before every checkpoint held its objective's state


def test_it_samples_and_scores(earlier_run):
    result = invoke("sample", str(earlier_run), "--n", "4", "--steps", "5", "--quiet")
    assert result.exit_code == 0, result.output
    samples = list((earlier_run / "samples").glob("*.npz"))
    assert len(samples) == 1
    result = invoke("eval", str(earlier_run), "--n", "16", "--steps", "5", "--quiet")
    assert result.exit_code == 0, result.output
    (entry,) = RunFolder(earlier_run).read_metrics().evaluations
    assert entry.sample.steps == 5 and entry.quality["fd"] > 0


def test_it_resumes_to_a_longer_budget_keeping_what_it_trained(earlier_run):
    with (earlier_run / "loss.csv").open() as f:
        before = list(csv.DictReader(f))
    result = invoke("run", "--resume", str(earlier_run), "--steps", "8", "--quiet")
    assert result.exit_code == 0, result.output
    with (earlier_run / "loss.csv").open() as f:
        after = list(csv.DictReader(f))
    assert after[: len(before)] == before  # the earlier code's curve, as it wrote it
    assert [int(row["step"]) for row in after] == [3, 6, 8]
    checkpoint = torch.load(earlier_run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 8
    assert RunFolder(earlier_run).state() == "complete"


def test_a_complete_run_asked_again_is_left_as_it_is(earlier_run):
    before = digests(earlier_run)
    result = invoke("run", "--resume", str(earlier_run), "--quiet")
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output
    assert digests(earlier_run) == before


def test_bench_compare_tabulates_it(earlier_run, tmp_path):
    out = tmp_path / "report"
    result = invoke("compare", str(earlier_run.parent), "--out", str(out))
    assert result.exit_code == 0, result.output
    with (out / "comparison.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    design = (row["denoiser"], row["dataset"], row["budget"], row["nfe"])
    assert design == ("unet", "digits", "6 steps x 16", "5")
    assert float(row["train_pflops"]) * 1e15 == pytest.approx(279527424.0)  # its recorded cost, as written
