"""``bench study one-step`` on a tiny budget: every design trains from its teacher, is scored at the calls
its design asks for, and the table holds each run's own numbers and costs; a second call trains nothing."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench.config import DistillConfig, RunConfig, SampleConfig, TrainConfig
from bench.studies.one_step import DESIGNS, one_step_table, run_one_step_study, study_configs

TINY = replace(
    RunConfig(),
    dataset="digits",
    image_size=None,
    denoiser_options={"base_channels": 8, "channel_mult": (1,)},
    train=TrainConfig(steps=4, batch_size=16, checkpoint_every=4),
    sample=SampleConfig(n=24, batch_size=24),
    distill=DistillConfig(pairs=32, teacher_steps=4),
    diffusion=replace(RunConfig().diffusion, timesteps=50),
    device="cpu",
    tensorboard=False,
)
"""The study's designs on an 8-channel U-Net, 8x8 digits, 50 timesteps, 4 steps, 24 samples."""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("one-step")
    written = run_one_step_study(TINY, out, [0], rounds=2, progress=False)
    return out, written


def metrics(out, name):
    return json.loads((out / name / "metrics.json").read_text())


def fd_at(out, name, method, steps, grid="uniform", eta=0.0):
    """The FD of the run's sampling with ``method``, ``steps`` and ``grid`` (and DDIM's ``eta``): its own, or
    a later evaluation."""
    m = metrics(out, name)

    def matches(sample):
        same_eta = method != "ddim" or sample["eta"] == eta
        return (sample["method"], sample["steps"], sample["grid"] or "uniform") == (
            method,
            steps,
            grid,
        ) and same_eta

    if matches(m["sample"]):
        return m["quality"]["fd"]
    return next(e["quality"]["fd"] for e in m["evaluations"] if matches(e["sample"]))


def test_each_student_learns_from_its_own_teacher_in_training_order():
    out = Path("/study")
    configs = dict(study_configs(TINY, out, [0], rounds=2))
    names = list(configs)
    for name, config in configs.items():
        teacher = config.distill.teacher
        if teacher is not None:
            assert names.index(teacher.rsplit("/", 1)[1]) < names.index(name)
    assert configs["reflow"].distill.teacher == str(out / "flow")
    assert configs["reflow-distilled"].denoiser_options["target"] == "flow"
    assert configs["reflow"].diffusion.schedule == configs["flow"].diffusion.schedule == "rectified-flow"
    assert configs["consistency-distilled"].distill.teacher == str(out / "teacher-edm")
    assert [configs[f"progressive-{r}"].distill.teacher_steps for r in (1, 2)] == [33, 17]
    assert configs["progressive-2"].distill.teacher == str(out / "progressive-1")


def test_the_study_scores_each_design_at_its_calls_and_tabulates_what_the_runs_hold(study):
    out, written = study
    report = out / "report"
    assert report / "one_step.md" in written and report / "quality_vs_calls.png" in written
    table = one_step_table(out).set_index("design")
    for name in DESIGNS:
        assert name in table.index
    assert table.loc["consistency", "FD at 2 calls"] == f"{fd_at(out, 'consistency', 'consistency', 2):.1f}"
    assert table.loc["reflow", "FD at 4 calls"] == f"{fd_at(out, 'reflow', 'ddim', 4):.1f}"
    assert table.loc["direct", "FD at 1 call"] == f"{fd_at(out, 'direct', 'one_shot', 1):.1f}"
    # the teacher's best at 2 calls is the best of DDIM and DPM-Solver++(2M) on either grid there
    at_2 = {
        "ddim eta 0": fd_at(out, "teacher-edm", "ddim", 2),
        "dpmpp-2m": fd_at(out, "teacher-edm", "dpmpp-2m", 2),
        "dpmpp-2m, log-snr": fd_at(out, "teacher-edm", "dpmpp-2m", 2, "log-snr"),
    }
    assert table.loc["teacher-edm", "FD at 2 calls"] == f"{min(at_2.values()):.1f}"
    # at about 50 calls: DDIM (eta 0 and the run's own eta 1), DPM-Solver++(2M) on both grids, Heun's 49
    at_50 = {
        "ddim eta 0": fd_at(out, "teacher-edm", "ddim", 50),
        "dpmpp-2m": fd_at(out, "teacher-edm", "dpmpp-2m", 50),
        "dpmpp-2m, log-snr": fd_at(out, "teacher-edm", "dpmpp-2m", 50, "log-snr"),
        "heun, log-snr": fd_at(out, "teacher-edm", "heun", 25, "log-snr"),
        "ddim": fd_at(out, "teacher-edm", "ddim", 50, eta=1.0),  # the run's own sampling
    }
    assert table.loc["teacher-edm", "FD at 50"] == f"{min(at_50.values()):.1f}"
    assert table.loc["teacher-edm", "best at 50: sampler"] == min(at_50, key=at_50.get), at_50
    round_2 = metrics(out, "progressive-2")
    assert round_2["sample"]["steps"] == 9
    assert table.loc["progressive-2 (17 -> 9 calls)", "FD at 10"] == f"{round_2['quality']['fd']:.1f}"
    assert list(table.index[-2:]) == ["reference: real", "reference: mean-image"]


def test_costs_count_the_whole_chain_of_teachers(study):
    out, _ = study
    names = (*DESIGNS, "progressive-1", "progressive-2")
    total = {name: metrics(out, name)["cost"]["total_flops"] for name in names}
    own = {name: metrics(out, name)["cost"]["train_flops"] for name in total}
    assert total["teacher-edm"] == own["teacher-edm"] and total["consistency"] == own["consistency"]
    assert total["reflow-distilled"] > total["reflow"] > total["flow"] == own["flow"]
    assert metrics(out, "reflow-distilled")["cost"]["teacher_flops"] == total["reflow"]
    assert metrics(out, "progressive-2")["cost"]["teacher_flops"] == total["progressive-1"]
    table = one_step_table(out).set_index("design")
    assert table.loc["reflow-distilled", "total PFLOPs"] == f"{total['reflow-distilled'] / 1e15:.3g}"


def test_a_second_call_trains_and_scores_nothing(study):
    out, _ = study
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    run_one_step_study(TINY, out, [0], rounds=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == before


@pytest.mark.slow  # two seeds of the tiny study, stopped and resumed: about a minute
def test_a_study_stopped_in_the_second_seed_goes_on_where_it_was(tmp_path, monkeypatch):
    """Stopped as Ctrl-C stops it halfway through a training of the second seed (ECT, step 2 of 4), the same
    call again keeps every finished run as it is, resumes the half-done one from its checkpoint and trains
    the rest."""
    import bench.runs.resume as resume
    from tests.helpers import stop_after

    real = resume.run_or_resume

    def stop_in_ect_of_seed_1(config, out, name, **kwargs):
        if name == "ect-s1":
            stop_after(monkeypatch, 2)
        return real(config, out, name, **kwargs)

    monkeypatch.setattr(resume, "run_or_resume", stop_in_ect_of_seed_1)
    out = tmp_path / "study"
    with pytest.raises(KeyboardInterrupt):
        run_one_step_study(TINY, out, [0, 1], progress=False)
    monkeypatch.undo()
    names = [name for name, _ in study_configs(TINY, out, [0, 1])]
    stopped = names.index("ect-s1")
    assert all((out / name / "metrics.json").exists() for name in names[:stopped])
    assert not any((out / name).exists() for name in names[stopped + 1 :])
    half = torch.load(out / "ect-s1" / "checkpoint.pt", weights_only=True)
    assert half["step"] == 2 and not (out / "ect-s1" / "metrics.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}

    run_one_step_study(TINY, out, [0, 1], progress=False)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert all((out / name / "metrics.json").exists() for name in names)
    assert torch.load(out / "ect-s1" / "checkpoint.pt", weights_only=True)["step"] == TINY.train.steps
    assert metrics(out, "ect-s1")["train"]["steps"] == TINY.train.steps
    table = one_step_table(out).set_index("design")
    assert table.loc["ect", "seeds"] == 2
