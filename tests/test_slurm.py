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
    assert set(after) <= set(before)  # nothing half-submitted (an earlier test's job may have ended since)
    assert not list(tmp_path.glob("sweep/*/claim.json")) and not (tmp_path / "sweep" / "jobs.json").exists()


def sbatch(*args: str) -> str:
    """Submit a batch job; its id."""
    result = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, check=True)
    return result.stdout.strip().split(";")[0]


def job_state(job: str) -> str:
    result = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    if result.stdout.strip():
        return result.stdout.strip()
    acct = subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True, text=True)
    return acct.stdout.split()[0].rstrip("+") if acct.stdout.split() else "GONE"


def unreachable_slurm_conf(tmp_path: Path) -> Path:
    """This cluster's slurm.conf with the controller and the accounting on ports nothing listens on: SLURM's
    own commands then fail as they do when the controller is down or too busy to answer."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text().splitlines()
    kept = [line for line in conf if not line.startswith(("SlurmctldPort", "AccountingStoragePort",
                                                          "MessageTimeout"))]  # fmt: skip
    path = tmp_path / "slurm.conf"
    unreachable = ["SlurmctldPort=6999", "AccountingStoragePort=6998", "MessageTimeout=1"]
    path.write_text("\n".join([*kept, *unreachable]))
    return path


def test_a_slurm_that_does_not_answer_never_makes_a_live_job_look_dead(tmp_path, monkeypatch):
    """A claim held by a running job, seen while squeue and sacct fail: the job counts as alive (with a
    warning that says SLURM did not answer), so its folder is neither taken over nor submitted again."""
    from bench.cluster import executors
    from bench.cluster.status import point_status
    from bench.runs import claims
    from bench.runs.claims import ClaimedElsewhere, Holder, claim, holder_alive, read_claim

    job = sbatch("--wrap", "sleep 120", "--cpus-per-task", "1", "-o", str(tmp_path / "sleep.out"))
    try:
        wait_for(lambda: job_state(job) == "RUNNING", what="the job to start")
        folder = tmp_path / "sweep" / "point"
        holder = Holder("node-of-the-job", 4242, job)
        claim(folder, holder)
        monkeypatch.setenv("SLURM_CONF", str(unreachable_slurm_conf(tmp_path)))
        monkeypatch.setattr(claims, "SLURM_RETRY_S", 0.1, raising=False)
        with pytest.warns(UserWarning, match=f"SLURM did not answer about job {job} .*still running"):
            assert holder_alive(holder)
            with pytest.raises(ClaimedElsewhere, match=f"SLURM job {job}"):
                claim(folder, Holder.here())
            assert not executors.needs_submitting(tmp_path / "sweep", "point")
            assert point_status(tmp_path / "sweep", "point", None).state == "unknown"  # bench sweep status
        assert read_claim(folder) == holder and not list(folder.glob(".claim-*.stale.json"))
    finally:
        subprocess.run(["scancel", job], check=False)


def test_two_processes_in_one_allocation_are_two_holders(tmp_path):
    """Inside one job, a second process claiming a folder the first holds is refused, and the first one's
    release leaves nothing of anyone else's."""
    from tests.helpers import CLAIM_SCRIPT

    script = tmp_path / "two.py"
    script.write_text(
        "import json, subprocess, sys\n"
        f"claim = {CLAIM_SCRIPT!r}\n"
        f"folder = {str(tmp_path / 'run')!r}\n"
        "first = subprocess.Popen([sys.executable, '-c', claim, folder, 'hold'], stdin=subprocess.PIPE,\n"
        "                         stdout=subprocess.PIPE, text=True)\n"
        "said = [first.stdout.readline().strip()]\n"
        "second = subprocess.run([sys.executable, '-c', claim, folder, 'once'],\n"
        "                        capture_output=True, text=True)\n"
        "said.append(second.stdout.strip() or second.stderr)\n"
        "first.stdin.close(); first.wait()\n"
        f"open({str(tmp_path / 'said.json')!r}, 'w').write(json.dumps(said))\n"
    )
    job = sbatch("--cpus-per-task", "1", "-o", str(tmp_path / "job.out"), "--wrap",
                 f"{sys.executable} {script}")  # fmt: skip
    wait_for(lambda: (tmp_path / "said.json").exists() or job_state(job) in ("FAILED", "COMPLETED"),
             what="the job's two processes")  # fmt: skip
    said = json.loads((tmp_path / "said.json").read_text()) if (tmp_path / "said.json").exists() else None
    assert said == ["claimed", "left"], (tmp_path / "job.out").read_text()
    assert not (tmp_path / "run" / "claim.json").exists()


def test_a_signal_while_sampling_requeues_the_job_and_the_run_completes(tmp_path):
    """USR2 after training, while the run samples: the job stops at once and is requeued (nothing
    half-written kept), and the requeued job samples again from the trained checkpoint."""
    sampling = list(TINY_UNET)  # a few seconds of training, then half a minute of sampling
    sampling[sampling.index("--n-samples") + 1] = "1000"
    sampling[sampling.index("--sample-steps") + 1] = "50"
    args = ["run", *sampling, "--run-id", "r", "--quiet", *SLURM, "--cpus-per-run", "1", "--no-wait"]
    submitted = invoke(*args, "--out", str(tmp_path))
    assert submitted.exit_code == 0, submitted.output
    run_dir = tmp_path / "r"
    job = json.loads((tmp_path / "jobs.json").read_text())["r"]["job_id"]

    def state() -> str | None:
        status = run_dir / "status.json"
        return json.loads(status.read_text())["state"] if status.is_file() else None

    wait_for(lambda: state() == "sampling", what="the run to sample")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: state() == "interrupted", timeout=30, what="the run to stop while sampling")
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "samples.npz").exists()
    wait_for(lambda: state() == "complete", timeout=300, what="the requeued job to finish the run")
    restarts = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in restarts
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sample"]["n"] == 1000 and metrics["train"]["steps"] == 6


def test_resume_with_a_larger_budget_as_a_job(tmp_path):
    """`bench run --resume R --steps N --executor slurm` trains the run further, to the weights of a run
    never stopped."""
    twelve = [a if a != "6" else "12" for a in TINY_UNET]
    straight = invoke("run", *twelve, "--run-id", "r", "--out", str(tmp_path / "here"), "--quiet")
    assert straight.exit_code == 0, straight.output
    first = invoke("run", *TINY_UNET, "--run-id", "r", "--out", str(tmp_path / "slurm"), "--quiet")
    assert first.exit_code == 0, first.output
    run_dir = tmp_path / "slurm" / "r"
    more = invoke("run", "--resume", str(run_dir), "--steps", "12", *SLURM, *BOTH_CPUS, "--quiet")
    assert more.exit_code == 0, more.output
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["step"]) == ("complete", 12)
    assert same_weights(run_dir, tmp_path / "here" / "r")
