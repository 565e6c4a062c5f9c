"""TensorBoard logging of `bench run`, read back with TensorBoard's own reader and server: the curves are
loss.csv's and eval.csv's rows, the sample grids and the hparams are there, a resumed run shows every step
once, and --no-tensorboard writes nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bench.config import RunConfig
from bench.runs.run_folder import RunFolder
from tests.helpers import env, invoke, run_ok

EVENT_FILES = "events.out.tfevents.*"
SCORED = ["--eval", "--eval-every", "5"]  # after FAST's --no-eval: scored during training and at the end


def read_events(logdir: Path):
    """Everything TensorBoard's reader keeps of ``logdir`` (no sampling: every step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    reader.Reload()
    return reader


def design_of(reader) -> dict:
    """The hparams of the run's session (TensorBoard's hparams plugin data)."""
    from tensorboard.plugins.hparams import metadata

    content = reader.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    return metadata.parse_session_start_info_plugin_data(content).hparams


def steps_and_values(reader, tag: str) -> tuple[list[int], list[float]]:
    events = reader.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def assert_curves_are_the_csv(reader, rows: list[dict], prefix: str) -> None:
    """Every column of a curve file as ``<prefix>/<column>``: the same steps, the same values (float32)."""
    assert rows
    for column in rows[0]:
        if column == "step":
            continue
        steps, values = steps_and_values(reader, f"{prefix}/{column}")
        assert steps == [row["step"] for row in rows], column
        assert values == pytest.approx([row[column] for row in rows], rel=1e-6), column


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def scored(results) -> RunFolder:
    """A run scored every 5 steps and at the end."""
    return RunFolder(run_ok(results, *SCORED, run_id="scored"))


@pytest.fixture(scope="module")
def resumed(results) -> RunFolder:
    """A run that went 5 steps, was trained on to 10, then lost its last checkpoint (as if killed after its
    event files and loss.csv were written past it) and was resumed from step 5 to 10 again."""
    folder = RunFolder(run_ok(results, "--steps", "5", run_id="resumed"))
    at_five = folder.checkpoint.read_bytes()
    assert invoke("run", "--resume", str(folder.path), "--steps", "10", "--quiet").exit_code == 0
    folder.checkpoint.write_bytes(at_five)
    folder.write_status("training", step=5)
    assert invoke("run", "--resume", str(folder.path), "--steps", "10", "--quiet").exit_code == 0
    assert len(list(folder.tensorboard.glob(EVENT_FILES))) == 3  # one file per segment
    return folder


def test_the_curves_are_loss_csv_and_eval_csv_with_sample_grids(scored):
    reader = read_events(scored.tensorboard)
    losses, scores = scored.read_loss_curve(), scored.read_eval_curve()
    assert {"loss", "lr", "grad_norm", "images_per_s"} <= set(losses[0])
    assert_curves_are_the_csv(reader, losses, "train")
    assert [row["step"] for row in scores] == [5, 10]
    assert_curves_are_the_csv(reader, scores, "eval")
    grids = reader.Images("eval/samples")
    assert [image.step for image in grids] == [5, 10]
    assert all(image.encoded_image_string.startswith(b"\x89PNG") for image in grids)
    assert [image.step for image in reader.Images("final/samples")] == [10]


def test_the_hparams_hold_the_design_beside_its_final_scores(scored):
    reader = read_events(scored.tensorboard / "hparams")
    design = design_of(reader)
    assert design["denoiser"].string_value == "tiny-test"
    assert design["schedule"].string_value == "linear"
    assert design["loss_weight"].string_value == "uniform"
    assert design["sampler"].string_value == "ddim"
    assert design["sample_steps"].number_value == 5
    assert design["seed"].number_value == 0
    assert design["budget"].string_value == "10 steps x 16"
    quality = scored.read_metrics().quality
    assert steps_and_values(reader, "final/fd") == ([10], [pytest.approx(quality["fd"], rel=1e-6)])
    assert steps_and_values(reader, "final/recall") == ([10], [pytest.approx(quality["recall"], rel=1e-6)])


def test_a_resumed_run_shows_every_step_once(resumed):
    reader = read_events(resumed.tensorboard)
    losses = resumed.read_loss_curve()
    assert [row["step"] for row in losses] == [5, 10]
    assert_curves_are_the_csv(reader, losses, "train")  # the purged segment's step 10 is gone
    assert [image.step for image in reader.Images("final/samples")] == [5, 10]
    hparams = read_events(resumed.tensorboard / "hparams")  # replaced by the last segment's
    assert len(list((resumed.tensorboard / "hparams").glob(EVENT_FILES))) == 1
    assert design_of(hparams)["budget"].string_value == "10 steps x 16"  # trained on from 5 steps
    assert [e.step for e in hparams.Scalars("final/sample_images_per_s")] == [10]


def test_no_tensorboard_writes_no_event_files(tmp_path):
    run_dir = run_ok(tmp_path, "--no-tensorboard", "--steps", "2")
    assert not (run_dir / "tensorboard").exists() and not list(run_dir.rglob(EVENT_FILES))
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["tensorboard"] is False
    del saved["tensorboard"]  # a config.json from before the switch: logging, as by default
    assert RunConfig.from_dict(saved).tensorboard is True
    assert "--no-tensorboard" in invoke("sweep", "--help").output


def test_a_run_from_before_tensorboard_logging_gets_its_history_when_resumed(tmp_path):
    """Its config.json has no switch and its loss.csv no gradient norm: resumed, it logs all its rows."""
    folder = RunFolder(run_ok(tmp_path, "--no-tensorboard", "--steps", "5"))
    saved = json.loads((folder.path / "config.json").read_text())
    del saved["tensorboard"]
    (folder.path / "config.json").write_text(json.dumps(saved))
    folder.write_loss_curve(
        [{k: v for k, v in row.items() if k != "grad_norm"} for row in folder.read_loss_curve()]
    )
    assert invoke("run", "--resume", str(folder.path), "--steps", "10", "--quiet").exit_code == 0
    losses = folder.read_loss_curve()
    assert (
        [row["step"] for row in losses] == [5, 10]
        and "grad_norm" in losses[1]
        and "grad_norm" not in losses[0]
    )
    reader = read_events(folder.tensorboard)
    assert steps_and_values(reader, "train/loss") == ([5, 10], pytest.approx([row["loss"] for row in losses]))
    assert steps_and_values(reader, "train/grad_norm")[0] == [10]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_the_tensorboard_server_lists_the_runs_scalars(results, scored, resumed, tmp_path):
    pytest.importorskip("tensorboard")
    port, log = free_port(), tmp_path / "tensorboard.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(results), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "1"],
        env=env(), stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wanted = {"scored/tensorboard", "scored/tensorboard/hparams", "resumed/tensorboard"}
    try:
        deadline, runs = time.monotonic() + 90, []
        while time.monotonic() < deadline and not wanted <= set(runs):
            assert server.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
            try:
                runs = get_json(f"{base}/data/runs")
            except OSError:  # not listening yet
                continue
        assert wanted <= set(runs), runs
        tags = get_json(f"{base}/data/plugin/scalars/tags")
        assert {"train/loss", "train/lr", "train/grad_norm", "eval/fd"} <= set(tags["scored/tensorboard"])
        assert "final/fd" in tags["scored/tensorboard/hparams"]
        for run in ("scored", "resumed"):
            query = urllib.parse.urlencode({"run": f"{run}/tensorboard", "tag": "train/loss"})
            points = get_json(f"{base}/data/plugin/scalars/scalars?{query}")  # [wall time, step, value]
            rows = RunFolder(results / run).read_loss_curve()
            assert [p[1] for p in points] == [row["step"] for row in rows]  # once each, after a resume too
            assert [p[2] for p in points] == pytest.approx([row["loss"] for row in rows], rel=1e-6)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
