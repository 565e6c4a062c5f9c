"""Channels-last is a layout, not a model: it must reach every convolution, change outputs only by
rounding, and be recorded in the run's config so a resume uses the same layout."""

import json
from dataclasses import replace

import torch

from bench.config import RunConfig
from bench.runs.experiment import build_experiment
from tests.helpers import run_ok

BASE = RunConfig(
    denoiser="unet",
    denoiser_options={"base_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1},
    dataset="digits",
    device="cpu",
)


def conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() == 4]


def test_channels_last_reaches_every_convolution():
    nhwc = build_experiment(BASE).model
    nchw = build_experiment(replace(BASE, channels_last=False)).model
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(nhwc))
    assert any(not w.is_contiguous() for w in conv_weights(nhwc))  # 1x1 and 1-channel kernels are both
    assert all(w.is_contiguous() for w in conv_weights(nchw))


def test_layout_changes_outputs_only_by_rounding():
    nhwc = build_experiment(BASE).model
    nchw = build_experiment(replace(BASE, channels_last=False)).model
    with torch.no_grad():  # the zero-initialised output convs would hide any difference
        for p in nhwc.parameters():
            if p.dim() > 1:
                p.normal_(std=0.2)
    nchw.load_state_dict(nhwc.state_dict())
    x, t = torch.randn(8, 1, 8, 8), torch.randint(0, 1000, (8,))
    a, b = nhwc(x, t), nchw(x, t)
    assert a.abs().mean() > 0.1
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_layout_is_part_of_the_run_config(tmp_path):
    run_dir = run_ok(tmp_path, "--no-channels-last")
    assert json.loads((run_dir / "config.json").read_text())["channels_last"] is False
    assert json.loads((run_ok(tmp_path, run_id="r2") / "config.json").read_text())["channels_last"] is True
