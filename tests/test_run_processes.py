"""`bench run` as a user starts it: under torchrun with 2 gloo processes, and stopped with Ctrl-C."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import SMALL, env


def test_two_process_run_writes_one_run_folder(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29581",
        "-m",
        "bench.cli",
        "run",
        *SMALL,
        "--steps",
        "6",
        "--checkpoint-every",
        "3",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1
    config = json.loads((runs[0] / "environment.json").read_text())
    assert config["world_size"] == 2
    assert len(list((runs[0] / "tensorboard").glob("events.out.tfevents.*"))) == 1  # the main process's
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["train"]["images_seen"] == 6 * 8 * 2  # per-process batch x processes
    assert json.loads((runs[0] / "status.json").read_text())["state"] == "complete"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, sig):
    cmd = [
        sys.executable,
        "-m",
        "bench.cli",
        "run",
        *SMALL,
        "--steps",
        "100000",
        "--checkpoint-every",
        "100000",
        "--out",
        str(tmp_path),
        "--run-id",
        "stopped",
    ]
    proc = subprocess.Popen(
        cmd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a shell without job control starts background jobs with SIGINT ignored, and
        # the run leaves an ignored signal ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    run_dir = tmp_path / "stopped"
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "status.json").exists():
        time.sleep(0.2)
    time.sleep(3)  # let it train a few steps
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "bench run --resume" in err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and status["step"] > 0
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == status["step"]


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs POSIX signals")
def test_module_entry_point_shows_help():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "--help"], env=env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "bench" in proc.stdout.lower()
