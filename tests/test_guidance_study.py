"""``bench study guidance`` on a tiny budget: the three designs, every scale with and without the interval,
the table read back from the runs' own metrics, and a second call that trains and scores nothing."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd

import schedules
from bench.config import RunConfig, SampleConfig, TrainConfig
from bench.process.diffusion import Diffusion
from bench.process.grids import ddim_timesteps
from bench.reports.compare import format_value
from bench.studies.guidance import INTERVAL, SCALES, guidance_configs, run_guidance_study


def tiny_base() -> RunConfig:
    return replace(
        RunConfig(),
        denoiser_options={"base_channels": 8, "channel_mult": (1,), "num_res_blocks": 1},
        dataset="digits",
        image_size=None,
        train=TrainConfig(steps=4, batch_size=16, checkpoint_every=4),
        sample=SampleConfig(n=20, batch_size=20, steps=4),
        diffusion=replace(RunConfig().diffusion, timesteps=50),
        device="cpu",
    )


def test_the_guidance_study_designs_share_everything_but_the_conditioning():
    named = guidance_configs(RunConfig())
    assert [name for name, _ in named] == ["unet-linear-s0", "unet-cond-linear-s0", "direct-cond-linear-s0"]
    assert [(c.denoiser, c.conditional) for _, c in named] == [
        ("unet", False), ("unet", True), ("direct", True)
    ]  # fmt: skip
    assert len({(c.train, c.sample, c.dataset, c.diffusion, c.seed) for _, c in named}) == 1


def test_the_guidance_study_scores_every_scale_and_skips_what_it_has(tmp_path):
    base = tiny_base()
    written = run_guidance_study(base, tmp_path, progress=False)
    report = tmp_path / "report"
    figures = {report / "guidance.md", report / "guidance.csv", report / "quality_vs_guidance.png"}
    assert figures <= set(written)
    table = pd.read_csv(report / "guidance.csv", dtype=str, keep_default_na=False)
    designs = list(table["design"])
    guided = len(SCALES) - 1
    assert designs.count("unet (unconditional)") == 1
    assert designs.count("unet (conditional)") == 1 + 2 * guided  # scale 1, then each with and without
    assert designs.count("direct (conditional)") == 1 + guided
    assert designs[-3:] == ["reference: real images (floor)", "reference: mean image",
                            "reference: class-mean images"]  # fmt: skip
    # NFE: 4 DDIM steps; guided everywhere doubles each call, the interval only those with sigma inside it
    diffusion = Diffusion(schedules.make("linear", 50))
    inside = sum(INTERVAL[0] < float(diffusion.sigmas[t]) <= INTERVAL[1] for t in ddim_timesteps(50, 4))
    unet = table[table["design"] == "unet (conditional)"]
    assert [int(n) for n in unet["NFE"]] == [4] + [8] * guided + [4 + inside] * guided
    assert list(unet["interval"]) == [""] + ["everywhere"] * guided + ["(0.3, 5]"] * guided
    assert [int(n) for n in table[table["design"] == "direct (conditional)"]["NFE"]] == [1] + [2] * guided
    # a cell is the run's own number: scale 3 on the interval
    metrics = json.loads((tmp_path / "unet-cond-linear-s0" / "metrics.json").read_text())
    (entry,) = [e for e in metrics["evaluations"]
                if e["sample"]["guidance_scale"] == 3.0 and e["sample"]["guidance_interval"]]  # fmt: skip
    row = unet.iloc[1 + guided + SCALES[1:].index(3.0)]
    assert (row["guidance"], row["FD"]) == ("3", format_value(entry["quality"]["fd"]))
    before = {p: p.read_bytes() for p in tmp_path.glob("*/metrics.json")}
    run_guidance_study(base, tmp_path, progress=False)  # complete: nothing trained or scored again
    assert before == {p: p.read_bytes() for p in tmp_path.glob("*/metrics.json")}
