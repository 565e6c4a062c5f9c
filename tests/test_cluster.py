"""Runs beyond one process, without SLURM: claims on run folders (atomic, reclaimed from the dead, never
taken from the living), the local executor's parallel jobs, `bench sweep status`, and the bad-input matrix
of the executor options. The same against a real SLURM is tests/test_slurm.py."""

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from bench.cluster.executors import ExecutorConfig
from bench.cluster.status import format_status, sweep_status
from bench.runs.claims import CLAIM_NAME, ClaimedElsewhere, Holder, claim, read_claim, release
from tests.helpers import FAST, TINY_UNET, invoke


def gone_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claim_is_exclusive_released_and_reclaimed_from_the_dead(tmp_path):
    folder = tmp_path / "run"
    me = Holder.here()
    assert claim(folder, me) is None and read_claim(folder) == me
    alive = Holder(me.host, os.getppid())  # the test runner's parent: alive, and not us
    with pytest.raises(ClaimedElsewhere, match=f"process {os.getpid()} on {me.host}"):
        claim(folder, alive)
    assert claim(folder, me) is None  # our own claim (a restart of the same holder) is ours again
    release(folder, alive)  # not its claim: nothing happens
    assert read_claim(folder) == me
    release(folder, me)
    assert not (folder / CLAIM_NAME).exists()

    dead = Holder(me.host, gone_pid())
    assert claim(folder, dead) is None
    note = claim(folder, me)
    assert note == f"reclaimed {folder} from process {dead.pid} on {me.host}, which is no longer running"
    assert read_claim(folder) == me
    assert len(list(folder.glob(".claim-*.stale.json"))) == 1  # the dead claim is kept, not deleted


def test_a_process_on_another_host_is_never_reclaimed(tmp_path):
    claim(tmp_path / "run", Holder("some-other-host", gone_pid()))
    with pytest.raises(ClaimedElsewhere, match="process .* on some-other-host"):
        claim(tmp_path / "run", Holder.here())


def test_of_many_claimants_at_once_exactly_one_wins(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from bench.runs.claims import ClaimedElsewhere, Holder, claim
        try:
            claim(Path({str(tmp_path / "run")!r}), Holder.here())
            print("won")
        except ClaimedElsewhere:
            print("lost")
        """
    )
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
                 for _ in range(8)]  # fmt: skip
    outcomes = [p.communicate()[0].strip() for p in processes]
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    holder = read_claim(tmp_path / "run")
    assert holder.pid in {p.pid for p in processes}


def test_a_sweep_leaves_a_point_another_process_trains(tmp_path):
    """A point claimed by a live process is left to it, waited for, and trained here once its holder is gone
    (its claim reclaimed)."""
    import bench.cluster.sweep

    out = tmp_path / "sweep"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    threading.Thread(target=holder.wait, daemon=True).start()  # its parent collects it when it exits
    claim(out / "tiny-test-linear-s0", Holder(Holder.here().host, holder.pid))
    bench.cluster.sweep.LEFT_POLL_S, poll = 0.5, bench.cluster.sweep.LEFT_POLL_S
    try:
        note = f"reclaimed {out / 'tiny-test-linear-s0'} from process {holder.pid}"
        with pytest.warns(UserWarning, match=note):
            result = invoke("sweep", *FAST, "--out", str(out), "--quiet")
    finally:
        bench.cluster.sweep.LEFT_POLL_S = poll
        holder.wait()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("[1/1]")]
    assert lines == [
        "[1/1] tiny-test-linear-s0: left to the process or job that holds it",
        "[1/1] tiny-test-linear-s0: complete",
    ]
    assert not (out / "tiny-test-linear-s0" / CLAIM_NAME).exists()


def test_local_jobs_train_the_grid_in_parallel_processes(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", *TINY_UNET, "--seeds", "0,1", "--out", str(out), "--executor", "local", "--jobs", "2"]
    args.append("-q")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "submitted 2 of 2 runs" in result.output and (out / "report" / "comparison.csv").is_file()
    jobs = json.loads((out / "jobs.json").read_text())
    assert set(jobs) == {"unet-linear-s0", "unet-linear-s1"}
    assert {job["executor"] for job in jobs.values()} == {"local"}
    for name, job in jobs.items():
        assert json.loads((out / name / "status.json").read_text())["state"] == "complete"
        assert (out / name / "local" / f"{job['job_id']}.out").is_symlink()  # its log, beside the run
        assert int(job["job_id"]) != os.getpid()  # a process of its own
    again = invoke(*args)  # complete: nothing submitted again
    assert again.exit_code == 0 and "submitted 0 of 2 runs" in again.output
    status = invoke("sweep", "status", str(out))
    assert status.exit_code == 0 and status.output.count(" complete ") == 2 and "2 complete" in status.output


def test_sweep_status_says_what_each_point_does(tmp_path):
    out = tmp_path / "sweep"
    (out / "a").mkdir(parents=True)
    (out / "b").mkdir()
    (out / "a" / "status.json").write_text(json.dumps({"state": "complete", "step": 6}))
    failed = {"state": "failed", "step": 3, "reason": "loss is nan"}
    (out / "b" / "status.json").write_text(json.dumps(failed))
    (out / "b" / "local").mkdir()
    (out / "b" / "local" / "7.err").write_text("Traceback\n  ...\nNonFiniteLossError: the loss became nan\n")
    manifest = {"runs": {"a": {}, "b": {}, "c": {}}, "command": "bench sweep x"}
    (out / "sweep.json").write_text(json.dumps(manifest))
    points = {p.name: p for p in sweep_status(out)}
    assert [(p.state, p.step) for p in points.values()] == [("complete", 6), ("failed", 3), ("pending", None)]
    assert points["b"].log_tail[-1] == "NonFiniteLossError: the loss became nan"
    text = format_status(list(points.values()), "bench sweep x")
    assert "1 complete" in text and "1 failed" in text and "1 pending" in text
    assert "submit it again: bench sweep x" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "local", "--partition", "gpu"], "--partition apply to --executor slurm only"),
        (["--nodes", "0"], "nodes must be a positive integer, got 0"),
        (["--executor", "slurm", "--jobs", "2"], "SLURM's is --max-parallel"),
        (["--time-min", "5"], "--time-min applies to --executor slurm only"),
        (["--gpus-per-run", "1", "--gpus-per-node", "2"], "give --gpus-per-run or --gpus-per-node, not both"),
    ],
)
def test_bad_executor_options_are_usage_errors(tmp_path, args, message):
    result = invoke("sweep", *FAST, *args, "--out", str(tmp_path / "sweep"), "--quiet")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "sweep").exists()


def test_slurm_without_sbatch_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch, sinfo or squeue on it
    for command in (["sweep", *FAST], ["run", *FAST]):
        result = invoke(*command, "--executor", "slurm", "--out", str(tmp_path / "out"), "--quiet")
        assert result.exit_code == 2, result.output
        assert "--executor slurm needs SLURM's sbatch, and this machine has none" in result.output
    assert not list((tmp_path / "out").glob("*/claim.json")) and not (tmp_path / "out" / "jobs.json").exists()


def test_executor_config_defaults_run_in_this_process():
    assert ExecutorConfig().in_process and not ExecutorConfig(jobs=2).in_process
    assert ExecutorConfig(kind="slurm", gpus_per_node=4).tasks == 4
    assert ExecutorConfig(kind="slurm", tasks_per_node=2).tasks == 2


def test_submitit_missing_names_the_extra(monkeypatch):
    import builtins

    from bench.cluster.executors import require_submitit

    real = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    with pytest.raises(ValueError, match=r"pip install 'submitit>=1\.5'"):
        require_submitit()


def test_a_run_folder_with_a_claim_is_not_a_benchmark_file():
    from bench.runs.run_folder import RUN_FILES

    assert CLAIM_NAME in RUN_FILES and Path(CLAIM_NAME).suffix == ".json"
