"""`bench run` end to end on the embedded 8x8 digits with a tiny denoiser: the run folder, resume,
`bench sample`, and the bad-input matrix (clear message, exit code 2, nothing on disk damaged)."""

import json
import os
import shutil
import stat

import pytest
import torch

from bench.reports.listing import CHOICE_NAMES, DESIGN_CHOICES
from tests.helpers import FAST, invoke, run_ok


def test_run_writes_a_complete_run_folder(tmp_path):
    run_dir = run_ok(tmp_path)
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "environment.json",
        "loss.csv",
        "checkpoint.pt",
        "samples.png",
        "samples.npz",
        "metrics.json",
        "status.json",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 10 and metrics["parameters"] > 0
    assert metrics["sample"]["method"] == "ddim" and metrics["sample"]["steps"] == 5
    assert metrics["sample"]["images_per_s"] > 0 and set(metrics["phases"]) >= {"train_s", "sample_s"}
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["packages"]["torch"] and env["device"] == "cpu"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 10 and ckpt["meta"]["denoiser"] == "tiny-test"


def test_resume_continues_to_the_same_weights(tmp_path):
    straight = run_ok(tmp_path, run_id="straight")
    half = run_ok(tmp_path, "--steps", "5", run_id="half")
    result = invoke("run", "--resume", str(half), "--steps", "10", "--quiet")  # a larger budget
    assert result.exit_code == 0, result.output
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(half / "checkpoint.pt", weights_only=True)
    assert b["step"] == 10
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_bench_sample_writes_next_to_the_run(tmp_path):
    run_dir = run_ok(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()}
    result = invoke("sample", str(run_dir), "--n", "4", "--method", "ddim", "--steps", "3", "--quiet")
    assert result.exit_code == 0, result.output
    outputs = sorted((run_dir / "samples").iterdir())
    assert [p.suffix for p in outputs] == [".npz", ".png"]
    assert before == {p: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file()}


def test_direct_design_samples_in_one_shot(tmp_path):
    run_dir = run_ok(tmp_path, "-o", "terminal=True", "--target", "x0")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sample"]["method"] == "one_shot" and metrics["sample"]["steps"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--denoiser", "nope"], "unknown denoiser 'nope'"),
        (["--schedule", "nope"], "unknown schedule 'nope'"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--steps", "0"], "must be a positive integer"),
        (["--batch-size", "-4"], "must be a positive integer"),
        (["--sampler", "eulr"], "unknown sampler 'eulr'"),
        (["--dataset", "mnist", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
        (["-o", "noequals"], "expected KEY=VALUE"),
        (["--lr", "-1"], "lr must be a positive number"),
    ],
)
def test_bad_input_is_a_usage_error(tmp_path, args, message):
    result = invoke("run", *FAST, *args, "--out", str(tmp_path), "--quiet")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing was created


def test_existing_run_id_is_refused_and_left_intact(tmp_path):
    run_dir = run_ok(tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    result = invoke("run", *FAST, "--out", str(tmp_path), "--run-id", "r1", "--quiet")
    assert result.exit_code == 2 and "already exists" in result.output
    assert before == {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    run_dir = run_ok(tmp_path)
    good = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    # a larger budget: the run is complete, so only training it further reads the checkpoint
    result = invoke("run", "--resume", str(run_dir), "--steps", "20", "--quiet")
    assert result.exit_code == 2 and "is not a PyTorch weight file" in result.output
    assert "Traceback" not in result.output and "weights_only=False" not in result.output
    (run_dir / "checkpoint.pt").write_bytes(good)
    config = json.loads((run_dir / "config.json").read_text())
    config["diffusion"]["timesteps"] = 60
    (run_dir / "config.json").write_text(json.dumps(config))
    result = invoke("run", "--resume", str(run_dir), "--steps", "20", "--quiet")
    assert result.exit_code == 2 and "does not match" in result.output and "num_timesteps" in result.output
    assert (run_dir / "checkpoint.pt").read_bytes() == good


def test_read_only_results_folder(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: use a file system that refuses writes instead
        out = "/sys/ddpm-bench-results"
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        result = invoke("run", *FAST, "--out", str(out), "--quiet")
        assert result.exit_code == 2 and "cannot write to the results folder" in result.output
        assert "Traceback" not in result.output
    finally:
        if os.geteuid() != 0:
            out.chmod(stat.S_IRWXU)


def test_every_command_has_help():
    for command in ([], ["run"], ["sample"], ["list"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_run_with_evaluation_and_bench_eval(tmp_path):
    with_eval = [a for a in FAST if a != "--no-eval"]
    result = invoke(
        "run", *with_eval, "--n-samples", "40", "--out", str(tmp_path), "--run-id", "ev", "--quiet"
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics["quality"]) >= {
        "fd",
        "kid_mean",
        "precision",
        "recall",
        "density",
        "coverage",
        "pixel_diversity",
        "class_entropy",
    }
    assert metrics["references"]["real"]["fd"] < metrics["references"]["mean-image"]["fd"]
    assert metrics["feature_space"]["test_accuracy"] > 0.9
    assert metrics["nll"]["timesteps_used"] == 32 and metrics["nll"]["bits_per_dim"] > 0
    assert "eval_s" in metrics["phases"]

    result = invoke("eval", str(tmp_path / "ev"), "--n", "20", "--steps", "2,4", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert [e["sample"]["steps"] for e in metrics["evaluations"]] == [2, 4]
    assert metrics["sample"]["steps"] == 5  # the run's own numbers are kept


def test_eval_scores_external_samples(tmp_path):
    from bench.datasets import load
    from bench.images import save_samples_npz

    data = load("digits")
    save_samples_npz(tmp_path / "real.npz", data.train_images[:60])
    result = invoke("eval", "--samples", str(tmp_path / "real.npz"), "--dataset", "digits", "--quiet")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output)
    assert scored["quality"]["fd"] < scored["references"]["mean-image"]["fd"] / 5
    bad = invoke("eval", "--samples", str(tmp_path / "real.npz"), "--dataset", "mnist5k", "--quiet")
    assert bad.exit_code == 2 and "shape" in bad.output
    assert invoke("eval", "--samples", str(tmp_path / "real.npz")).exit_code == 2


def test_bench_list_shows_every_kind_with_descriptions():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    for kind in ("schedules:", "denoisers (at 1x28x28):", "samplers:", "datasets:"):
        assert kind in result.output
    for name in (
        "linear",
        "cosine",
        "sigmoid",
        "unet",
        "direct",
        "transformer",
        "ddim",
        "one_shot",
        "mnist5k",
    ):
        assert f"  {name} " in result.output
    assert "1.06M params  predicts eps, samples with ddim" in result.output
    assert "predicts x0, samples with one_shot" in result.output
    assert "unet presets: small, ddpm-cifar10" in result.output
    assert "  rectified-flow  Rectified flow's path" in result.output
    # the design choices that are not plugins: every one the code knows, described
    assert {title: tuple(choices) for title, choices in DESIGN_CHOICES.items()} == CHOICE_NAMES
    for title, names in CHOICE_NAMES.items():
        section = result.output.split(f"{title}:\n", 1)[1]
        for name in names:
            assert f"  {name} " in section
    assert invoke("list", "--shape", "x").exit_code == 2


def test_the_default_dataset_runs_at_its_declared_size(tmp_path):
    from bench import datasets

    assert datasets.run_image_size("mnist5k") == 14 and datasets.run_image_size("digits") is None
    args = ["--denoiser", "tiny-test", "--steps", "2", "--batch-size", "8", "--n-samples", "4"]
    args += ["--sample-steps", "2", "--timesteps", "20", "--no-eval", "--device", "cpu", "--quiet"]
    for extra, side in (([], 14), (["--image-size", "28"], 28)):
        result = invoke("run", *args, *extra, "--out", str(tmp_path), "--run-id", f"size{side}")
        assert result.exit_code == 0, result.output
        config = json.loads((tmp_path / f"size{side}" / "config.json").read_text())
        assert config["dataset"] == "mnist5k" and config["image_size"] == side
        meta = torch.load(tmp_path / f"size{side}" / "checkpoint.pt", weights_only=True)["meta"]
        assert list(meta["image_shape"])[1:] == [side, side], meta


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="needs a C++ compiler")
def test_compiled_run_trains_and_samples(tmp_path):
    run_dir = run_ok(tmp_path, "--compile")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 10 and metrics["sample"]["images_per_s"] > 0
    assert json.loads((run_dir / "config.json").read_text())["train"]["compile"] is True


def test_a_cifar10_run_from_its_on_disk_format_with_hflip_and_eval_every(tmp_path):
    """torchvision's CIFAR-10 python batches, written here, trained on end to end as the recipe does."""
    import numpy as np

    from bench.runs.run_folder import RunFolder
    from tests.dataset_files import write_cifar

    write_cifar(tmp_path / "data", np.random.default_rng(0), per_batch=8, n_test=20)
    result = invoke(
        "run", "--denoiser", "tiny-test", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
        "--steps", "10", "--batch-size", "8", "--checkpoint-every", "5", "--n-samples", "8",
        "--sample-steps", "3", "--timesteps", "50", "--hflip", "--eval-every", "5", "--device", "cpu",
        "--out", str(tmp_path / "out"), "--run-id", "c", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = RunFolder(tmp_path / "out" / "c")
    assert folder.read_config().train.hflip and folder.read_metrics().image_shape == [3, 32, 32]
    assert [row["step"] for row in folder.read_eval_curve()] == [5, 10]
    assert folder.read_metrics().quality["fd"] > 0


def test_a_checkpoint_from_before_the_groups_were_kept_loads_only_into_the_same_groups(tmp_path):
    """GroupNorm's group count has no parameter: a checkpoint of the U-Net whose 8-channel norms had one
    channel per group would load into today's (4 groups) without an error, so it is refused by name; one
    whose groups are the same today (64 channels: 32 groups then and now) still resumes."""
    from tests.helpers import TINY_UNET

    def legacy_run(run_id: str, *options: str):
        result = invoke("run", *TINY_UNET, *options, "--out", str(tmp_path), "--run-id", run_id, "--quiet")
        assert result.exit_code == 0, result.output
        path = tmp_path / run_id / "checkpoint.pt"
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["meta"]["norm_groups"]
        del ckpt["meta"]["norm_groups"]  # as written before the identity named the groups
        torch.save(ckpt, path)
        return tmp_path / run_id

    one_per_group = legacy_run("eight")
    result = invoke("run", "--resume", str(one_per_group), "--steps", "8", "--quiet")
    assert result.exit_code == 2, result.output
    assert "8 channels: 8 groups, now 4" in result.output and "Traceback" not in result.output
    same = legacy_run("sixtyfour", "-o", "base_channels=64")
    result = invoke("run", "--resume", str(same), "--steps", "8", "--quiet")
    assert result.exit_code == 0, result.output
