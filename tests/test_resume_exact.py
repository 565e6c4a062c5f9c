"""Exact resume across processes, and throughput that survives a stop mid-interval and a resume.

A run cut at step N and resumed to 2N must end where a straight 2N run ends: with two processes that
means each process gets back its own random streams (not rank 0's). And a stop that falls between two log
boundaries must not lose its seconds (train_seconds, the minutes budget) or its images (images_per_s)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import torch

from bench.distributed import DistInfo
from bench.io import load_tensors, torch_save_atomic
from bench.training.checkpoint import CheckpointError
from bench.training.trainer import Trainer, rank_random_state
from tests.helpers import SMALL, env, invoke, make_trainer

HALF = 4  # steps before the cut; the runs go to 2 * HALF


def torchrun_bench(*args: str) -> None:
    """``bench run`` under torchrun with two gloo processes on a free port (tests may run side by side)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "bench.cli", "run", *args], env=env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> dict:
    """A straight 2N-step two-process run, and one cut at N and resumed to 2N (the cut run's checkpoint
    kept as it was at N, for the world-size test)."""
    out = tmp_path_factory.mktemp("runs")
    common = [*SMALL, "--checkpoint-every", "2", "--out", str(out)]
    torchrun_bench(*common, "--steps", str(2 * HALF), "--run-id", "straight")
    torchrun_bench(*common, "--steps", str(HALF), "--run-id", "cut")
    shutil.copytree(out / "cut", out / "cut-at-n")
    torchrun_bench(*SMALL, "--resume", str(out / "cut"), "--steps", str(2 * HALF))
    return {name: out / name for name in ("straight", "cut", "cut-at-n")}


@pytest.mark.slow  # three torchrun launches: about 70 s on a busy two-core machine
def test_two_process_resume_ends_bit_identical_to_a_straight_run(two_process_runs):
    straight = load_tensors(two_process_runs["straight"] / "checkpoint.pt")
    resumed = load_tensors(two_process_runs["cut"] / "checkpoint.pt")
    assert straight["step"] == resumed["step"] == 2 * HALF
    for part in ("model", "ema"):
        a, b = straight[part], resumed[part]
        if part == "ema":
            a, b = a["module"], b["module"]
        assert a.keys() == b.keys()
        differing = [key for key in a if not torch.equal(a[key], b[key])]
        assert not differing, f"{part}: {len(differing)} of {len(a)} tensors differ, e.g. {differing[:3]}"
    # every process's own streams, one entry per rank, and still distinct from each other after the resume
    assert isinstance(resumed["rng"], list) and len(resumed["rng"]) == 2
    for rank in range(2):
        for key in ("torch", "generator"):
            assert torch.equal(straight["rng"][rank][key], resumed["rng"][rank][key]), (rank, key)
    assert not torch.equal(resumed["rng"][0]["generator"], resumed["rng"][1]["generator"])
    # and the global stream dropout draws from is each process's own too (the same masks on every rank
    # would be one process's worth of dropout noise)
    assert not torch.equal(resumed["rng"][0]["torch"], resumed["rng"][1]["torch"])
    assert not torch.equal(straight["rng"][0]["torch"], straight["rng"][1]["torch"])
    # throughput over both segments, each less its first (warm-up) interval of 2 steps: 2 x 2 steps x 8 x 2
    assert resumed["log"]["timed_images"] == 2 * 2 * 8 * 2


@pytest.mark.slow  # shares the three torchrun launches
def test_resuming_with_another_number_of_processes_is_refused(two_process_runs, tmp_path):
    """Each process's batches and streams, and the global batch, depend on the number of processes: a
    two-process checkpoint continued by one process would be neither exact nor the same experiment."""
    folder = tmp_path / "cut"
    shutil.copytree(two_process_runs["cut-at-n"], folder)
    result = invoke("run", "--resume", str(folder), "--steps", str(2 * HALF), "--quiet")
    assert result.exit_code == 2, result.output
    assert "2 processes" in result.output and "1 process" in result.output
    assert "--nproc-per-node 2" in result.output


def test_each_rank_takes_its_own_random_state_and_a_legacy_one_loads_in_one_process(tmp_path):
    """The state holds a list of per-rank RNG states; one saved before that (a single dict) still resumes
    a one-process run exactly, through a file loaded with ``weights_only=True``."""
    straight = make_trainer(20)
    straight.run(progress=False)
    half = make_trainer(10)
    half.run(progress=False)
    state = half.state_dict()
    assert isinstance(state["rng"], list) and len(state["rng"]) == 1
    legacy = {**state, "rng": state["rng"][0]}
    legacy.pop("log", None)  # no throughput totals either
    torch_save_atomic(tmp_path / "legacy.pt", legacy)
    resumed = make_trainer(20)
    resumed.load_state_dict(load_tensors(tmp_path / "legacy.pt"))
    resumed.run(progress=False)
    assert all(
        torch.equal(a, b)
        for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True)
    )
    two = {**state, "rng": [state["rng"][0], state["rng"][0]]}
    with pytest.raises(CheckpointError, match="written by 2 processes and this run is 1 process"):
        make_trainer(20).load_state_dict(two)
    # under two processes a legacy state is rank 0's only: the other rank reseeds, with a warning
    for rank, expected in ((0, legacy["rng"]), (1, None)):
        with pytest.warns(UserWarning, match="not exact"):
            assert rank_random_state(legacy["rng"], DistInfo(rank, 2)) is expected


# ------------------------------------------------------------------------------------------ throughput
def stop_and_time_steps(trainer: Trainer, stop_at: int | None, durations: list[float]) -> None:
    """Time every training step into ``durations`` and, with ``stop_at``, ask the loop to stop after that
    step (as a scheduler's preemption signal would, between two log boundaries)."""
    trainer.stop = threading.Event()
    step = trainer.train_step

    def timed(*args):
        start = time.perf_counter()
        loss = step(*args)
        durations.append(time.perf_counter() - start)
        if trainer.step == stop_at:
            trainer.stop.set()
        return loss

    trainer.train_step = timed


@pytest.mark.parametrize("steps", [15, 20], ids=["one-interval-after", "two-intervals-after"])
def test_a_stop_mid_interval_and_a_resume_keep_all_training_time_and_images(tmp_path, steps):
    """log_every 5, stopped after step 13 and resumed to ``steps``: every step's time is in train_seconds,
    and images_per_s counts every image but those of each segment's first (warm-up) interval: steps 1-5 and
    14-15."""
    durations: list[float] = []
    first = make_trainer(20)
    stop_and_time_steps(first, 13, durations)
    log = first.run(progress=False)
    assert log.stop_reason == "interrupted" and first.step == 13
    assert log.intervals[-1]["step"] == 13  # the partial interval 11-13 is closed: its row, its seconds
    assert first.train_seconds >= sum(durations)
    torch_save_atomic(tmp_path / "ckpt.pt", first.state_dict())

    resumed = make_trainer(steps)
    resumed.load_state_dict(load_tensors(tmp_path / "ckpt.pt"))
    stop_and_time_steps(resumed, None, durations)
    log = resumed.run(progress=False)
    assert resumed.step == steps and len(durations) == steps
    assert resumed.train_seconds >= sum(durations)
    timed_steps = (13 - 5) + (steps - 15)
    assert log.timed_images == timed_steps * 16
    assert log.images_per_second is not None and log.images_per_second > 0


def test_a_minutes_budget_counts_the_interval_still_open():
    """The budget is checked against the seconds trained so far, the open interval's included: with a log
    interval longer than the whole run, the budget still stops it, and its seconds are all counted."""
    budget_s = 0.1
    trainer = make_trainer(600, minutes=budget_s / 60)
    trainer.config = replace(trainer.config, log_every=600, checkpoint_every=600)
    log = trainer.run(progress=False)
    assert log.stop_reason == "minutes" and trainer.step < 600
    assert trainer.train_seconds >= budget_s
    assert log.intervals[-1]["step"] == trainer.step
