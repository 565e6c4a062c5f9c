"""The races a review found in run-folder claims and in the sweep's resume path, each reproduced against the
real functions: two claimants taking over one dead claim, two processes of one SLURM allocation, a run that
completes while a waiting sweep claims it, and the class each FID chunk's samples are drawn for. The same
cases against a real SLURM are in tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from bench.runs import claims
from bench.runs.claims import CLAIM_NAME, ClaimedElsewhere, Holder, claim, read_claim, release
from tests.helpers import CLAIM_SCRIPT, FAST, TINY_UNET, invoke, run_ok


def gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_two_claimants_judging_one_dead_claim_never_both_take_it(tmp_path, monkeypatch):
    """Both read the dead claim and judge it dead at the same moment (a barrier inside the liveness check);
    exactly one of them then holds the folder, and only the dead claim is moved aside."""
    folder = tmp_path / "run"
    host = Holder.here().host
    dead = Holder(host, gone_pid())
    claim(folder, dead)
    together = threading.Barrier(2, timeout=10)
    judged: list[int] = []
    real_alive = claims.holder_alive

    def judged_together(holder: Holder) -> bool:
        """Both judge the dead claim; the second then acts only once the first has taken the folder."""
        answer = real_alive(holder)
        if holder == dead and threading.get_ident() not in judged:
            judged.append(threading.get_ident())
            together.wait()
            if judged.index(threading.get_ident()) == 1:
                deadline = time.monotonic() + 5
                while read_claim(folder) in (dead, None) and time.monotonic() < deadline:
                    time.sleep(0.01)
        return answer

    monkeypatch.setattr(claims, "holder_alive", judged_together)
    claimants = [Holder(host, os.getpid()), Holder(host, os.getppid())]  # two live processes
    outcomes: dict[Holder, str] = {}

    def take(holder: Holder) -> None:
        try:
            claim(folder, holder)
            outcomes[holder] = "claimed"
        except ClaimedElsewhere:
            outcomes[holder] = "left"

    threads = [threading.Thread(target=take, args=(h,)) for h in claimants]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes.values()) == ["claimed", "left"], outcomes
    (winner,) = [h for h, outcome in outcomes.items() if outcome == "claimed"]
    assert read_claim(folder) == winner
    stale = [json.loads(p.read_text()) for p in folder.glob(".claim-*.stale.json")]
    assert [s["pid"] for s in stale] == [dead.pid]  # nothing alive was moved aside


def test_two_processes_of_one_slurm_job_are_two_holders(tmp_path):
    """Two sweeps inside one allocation share SLURM_JOB_ID: the second must not take the first one's live
    claim, and the first one's release removes its own claim only."""
    folder = tmp_path / "run"
    env = {**os.environ, "SLURM_JOB_ID": "424242", "SLURM_RESTART_COUNT": "0"}
    env.pop("SLURM_ARRAY_JOB_ID", None)
    first = subprocess.Popen([sys.executable, "-c", CLAIM_SCRIPT, str(folder), "hold"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert first.stdout.readline().strip() == "claimed"
    second = subprocess.run([sys.executable, "-c", CLAIM_SCRIPT, str(folder), "once"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert second.stdout.strip() == "left", second.stderr
    assert read_claim(folder).pid == first.pid  # the first one's claim is untouched
    first.stdin.close()
    first.wait(60)
    assert not (folder / CLAIM_NAME).exists()  # released by its own holder


def test_a_requeued_job_takes_back_the_claim_of_its_earlier_run(tmp_path, monkeypatch):
    """A requeued job keeps its id but is a new process (SLURM_RESTART_COUNT one higher): the claim its
    earlier run left is its own to take over, not another live holder's."""
    folder = tmp_path / "run"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    earlier = Holder.here()
    claim(folder, Holder(earlier.host, gone_pid(), earlier.job_id, earlier.restart))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    now = Holder.here()
    note = claim(folder, now)
    assert note is not None and "reclaimed" in note
    assert read_claim(folder) == now


def test_a_claim_released_by_another_holder_stays(tmp_path):
    folder = tmp_path / "run"
    me = Holder.here()
    claim(folder, me)
    release(folder, Holder(me.host, os.getppid(), me.job_id, me.restart))
    assert read_claim(folder) == me


def test_a_run_that_completes_while_a_sweep_waits_is_not_finished_again(tmp_path, monkeypatch):
    """The waiting sweep saw the point unfinished, then the holder completed it and released its claim before
    the sweep claimed it: the sweep must see under its claim that the run is complete and leave it alone."""
    import bench.cluster.sweep
    from bench.runs.run_folder import RunFolder

    out = tmp_path / "sweep"
    result = invoke("sweep", *FAST, "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    name = "tiny-test-linear-s0"
    metrics = (out / name / "metrics.json").read_bytes()
    config = RunFolder(out / name).read_config()
    real_state, looks = RunFolder.state, []

    def seen_before_it_completed(self):
        looks.append(1)
        return "training" if len(looks) == 1 else real_state(self)

    monkeypatch.setattr(RunFolder, "state", seen_before_it_completed)
    run_dir, action = bench.runs.resume.run_or_resume(config, out, name, progress=False)
    assert action == "skipped"
    assert (out / name / "metrics.json").read_bytes() == metrics
    assert not (out / name / CLAIM_NAME).exists()


def test_bench_run_resume_of_a_complete_run_rewrites_nothing(tmp_path):
    run_dir = run_ok(tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    result = invoke("run", "--resume", str(run_dir), "--quiet")
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before


def test_every_fid_chunk_draws_the_classes_the_scoring_reads(tmp_path, monkeypatch):
    """Sample i is of class i mod K whichever chunk draws it: with K = 10 and chunks of 4, the second chunk
    is of classes 4..7, not 0..3 again."""
    import torch

    from bench.config import SampleConfig
    from bench.runs import experiment
    from bench.runs.experiment import load_run, sample_labels
    from bench.runs.fid_samples import chunked_samples

    run_dir = tmp_path / "c"
    result = invoke("run", *TINY_UNET, "--conditional", "--out", str(tmp_path), "--run-id", "c", "--quiet")
    assert result.exit_code == 0, result.output
    exp, _ = load_run(run_dir)
    asked: list[torch.Tensor] = []

    def recording_sampler(denoiser, shape, **kwargs):
        asked.append(denoiser.labels.cpu())
        return torch.zeros(shape)

    class Features:
        def features(self, x):
            return torch.zeros(len(x), 2048), torch.zeros(len(x), 1008)

    monkeypatch.setattr(experiment, "sample", recording_sampler)
    cfg = SampleConfig(method="ddim", steps=2, batch_size=4)
    chunked_samples(exp, exp.model, cfg, 10, seed=0, folder=tmp_path / "chunks", extractor=Features(),
                    chunk=4, progress=False)  # fmt: skip
    assert torch.equal(torch.cat(asked), sample_labels(exp, cfg, 12))
    assert torch.equal(torch.cat(asked)[:10], torch.arange(10) % 10)
    saved = [torch.load(p, weights_only=True)["labels"] for p in sorted((tmp_path / "chunks").glob("*.pt"))]
    assert torch.equal(torch.cat(saved), torch.cat(asked))  # kept with each chunk, checked on reuse
    stale = sorted((tmp_path / "chunks").glob("*.pt"))[1]
    chunk = torch.load(stale, weights_only=True)
    torch.save({**chunk, "labels": torch.arange(4)}, stale)  # as an earlier version drew it: classes 0..3
    asked.clear()
    chunked_samples(exp, exp.model, cfg, 10, seed=0, folder=tmp_path / "chunks", extractor=Features(),
                    chunk=4, progress=False)  # fmt: skip
    assert [a.tolist() for a in asked] == [[4, 5, 6, 7]]  # only the chunk drawn for other classes is redone


def test_two_sweeps_of_parallel_jobs_on_one_folder_train_each_point_once(tmp_path):
    """Two `bench sweep --executor local --jobs 2` started a few seconds apart on one folder: every grid
    point is trained once (one job started it, none resumed or re-finished it), every metrics.json is of
    that training, and no claim was moved aside (nobody died)."""
    import cloudpickle

    out = tmp_path / "sweep"
    twelve = [a if a != "6" else "12" for a in TINY_UNET]
    command = [sys.executable, "-m", "bench.cli", "sweep", *twelve, "--schedule", "linear,cosine",
               "--seeds", "0,1", "--executor", "local", "--jobs", "2", "--out", str(out), "-q"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    said = []
    for path in (out / ".submitit").glob("*/*_result.pkl"):
        with open(path, "rb") as f:
            outcome, value = cloudpickle.load(f)
        assert outcome == "success", value
        said.append(value)
    names = ["unet-linear-s0", "unet-linear-s1", "unet-cosine-s0", "unet-cosine-s1"]
    for name in names:
        assert [s for s in said if s.startswith(f"{name}: ") and s.endswith(("started", "resumed"))] == [
            f"{name}: started"
        ], said
        metrics = json.loads((out / name / "metrics.json").read_text())
        train = metrics["train"]
        assert train["steps"] == 12 and train["images_per_s"] is not None and train["final_loss"] is not None
        assert metrics["phases"]["train_s"] > 0.05
    assert not list(out.glob("*/.claim-*.stale.json")) and not list(out.glob("*/claim.json"))
