"""``bench study one-step --budget-pflops X``: every route's stages split X by the teacher's share, each
stage's steps and pairs follow from its counted FLOPs, a tiny study's recorded totals are X within one
optimizer step with the teachers counted, and bad input is refused before anything is written."""

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from submitit.local.local import LocalJob

from bench.cli import main
from bench.config import DistillConfig, RunConfig, TrainConfig
from bench.studies import one_step
from bench.studies.budget import StepCost, TotalBudget, counted_step_cost, plan_routes, stage_fractions
from bench.studies.one_step import run_one_step_study, study_configs
from bench.studies.runner import waves

from .test_one_step_study import TINY


def test_a_chain_gives_its_teacher_the_share_and_splits_the_rest_the_same_way():
    assert stage_fractions(1, 0.3) == [1.0]
    assert stage_fractions(2, 0.5) == [0.5, 0.5]
    assert stage_fractions(3, 0.25) == pytest.approx([0.25, 0.75 * 0.25, 0.75 * 0.75])
    assert sum(stage_fractions(7, 0.4)) == pytest.approx(1.0)


PAIRS_CONFIG = replace(RunConfig(), train=TrainConfig(batch_size=4), distill=DistillConfig(pairs=100))
HAND_COSTS = {"a": StepCost(10.0, 0.0), "b": StepCost(7.0, 0.0), "c": StepCost(3.0, 2.0)}
"""Three designs, each the teacher of the next; c makes pairs at 2 FLOPs each."""


def hand_plan(flops: float, share: float = 0.5, pair_share: float = 0.5, routes=("a", "b", "c")):
    configs = {name: replace(PAIRS_CONFIG, denoiser=name) for name in "abc"}
    return plan_routes(
        list(routes),
        configs,
        {"a": None, "b": "a", "c": "b"},
        TotalBudget(flops, share, pair_share),
        cost=lambda config, teacher: HAND_COSTS[config.denoiser],
    )


def test_stages_get_their_parts_and_the_last_stage_what_the_others_left():
    plans = hand_plan(1000.0)
    assert [(s.run, s.steps, s.pairs) for s in plans["a"]] == [("a", 100, None)]
    # b: a at 500 (50 steps of 10), then the rest 500 in steps of 7: 71 steps, 497 FLOPs
    assert [(s.run, s.steps, s.flops) for s in plans["b"]] == [("a-x0.5", 50, 500.0), ("b", 71, 497.0)]
    # c: a at 500 (the same training as b's teacher), b at 250 (36 steps of 7: 252), c the 248 left: half of
    # it pays 62 pairs of 2 FLOPs (124), the other 124 pay 41 steps of 3 (123)
    a, b, c = plans["c"]
    assert a is plans["b"][0]
    assert (b.run, b.steps, b.flops) == ("b-x0.25", 36, 252.0)
    assert (c.run, c.part_flops, c.pairs, c.steps, c.flops) == ("c", 248.0, 62, 41, 247.0)
    for route, stages in plans.items():
        last = HAND_COSTS[stages[-1].design].per_step
        assert abs(sum(s.flops for s in stages) - 1000.0) <= last / 2, route


def test_pairs_stop_at_the_configured_number():
    c = hand_plan(100_000.0)["c"][-1]
    assert c.pairs == 100 and c.steps == round((c.part_flops - 200.0) / 3.0)


def test_a_budget_too_small_for_a_stage_names_it_and_a_total_that_trains_every_stage():
    with pytest.raises(ValueError, match=r"too small for route 'c': its stage 'c'.*batch of pairs") as exc:
        hand_plan(20.0)
    enough = float(str(exc.value).rsplit("a total of ", 1)[1].split(" PFLOPs")[0]) * 1e15
    plans = hand_plan(enough)
    assert all(stage.steps >= 1 for stages in plans.values() for stage in stages)
    with pytest.raises(ValueError, match="too small for route 'c'"):
        hand_plan(enough / 3)
    with pytest.raises(ValueError, match="too small for route 'a'"):
        hand_plan(4.0, routes=("a",))


@pytest.mark.parametrize("share", [0.0, 1.0, -0.2, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        TotalBudget(1e12, share)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        TotalBudget(1e12, 0.5, share)


def test_the_study_waits_for_teachers_and_runs_the_rest_side_by_side(tmp_path):
    budget = TotalBudget(tiny_budget(), teacher_share=0.5)
    configs = study_configs(TINY, tmp_path, [0, 1], plans=one_step.plan(TINY, 0, budget))
    rounds = [[name for name, _ in wave] for wave in waves(configs, tmp_path)]
    assert rounds[0][:3] == ["teacher-edm-s0", "direct-s0", "teacher-edm-x0.5-s0"]
    assert {"direct-distilled-s0", "ect-s1", "reflow-s0", "reflow-x0.25-s1"} <= set(rounds[1])
    assert rounds[2] == ["reflow-distilled-s0", "reflow-distilled-s1"]


def tiny_budget() -> float:
    """40 optimizer steps of the tiny teacher: the smallest stage (reflow-distilled, a quarter) gets 10."""
    teacher = replace(TINY, denoiser="unet", denoiser_options={**TINY.denoiser_options, "target": "edm"})
    return 40 * counted_step_cost(teacher, None).per_step


@pytest.fixture(scope="module")
def budget_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    budget = TotalBudget(tiny_budget(), teacher_share=0.5)
    run_one_step_study(TINY, out, [0], budget=budget, progress=False)
    return out, budget


def metrics(out, name):
    return json.loads((out / name / "metrics.json").read_text())


@pytest.mark.slow
def test_every_route_spends_the_budget_within_one_step_with_its_teachers_counted(budget_study):
    out, budget = budget_study
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["budget"]["flops"] == budget.flops
    for route, stages in manifest["routes"].items():
        cost = metrics(out, route)["cost"]
        steps = metrics(out, route)["train"]["steps"]
        assert steps == stages[-1]["steps"]
        one_step = (cost["train_flops"] + (cost.get("teacher_call_flops") or 0.0)) / steps
        assert abs(cost["total_flops"] - budget.flops) <= one_step, route
        # the teachers are in the total: the chain's recorded trainings and pairs add up to it
        spent = sum(metrics(out, s["run"])["cost"]["train_flops"] for s in stages)
        spent += sum(metrics(out, s["run"])["cost"].get("teacher_call_flops") or 0.0 for s in stages)
        spent += sum(metrics(out, s["run"])["cost"].get("pair_flops") or 0.0 for s in stages)
        assert cost["total_flops"] == pytest.approx(spent, rel=1e-9), route
        if len(stages) > 1:
            assert cost["teacher_flops"] > 0, route
    assert manifest["routes"]["reflow-distilled"][0]["run"] == "flow-x0.5"
    assert math.isclose(metrics(out, "flow-x0.5")["cost"]["total_flops"], budget.flops / 2, rel_tol=0.05)


@pytest.mark.slow
def test_the_table_gives_each_route_its_stages_and_the_paired_view(budget_study):
    out, _ = budget_study
    table = pd.read_csv(out / "report" / "one_step.csv").set_index("design")
    stages = table["stages (X: the total budget)"]
    assert stages["reflow-distilled"].startswith("flow-x0.5 (0.5 X: ")
    assert " -> reflow-x0.25 (0.25 X: " in stages["reflow-distilled"]
    assert "pairs" in stages["direct-distilled"] and "pairs" not in stages["consistency-distilled"]
    paired = pd.read_csv(out / "report" / "one_step_paired.csv")
    assert set(paired["route"]) == set(manifest_routes(out))
    assert (paired["paired difference to the best"] == "(the best)").sum() == 1
    assert not paired["reading"].fillna("").str.contains("worse than").any()  # one seed resolves nothing


def manifest_routes(out):
    return json.loads((out / "study.json").read_text())["routes"]


def test_the_paired_view_of_one_call_orders_routes_only_where_the_interval_excludes_zero(monkeypatch):
    """Three seeds of three routes' one-call FD: ect 10, 11, 12; cd 12, 13, 14 (2 worse every seed: the
    interval is 0 wide, resolved); sct 9, 14, 13 (differences -1, 3, 1: mean 1, half-width
    t(0.975, 2) x 2 / sqrt(3) = 4.97, not resolved)."""
    fds = {"ect": (10, 11, 12), "consistency-distilled": (12, 13, 14), "sct": (9, 14, 13)}
    runs = pd.DataFrame(
        [
            {"run": f"{name}-s{seed}", "seed": seed, "nfe": 1, "fd": fd, "sampler": "consistency"}
            for name, values in fds.items()
            for seed, fd in enumerate(values)
        ]
    )

    class Collection:
        pass

    collected = Collection()
    collected.runs = runs
    monkeypatch.setattr("bench.reports.compare.collect", lambda paths: collected)
    table = one_step.one_call_paired(Path("/nowhere")).set_index("route")
    assert table.loc["ect", "paired difference to the best"] == "(the best)"
    assert table.loc["ect", "FD at 1 call"] == "11.0 ± 2.5"  # sd 1, t(0.975, 2) = 4.303: 4.303 / sqrt(3)
    assert table.loc["consistency-distilled", "paired difference to the best"] == "+2.0 ± 0.0"
    assert table.loc["consistency-distilled", "reading"] == "worse than ect"
    assert table.loc["sct", "paired difference to the best"] == "+1.0 ± 5.0"
    assert table.loc["sct", "reading"] == "not resolved"


def invoke(*args):
    return CliRunner().invoke(main, ["study", "one-step", *args])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--budget-pflops", "1e-9"], "too small for route"),
        (["--budget-pflops", "0.1", "--teacher-share", "1"], "--teacher-share"),
        (["--budget-pflops", "0.1", "--teacher-share", "0"], "--teacher-share"),
        (["--budget-pflops", "0.1", "--pair-share", "1.2"], "--pair-share"),
        (["--budget-pflops", "-1"], "--budget-pflops"),
        (["--budget-pflops", "0.1", "--seeds", "0,1,0"], "0 given twice"),
        (["--budget-pflops", "0.1", "--steps", "10"], "give one budget"),
        (["--teacher-share", "0.3"], "give --budget-pflops too"),
        (["--budget-pflops", "0.1", "--routes", "ect,warp"], "unknown route warp"),
        (["--jobs", "0"], "expected auto or a whole number of at least 1"),
        (["--jobs", "two"], "expected auto or a whole number of at least 1"),
    ],
)
def test_bad_input_is_a_usage_error_and_writes_nothing(tmp_path, args, says):
    out = tmp_path / "study"
    result = invoke("--out", str(out), "--dataset", "digits", "--quiet", *args)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert not out.exists()


def test_a_folder_with_the_study_under_another_budget_is_refused(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    manifest = {"budget": "per run", "routes": {}}
    (out / "study.json").write_text(json.dumps(manifest))
    result = invoke("--out", str(out), "--dataset", "digits", "--quiet", "--budget-pflops", "0.1", "--routes",
                    "direct")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "holds this study with budget per run" in result.output
    assert json.loads((out / "study.json").read_text()) == manifest
    assert sorted(p.name for p in out.iterdir()) == ["study.json"]


@pytest.mark.slow
def test_jobs_train_a_studys_rounds_side_by_side_each_scoring_its_run(tmp_path):
    """``--jobs 2`` on the flow and its reflow (two rounds: the teacher, then its student), each run a
    process of its own that scores its run at the calls its design asks for; the same call again submits
    nothing."""
    out = tmp_path / "jobs"
    run_one_step_study(TINY, out, [0, 1], routes=["reflow"], progress=False, jobs=2)
    jobs = json.loads((out / "jobs.json").read_text())
    assert set(jobs) == {"flow-s0", "flow-s1", "reflow-s0", "reflow-s1"}
    for name, job in jobs.items():
        assert int(job["job_id"]) != os.getpid()
        assert (out / name / "local" / f"{job['job_id']}.out").is_symlink()
        scored = {(e["sample"]["method"], e["sample"]["steps"]) for e in metrics(out, name)["evaluations"]}
        assert {("ddim", 1), ("ddim", 2), ("ddim", 4)} <= scored, name
        # the job returned (training and its scoring, in the job, without an exception)
        assert LocalJob(out / ".submitit" / job["job_id"], job["job_id"]).result() == f"{name}: started"
    teacher_total = metrics(out, "flow-s1")["cost"]["total_flops"]
    assert metrics(out, "reflow-s1")["cost"]["teacher_flops"] == teacher_total
    table = pd.read_csv(out / "report" / "one_step.csv").set_index("design")
    assert set(table.index) >= {"flow", "reflow"} and table.loc["reflow", "seeds"] == 2
    before = {name: (out / name / "metrics.json").stat().st_mtime_ns for name in jobs}
    run_one_step_study(TINY, out, [0, 1], routes=["reflow"], progress=False, jobs=2)
    assert json.loads((out / "jobs.json").read_text()) == jobs
    assert {name: (out / name / "metrics.json").stat().st_mtime_ns for name in jobs} == before


def test_jobs_auto_is_one_process_per_core_on_the_cpu(monkeypatch):
    from bench.cli.grid_commands import study_jobs

    monkeypatch.setattr("bench.studies.runner.available_cores", lambda: 6)
    assert study_jobs("auto", "cpu") == 6
    assert study_jobs(3, "cpu") == 3
