"""The design axes end to end: a run with EDM's preconditioning, min-SNR weighting and log-normal noise
levels sampled by a higher-order solver, `bench eval` over several step counts with NFE recorded, `bench
compare`'s NFE column and figure, the design study, and the bad-input matrix (exit code 2, nothing
written)."""

import json
from dataclasses import replace

import pytest

from bench.config import RunConfig, SampleConfig, TrainConfig
from bench.reports import compare
from bench.reports.compare import format_value
from bench.studies.design import (
    STUDY_TARGETS,
    STUDY_WEIGHTS,
    design_configs,
    design_table,
    flow_configs,
    run_design_study,
)
from tests.helpers import FAST, invoke, run_ok

WITH_EVAL = [a for a in FAST if a != "--no-eval"]


def test_an_edm_run_with_min_snr_lognormal_levels_and_dpmpp(tmp_path):
    run_dir = run_ok(
        tmp_path, "--target", "edm", "--sigma-data", "0.4", "--loss-weight", "min-snr",
        "--min-snr-gamma", "3", "--noise-levels", "lognormal", "--sampler", "dpmpp-2m",
    )  # fmt: skip
    config = json.loads((run_dir / "config.json").read_text())
    assert config["denoiser_options"] == {"target": "edm", "sigma_data": 0.4}
    assert (config["train"]["loss_weight"], config["train"]["min_snr_gamma"]) == ("min-snr", 3.0)
    assert config["train"]["noise_levels"] == "lognormal"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sample"]["method"] == "dpmpp-2m"
    assert metrics["sample"]["network_evaluations_per_image"] == 5


def test_eval_over_step_counts_records_nfe_and_compare_draws_it(tmp_path, monkeypatch):
    import bench.evaluation.scoring
    import bench.runs.measure

    args = ["--n-samples", "24", "--out", str(tmp_path), "--run-id", "ev", "--quiet"]
    result = invoke("run", *WITH_EVAL, *args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "ev"
    calls = {"nll": 0, "references": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    measure, scoring = bench.runs.measure, bench.evaluation.scoring
    monkeypatch.setattr(measure, "nll_bits_per_dim", counted("nll", measure.nll_bits_per_dim))
    monkeypatch.setattr(scoring, "reference_rows", counted("references", scoring.reference_rows))
    result = invoke("eval", str(run_dir), "--n", "24", "--method", "heun", "--steps", "2,3", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [(e["sample"]["steps"], e["sample"]["nfe"]) for e in metrics["evaluations"]] == [(2, 3), (3, 5)]
    # the reference rows and the NLL bound do not depend on the sampler: the run's own are reused
    assert calls == {"nll": 0, "references": 0}
    first, second = metrics["evaluations"]
    assert first["nll"] == second["nll"] == metrics["nll"] and first["references"] == metrics["references"]
    result = invoke("eval", str(run_dir), "--n", "12", "--steps", "4,5", "--quiet")  # other n: measured once
    assert result.exit_code == 0, result.output
    assert calls == {"nll": 1, "references": 1}

    out = tmp_path / "report"
    result = invoke("compare", str(run_dir), "--out", str(out), "--columns", "nfe,fd")
    assert result.exit_code == 0, result.output
    assert (out / "quality_vs_nfe.png").is_file()
    table = (out / "comparison.csv").read_text().splitlines()
    header = table[0].split(",")
    nfe = sorted(int(float(row.split(",")[header.index("nfe")])) for row in table[1:] if row.split(",")[0])
    assert nfe == [3, 4, 5, 5]  # heun 2 steps, DDIM 4, heun 3 steps, the run's own DDIM 5 (and eval's)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss-weight", "snr"], "'snr' is not one of 'uniform', 'min-snr', 'edm'"),
        (["--noise-levels", "normal"], "'normal' is not one of 'uniform', 'lognormal', 'logit-normal'"),
        (["--noise-levels", "lognormal", "--p-std", "0"], "p_std must be a positive number, got 0.0"),
        (["--loss-weight", "min-snr", "--min-snr-gamma", "0"], "min_snr_gamma must be a positive number"),
        (["--target", "edm", "--sigma-data", "-1"], "sigma_data must be a positive number, got -1.0"),
        (["--sampler", "heun", "--sample-steps", "1"], "sampler 'heun' needs at least 2 steps, got 1"),
        (["-o", "terminal=True", "--target", "x0", "--noise-levels", "lognormal"], "trains at t = T-1 only"),
        (["--zero-terminal-snr", "--loss-weight", "edm"], "infinite where SNR = 0"),
        (["--target", "v", "--sigma-data", "0.3"], "--sigma-data is EDM's: it acts only with --target edm"),
        (["--target", "edm", "-o", "sigma_data=1e999"], "sigma_data must be a positive number, got inf"),
    ],
)
def test_bad_design_input_is_a_usage_error_and_writes_nothing(tmp_path, args, message):
    result = invoke("run", *FAST, *args, "--out", str(tmp_path), "--quiet")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "steps must be a positive integer, got 0"),
        (["--steps", "10,20,10"], "10 given twice in '10,20,10'; give each once"),
        (["--method", "heun", "--steps", "4,1"], "sampler 'heun' needs at least 2 steps, got 1"),
    ],
)
def test_bad_eval_steps_are_usage_errors_that_leave_the_run_alone(tmp_path, args, message):
    run_dir = run_ok(tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    result = invoke("eval", str(run_dir), "--n", "8", *args, "--quiet")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert before == {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert not (run_dir / "samples").exists()


def test_bench_sample_names_files_with_the_samplers_own_settings(tmp_path):
    run_dir = run_ok(tmp_path)
    for method, steps in (("ddim", "3"), ("heun", "3"), ("dpmpp-2m", "2")):
        result = invoke("sample", str(run_dir), "--n", "4", "--method", method, "--steps", steps, "--quiet")
        assert result.exit_code == 0, result.output
    names = sorted(p.name.rsplit("-", 1)[0] for p in (run_dir / "samples").glob("*.npz"))
    assert names == [
        "ddim-3steps-eta1-n4-seed0-ema",
        "dpmpp-2m-2steps-n4-seed0-ema",
        "heun-3steps-n4-seed0-ema",
    ]


def test_the_design_study_covers_every_target_and_weight_at_one_budget():
    configs = design_configs(RunConfig(), seeds=[0, 1])
    assert len(configs) == len(STUDY_TARGETS) * len(STUDY_WEIGHTS) * 2
    assert {(c.denoiser_options.get("target"), c.train.loss_weight) for c in configs} == {
        (t, w) for t in STUDY_TARGETS for w in STUDY_WEIGHTS
    }
    assert len({(c.train.steps, c.train.batch_size, c.dataset, c.diffusion, c.sample) for c in configs}) == 1


def test_the_flow_study_puts_ddpm_beside_three_flows_at_one_budget():
    configs = flow_configs(RunConfig(), seeds=[0])
    designs = [
        (c.denoiser_options.get("target"), c.diffusion.schedule, c.train.loss_weight, c.train.noise_levels)
        for c in configs
    ]
    assert designs == [
        ("eps", "linear", "uniform", "uniform"),
        ("flow", "linear", "uniform", "uniform"),
        ("flow", "rectified-flow", "uniform", "uniform"),
        ("flow", "rectified-flow", "uniform", "logit-normal"),
    ]
    budget = {(c.train.steps, c.train.batch_size, c.dataset, c.diffusion.timesteps, c.sample)
              for c in configs}  # fmt: skip
    assert len(budget) == 1


TINY_STUDY = replace(
    RunConfig(),
    denoiser="tiny-test",
    dataset="digits",
    image_size=None,
    train=TrainConfig(steps=4, batch_size=16, checkpoint_every=4),
    sample=SampleConfig(n=24, batch_size=24),
    diffusion=replace(RunConfig().diffusion, timesteps=50),
    device="cpu",
)
"""A study's base config on a tiny budget: the tiny test denoiser on digits, 50 timesteps, 24 samples."""


def test_the_design_study_runs_scores_and_tabulates_then_skips_what_it_has(tmp_path):
    base = TINY_STUDY
    run_design_study(base, tmp_path, [0], progress=False)
    table = design_table(tmp_path)
    designs = table[~table["target"].str.startswith("reference")]
    best_at_50 = {"ddim, eta 1", "dpmpp-2m", "dpmpp-2m, log-snr grid"}
    assert len(designs) == 8 and set(designs["best sampler at 50 NFE"]) <= best_at_50
    assert "schedule" not in table and "noise levels" not in table  # shared by every design: left out
    assert "best sampler at about 10 NFE" not in table
    assert list(table["target"].iloc[-2:]) == ["reference: real", "reference: mean-image"]
    assert all(designs["FD at 10 NFE, ddim, eta 0"] != "") and all(designs["FD at 10 NFE, dpmpp-2m"] != "")
    on_the_grid = ["10 NFE, dpmpp-2m", "9 NFE, heun", "50 NFE, dpmpp-2m", "49 NFE, heun"]
    assert all(all(designs[f"FD at {column}, log-snr grid"] != "") for column in on_the_grid)
    assert (tmp_path / "report" / "design.md").is_file()
    assert (tmp_path / "report" / "quality_vs_nfe.png").is_file()
    # a cell is the run's own number: eps with uniform weight, DDIM (eta 0) at 10 calls, and the best at 50
    eps = json.loads((tmp_path / "tiny-test-eps-linear-s0" / "metrics.json").read_text())
    fd = {}
    for entry in eps["evaluations"]:
        sample = entry["sample"]
        eta = (sample["eta"],) if sample["method"] == "ddim" else ()
        fd[(sample["method"], sample["steps"], sample["grid"], *eta)] = entry["quality"]["fd"]
    row = designs[(designs["target"] == "eps") & (designs["loss weight"] == "uniform")].iloc[0]
    assert row["FD at 10 NFE, ddim, eta 0"] == format_value(fd["ddim", 10, "uniform", 0.0])
    assert row["FD at 49 NFE, heun, log-snr grid"] == format_value(fd["heun", 25, "log-snr"])
    at_50 = {
        "ddim, eta 1": eps["quality"]["fd"],
        "dpmpp-2m": fd["dpmpp-2m", 50, "uniform"],
        "dpmpp-2m, log-snr grid": fd["dpmpp-2m", 50, "log-snr"],
    }
    best = min(at_50, key=at_50.get)
    assert row["FD at 50"] == format_value(at_50[best])
    assert row["best sampler at 50 NFE"] == best
    metrics = {p: p.read_bytes() for p in tmp_path.glob("*/metrics.json")}
    run_design_study(base, tmp_path, [0], progress=False)  # complete: nothing trained or scored again
    assert metrics == {p: p.read_bytes() for p in tmp_path.glob("*/metrics.json")}


def test_the_flow_study_names_each_designs_best_sampler_at_about_10_calls(tmp_path):
    base = TINY_STUDY
    run_design_study(base, tmp_path, [0], progress=False, flow=True)
    table = design_table(tmp_path, best_at_few=True)
    assert (tmp_path / "report" / "flow.md").read_text().count("\n") == len(table) + 2
    designs = table[~table["target"].str.startswith("reference")]
    assert sorted(zip(designs["target"], designs["schedule"], designs["noise levels"], strict=True)) == [
        ("eps", "linear", "uniform"),
        ("flow", "linear", "uniform"),
        ("flow", "rectified-flow", "logit-normal(0, 1)"),
        ("flow", "rectified-flow", "uniform"),
    ]
    assert "loss weight" not in table  # uniform for every design
    sd3_run = tmp_path / "tiny-test-flow-rectified-flow-logit-normal-s0"
    sd3 = json.loads((sd3_run / "metrics.json").read_text())
    fd = {}
    for entry in sd3["evaluations"]:
        sample = entry["sample"]
        eta = (sample["eta"],) if sample["method"] == "ddim" else ()
        fd[(sample["method"], sample["steps"], sample["grid"], *eta)] = entry["quality"]["fd"]
    at_10 = {"ddim, eta 0": fd["ddim", 10, "uniform", 0.0], "dpmpp-2m": fd["dpmpp-2m", 10, "uniform"],
             "dpmpp-2m, log-snr grid": fd["dpmpp-2m", 10, "log-snr"],
             "heun, log-snr grid": fd["heun", 5, "log-snr"]}  # fmt: skip
    row = designs[designs["noise levels"] == "logit-normal(0, 1)"].iloc[0]
    assert row["best sampler at about 10 NFE"] == min(at_10, key=at_10.get)
    assert row["FD at about 10"] == format_value(min(at_10.values()))


def test_bench_eval_measures_each_deterministic_samplers_distance_to_the_odes_solution(tmp_path):
    """--solver-error: each deterministic sampling's RMS distance to Heun's solution from the same noises
    (256 steps, 511 calls; on this run's 50-step schedule 50 steps, 99 calls), recorded in its entry and a
    column of bench compare; the reference made once per run and kept; none for a stochastic sampler (DDIM
    with eta 1)."""
    run_dir = run_ok(tmp_path)
    for args in (["--method", "dpmpp-2m", "--grid", "karras", "--steps", "2,8"],
                 ["--method", "ddim", "--eta", "0", "--steps", "4"], ["--method", "ddim", "--steps", "4"]):
        result = invoke("eval", str(run_dir), "--n", "8", *args, "--solver-error", "--quiet")
        assert result.exit_code == 0, result.output
    entries = json.loads((run_dir / "metrics.json").read_text())["evaluations"]
    errors = [entry.get("solver_error") for entry in entries]
    assert [e["reference"] for e in errors[:3]] == ["heun 50 steps (99 calls), karras grid rho 7"] * 3
    assert all(e["images"] == 8 and e["rms"] > 0 for e in errors[:3])
    assert errors[1]["rms"] < errors[0]["rms"]  # 8 DPM-Solver++ steps land nearer than 2
    assert errors[3] is None  # eta 1 follows no ODE
    assert len(list((run_dir / "samples").glob("reference-heun50-karras-n8-*.pt"))) == 1
    rows = compare.collect([run_dir]).runs
    measured = rows.dropna(subset=["solver_rms"])
    assert sorted(measured["solver_rms"]) == sorted(e["rms"] for e in errors[:3])
