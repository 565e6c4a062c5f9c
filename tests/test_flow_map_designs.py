"""The flow-map designs from the command line: ``meanflow`` and ``shortcut`` train on the default data and
sample in one call through the ``flow-map`` sampler, resume bit for bit, show in ``bench list``, and every
bad input is a usage error with nothing written. Their math is tested against the Gaussian closed form in
tests/test_flow_map_oracle.py; the backbones' second time here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import denoisers
from bench.process.denoiser import FLOW_MAP
from bench.training.objectives import declaration
from bench.training.objectives.flow_map import meanflow_probe
from bench.training.objectives.forward_mode import jvp_forwards
from denoisers.common import design_recipe
from tests.helpers import invoke, stop_at_two_and_resume
from tests.helpers import refused_run as refused
from tests.helpers import run_metrics as metrics
from tests.helpers import tiny_run_ok as run_ok

STEPS = 6  # TINY_RUN's


# ------------------------------------------------------------------------------------ the second time
@pytest.mark.parametrize("backbone", ["unet", "transformer"])
def test_a_backbone_without_the_second_time_is_the_network_it_always_was(backbone):
    """Off by default: the same parameters, drawn from the same random numbers, the same outputs."""
    torch.manual_seed(0)
    plain = denoisers.get(backbone)((1, 8, 8))
    torch.manual_seed(0)
    with_gap = denoisers.get(backbone)((1, 8, 8), second_time=True)
    assert not plain.second_time and with_gap.second_time
    plain_state, gap_state = plain.state_dict(), with_gap.state_dict()
    extra = sorted(set(gap_state) - set(plain_state))
    assert extra and all(key.startswith(("gap_emb.", "gap_embedder.")) for key in extra), extra
    for key, value in plain_state.items():
        assert torch.equal(value, gap_state[key]), key


@pytest.mark.parametrize("backbone", ["unet", "transformer"])
def test_the_second_time_starts_at_zero_and_then_changes_the_output(backbone):
    """Its embedding's last layer starts at zero (a flow model at every gap); once it has weights, a gap
    changes the output, and a gap of None is a gap of 0."""
    net = denoisers.get(backbone)((1, 8, 8), second_time=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 500.0)
    with torch.no_grad():
        none, zero, gap = net(x, t), net(x, t, gap=torch.zeros(4)), net(x, t, gap=torch.full((4,), 300.0))
    assert torch.equal(none, zero)
    assert (gap - zero).abs().max() > 1e-3
    fresh = denoisers.get(backbone)((1, 8, 8), second_time=True)
    with torch.no_grad():
        assert torch.equal(fresh(x, t), fresh(x, t, gap=torch.full((4,), 300.0)))


def test_a_gap_given_to_a_network_without_the_second_time_is_an_error():
    net = denoisers.get("unet")((1, 8, 8))
    with pytest.raises(ValueError, match="second_time=True"):
        net(torch.zeros(1, 1, 8, 8), torch.zeros(1), gap=torch.zeros(1))


# ----------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow-map-runs")
    return {
        "meanflow": run_ok(out, "meanflow", "--denoiser", "meanflow"),
        "meanflow-fd": run_ok(
            out, "meanflow-fd", "--denoiser", "meanflow", "--derivative", "finite-difference"
        ),
        "shortcut": run_ok(out, "shortcut", "--denoiser", "shortcut", "--shortcut-steps", "8"),
        "flow": run_ok(out, "flow", "--target", "flow"),
    }


@pytest.mark.parametrize("design", ["meanflow", "meanflow-fd", "shortcut"])
def test_each_design_trains_and_samples_in_one_call(runs, design):
    result = metrics(runs[design])
    sampled = result["sample"]
    assert (sampled["method"], sampled["steps"], sampled["network_evaluations_per_image"]) == (
        "flow-map",
        1,
        1,
    )
    assert result["train"]["steps"] == STEPS
    assert torch.isfinite(torch.tensor(result["train"]["final_loss"]))


def test_the_cost_counts_the_derivative_and_the_half_steps(runs):
    """Own training FLOPs: the forward and backward of each image, plus the extra forwards of each: the JVP's
    FLOPs counted on the run's network (three forwards of the U-Net), two forwards for the finite
    difference, 2 x 0.25 for shortcut's half steps."""
    for design, extra in (("meanflow", 3.0), ("meanflow-fd", 2), ("shortcut", 0.5)):
        result = metrics(runs[design])
        train = result["train"]
        expected = train["images_seen"] * (
            train["training_flops_per_image"] + extra * train["forward_flops_per_image"]
        )
        assert result["cost"]["train_flops"] == pytest.approx(expected, rel=1e-6), design


@pytest.mark.parametrize(("backbone", "low", "high"), [("unet", 2.99, 3.01), ("transformer", 2.99, 3.01)])
def test_the_jvp_is_counted_on_the_network(backbone, low, high):
    """Forward-mode AD's cost counted by PyTorch's FLOP counter, both passes with the same (math) attention
    kernel: three forwards, for either backbone."""
    net = denoisers.get("meanflow")((1, 28, 28), backbone=backbone)
    state = torch.random.get_rng_state()
    assert low < jvp_forwards(net, (1, 28, 28), meanflow_probe) < high
    assert torch.equal(state, torch.random.get_rng_state())


def test_bench_eval_samples_a_flow_map_in_the_calls_asked_and_as_a_flow(runs):
    """--steps 1,2,4 are 1, 2 and 4 jumps of the map; DDIM integrates the same network as a flow (r = t)."""
    result = invoke("eval", str(runs["shortcut"]), "--steps", "1,2,4", "--n", "8", "--quiet")
    assert result.exit_code == 0, result.output
    result = invoke("eval", str(runs["shortcut"]), "--method", "ddim", "--steps", "5", "--n", "8", "--quiet")
    assert result.exit_code == 0, result.output
    entries = metrics(runs["shortcut"])["evaluations"]
    assert [(e["sample"]["method"], e["sample"]["nfe"]) for e in entries] == [
        ("flow-map", 1),
        ("flow-map", 2),
        ("flow-map", 4),
        ("ddim", 5),
    ]


def test_bench_eval_refuses_the_flow_map_sampler_for_a_run_that_is_not_a_flow_map(runs):
    before = (runs["flow"] / "metrics.json").read_bytes()
    result = invoke("eval", str(runs["flow"]), "--method", "flow-map", "--steps", "1", "--n", "8", "--quiet")
    assert result.exit_code == 2, result.output
    assert "a 'flow' prediction is not a flow map" in " ".join(result.output.split())
    assert (runs["flow"] / "metrics.json").read_bytes() == before


def checkpoint(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize(
    "args",
    [
        ["--denoiser", "meanflow"],
        ["--denoiser", "meanflow", "--derivative", "finite-difference"],
        ["--denoiser", "shortcut", "--shortcut-steps", "8"],
    ],
    ids=["meanflow-jvp", "meanflow-fd", "shortcut"],
)
def test_a_run_stopped_part_way_and_resumed_ends_bit_identical(tmp_path, monkeypatch, args):
    straight = run_ok(tmp_path, "straight", *args)
    a, b = checkpoint(straight), checkpoint(stop_at_two_and_resume(tmp_path, monkeypatch, *args))
    assert a["step"] == b["step"] == STEPS
    for part in ("model",):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["ema"]["module"])


def test_bench_list_shows_the_designs_their_objectives_and_the_sampler():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for design in ("meanflow", "shortcut"):
        assert any(
            line.split()[:1] == [design] and "predicts flow-map, samples with flow-map" in line
            for line in lines
        )
    objectives = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()}
    assert "a second time input, forward-mode AD (JVP)" in objectives["meanflow"]
    assert "+3 forwards" in objectives["meanflow"] and "+0.5 forward" in objectives["shortcut"]
    assert any(line.split()[:1] == ["flow-map"] for line in lines)
    assert declaration("meanflow").second_time and declaration("meanflow").jvp


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--denoiser", "meanflow", "-o", "second_time=False"],
            "needs a network that takes a second time input",
        ),
        (
            ["--denoiser", "shortcut", "-o", "second_time=False"],
            "needs a network that takes a second time input",
        ),
        (["--denoiser", "meanflow", "--equal-fraction", "1.5"], "equal_fraction must be in [0, 1]"),
        (["--denoiser", "meanflow", "--equal-fraction", "-0.1"], "equal_fraction must be in [0, 1]"),
        (["--denoiser", "shortcut", "--consistency-fraction", "2"], "consistency_fraction must be in [0, 1]"),
        (["--denoiser", "meanflow", "--time-std", "0"], "time_std must be a positive number"),
        (["--denoiser", "meanflow", "--adaptive-power", "-1"], "adaptive_power must be >= 0"),
        (["--denoiser", "shortcut", "--shortcut-steps", "6"], "must be a power of two"),
        (["--denoiser", "shortcut", "--shortcut-steps", "1"], "shortcut_steps must be >= 2"),
        (["--denoiser", "unet", "--sampler", "flow-map"], "is not a flow map"),
        (["--denoiser", "shortcut", "--derivative", "finite-difference"], "--derivative is for meanflow"),
        (["--denoiser", "meanflow", "--shortcut-steps", "64"], "--shortcut-steps is for shortcut"),
        (["--denoiser", "unet", "--equal-fraction", "0.5"], "--equal-fraction is for meanflow"),
        (["--denoiser", "meanflow", "--target-ema", "0.5"], "--target-ema is for consistency-distilled"),
        (["--denoiser", "meanflow", "--teacher", "somewhere"], "--teacher is for"),
        (["--denoiser", "meanflow", "--loss-weight", "min-snr"], "draws its own noise levels"),
        (["--denoiser", "meanflow", "--conditional"], "does not take class labels"),
    ],
)
def test_bad_flow_map_input_is_a_usage_error_and_nothing_is_written(tmp_path, args, message):
    assert message in refused(tmp_path, *args)


class NoForwardDerivative(torch.autograd.Function):
    """An operation with a backward and no forward derivative, as a user's custom kernel may be."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class CustomKernelNet(nn.Module):
    """A flow-map network with such an operation inside."""

    second_time = True

    def __init__(self, image_shape, **options):
        super().__init__()
        self.recipe = design_recipe(
            "custom", FLOW_MAP, allowed=(FLOW_MAP,), objective="meanflow", sampler="flow-map"
        )
        self.conv = nn.Conv2d(image_shape[0], image_shape[0], 3, padding=1)
        self.time = nn.Linear(2, image_shape[0])

    def forward(self, x, t, y=None, *, gap=None):
        gap = torch.zeros_like(t) if gap is None else gap
        shift = self.time(torch.stack([t, gap], dim=1) / 1000)[:, :, None, None]
        return NoForwardDerivative.apply(self.conv(x)) + shift


@pytest.fixture
def custom_kernel_design():
    denoisers.register("custom-kernel-meanflow")(CustomKernelNet)
    yield "custom-kernel-meanflow"
    denoisers.REGISTRY._plugins.pop("custom-kernel-meanflow", None)


def test_the_jvp_asked_of_a_network_that_cannot_run_it_says_what_to_do(tmp_path, custom_kernel_design):
    message = refused(tmp_path, "--denoiser", custom_kernel_design)
    assert "--derivative jvp cannot run through this network" in message
    assert "use --derivative finite-difference" in message
    run_ok(tmp_path / "fd", "fd", "--denoiser", custom_kernel_design, "--derivative", "finite-difference")
