"""Sweeps and runs as jobs of a real SLURM (the one-node cluster `scripts/local-slurm.sh start` sets up; CI
starts it and sets BENCH_REQUIRE_SLURM=1, so there these tests fail rather than skip without it)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.cluster.executors import SUBMITIT_DIR
from tests.helpers import TINY_UNET, invoke

REQUIRED = os.environ.get("BENCH_REQUIRE_SLURM") == "1"
if shutil.which("sbatch") is None:
    if REQUIRED:
        raise RuntimeError("BENCH_REQUIRE_SLURM=1 but there is no sbatch: run scripts/local-slurm.sh start")
    pytest.skip("no SLURM here (no sbatch); scripts/local-slurm.sh start sets one", allow_module_level=True)

pytestmark = pytest.mark.slurm
SLURM = ["--executor", "slurm", "--time-min", "15"]
# A job uses the CPUs SLURM gives it; with both of this machine's, it computes as the test process does.
BOTH_CPUS = ["--cpus-per-run", str(os.cpu_count())]


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def wait_for(predicate, timeout: float = 180, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def job_results(out: Path) -> list[str]:
    """What every job of a sweep folder returned (`<run name>: started|resumed|skipped...`)."""
    import cloudpickle

    results = []
    for path in (out / SUBMITIT_DIR).glob("*/*_result.pkl"):
        with open(path, "rb") as f:
            outcome, value = cloudpickle.load(f)
        results.append(value if outcome == "success" else f"error: {value}")
    return results


def test_a_sweep_as_a_job_array_ends_as_the_same_sweep_run_here(tmp_path):
    grid = ["--schedule", "linear,cosine", "--seeds", "0,1"]
    here = invoke("sweep", *TINY_UNET, *grid, "--out", str(tmp_path / "here"), "-q")
    assert here.exit_code == 0, here.output
    slurm = [*SLURM, *BOTH_CPUS, "--max-parallel", "2", "--out", str(tmp_path / "slurm"), "-q"]
    array = invoke("sweep", *TINY_UNET, *grid, *slurm)
    assert array.exit_code == 0, array.output
    jobs = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    assert len(jobs) == 4 and len({job["job_id"].split("_")[0] for job in jobs.values()}) == 1  # one array
    for name, job in jobs.items():
        run_dir = tmp_path / "slurm" / name
        assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
        assert same_weights(run_dir, tmp_path / "here" / name), name
        assert (run_dir / "slurm" / f"{job['job_id']}.out").exists()
    status = invoke("sweep", "status", str(tmp_path / "slurm"))
    assert status.exit_code == 0 and "4 complete" in status.output


@pytest.mark.parametrize("how", ["usr2", "scontrol-requeue"])
def test_a_run_requeued_mid_training_ends_as_one_never_interrupted(tmp_path, how):
    """submitit's own preemption signal (USR2) and an external `scontrol requeue` both stop the run after a
    step with its checkpoint written; the requeued job resumes it to the same weights."""
    long = [a if a != "6" else "200" for a in TINY_UNET]  # 200 steps: time to interrupt it
    args = ["run", *long, "--run-id", "r", "--quiet"]
    straight = invoke(*args, "--out", str(tmp_path / "here"))
    assert straight.exit_code == 0, straight.output
    submitted = invoke(*args, *SLURM, *BOTH_CPUS, "--no-wait", "--out", str(tmp_path / "slurm"))
    assert submitted.exit_code == 0, submitted.output
    run_dir = tmp_path / "slurm" / "r"
    job = json.loads((tmp_path / "slurm" / "jobs.json").read_text())["r"]["job_id"]

    def step() -> int:
        status = run_dir / "status.json"
        return json.loads(status.read_text()).get("step", 0) if status.is_file() else 0

    wait_for(lambda: step() >= 30, what="training to pass step 30")
    if how == "usr2":
        subprocess.run(["scancel", "--signal=USR2", job], check=True)  # to the job's steps, as SLURM does
    else:
        subprocess.run(["scontrol", "requeue", job], check=True)
    stopped = time.time()
    wait_for(lambda: json.loads((run_dir / "status.json").read_text())["state"] == "interrupted",
             what="the run to stop")  # fmt: skip
    interrupted_at = step()
    wait_for(lambda: json.loads((run_dir / "status.json").read_text())["state"] == "training"
             and step() >= interrupted_at, what="the requeued job to resume")  # fmt: skip
    print(f"requeue to resume: {time.time() - stopped:.1f} s ({how})")
    wait_for(lambda: json.loads((run_dir / "status.json").read_text())["state"] == "complete", timeout=300,
             what="the run to complete")  # fmt: skip
    assert same_weights(run_dir, tmp_path / "here" / "r")
    assert 0 < interrupted_at < 200


def test_a_two_process_run_through_slurm(tmp_path):
    result = invoke("run", *TINY_UNET, *SLURM, "--tasks-per-node", "2", "--run-id", "ddp",
                    "--out", str(tmp_path), "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    environment = json.loads((tmp_path / "ddp" / "environment.json").read_text())
    assert environment["world_size"] == 2
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["train"]["images_seen"] == 6 * 16 * 2  # the batch is per process


def test_two_sweeps_at_once_train_each_point_once(tmp_path):
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "bench.cli", "sweep", *TINY_UNET, "--seeds", "0,1", *SLURM,
               "--out", str(out), "-q"]  # fmt: skip
    first, second = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for _ in range(2))  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    trained = [r.split(": ")[0] for r in job_results(out) if r.endswith(": started")]
    assert sorted(trained) == ["unet-linear-s0", "unet-linear-s1"], job_results(out)


def test_a_failed_job_shows_in_status_with_its_log(tmp_path):
    out = tmp_path / "sweep"
    result = invoke("sweep", *TINY_UNET, "--lr", "1e12", "--grad-clip", "0", *SLURM, "--out", str(out), "-q")
    assert result.exit_code == 1 and "1 runs did not complete" in result.output
    status = invoke("sweep", "status", str(out))
    assert status.exit_code == 0 and "1 failed" in status.output
    assert "the training loss became" in status.output  # the last lines of its log
    assert "submit it again: the command that started the sweep" in status.output  # tests type no command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition", "nope"], "unknown partition 'nope'; this cluster has: "),
        (["--gpus-per-run", "1"], "asks for GPUs, but partition"),
        (["--slurm", "constraint=no-such-feature"], "SLURM refused the jobs: sbatch: error: Batch job "
         "submission failed: Invalid feature specification"),
        (["--slurm", "no-such-option=1"], "SLURM refused the jobs:"),
    ],
)
def test_what_slurm_would_refuse_is_a_usage_error_and_nothing_is_submitted(tmp_path, args, message):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    result = invoke("sweep", *TINY_UNET, *SLURM, *args, "--out", str(tmp_path / "sweep"), "-q")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert after == before  # nothing half-submitted
    assert not list(tmp_path.glob("sweep/*/claim.json")) and not (tmp_path / "sweep" / "jobs.json").exists()
