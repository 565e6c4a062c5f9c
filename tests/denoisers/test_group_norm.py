"""The fused GroupNorm(+SiLU) kernel against PyTorch's operators in float64, its fallbacks, and its build."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import denoisers
from denoisers.kernels import build
from denoisers.kernels import group_norm as gn

needs_kernel = pytest.mark.skipif(not gn.kernel_available(), reason="no C compiler to build the fused kernel")


def reference(x, weight, bias, groups, silu):
    """Output and gradients of silu(group_norm(x)) in float64 with PyTorch's operators."""
    x64 = x.detach().double().requires_grad_()
    w64, b64 = weight.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    y = F.group_norm(x64, groups, w64, b64, 1e-5)
    return F.silu(y) if silu else y, (x64, w64, b64)


def module(channels: int, groups: int, silu: bool) -> gn.GroupNorm:
    torch.manual_seed(1)
    m = gn.GroupNorm(groups, channels, silu=silu)
    nn.init.normal_(m.weight)
    nn.init.normal_(m.bias)
    return m


@needs_kernel
@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize(
    ("shape", "groups", "offset"),
    [
        ((4, 32, 8, 8), 32, 0.0),  # one channel per group
        ((3, 64, 7, 7), 32, 0.0),  # two per group, odd side
        ((2, 48, 5, 9), 16, 0.0),  # three per group, rectangular
        ((1, 8, 70, 3), 4, 0.0),  # more pixels than one accumulation row
        ((2, 32, 6, 6), 8, 50.0),  # mean far from zero against the spread: E[x^2] - E[x]^2 would cancel
    ],
)
def test_fused_kernel_matches_float64_reference(shape, groups, offset, silu):
    m = module(shape[1], groups, silu)
    torch.manual_seed(2)
    x = (torch.randn(shape) + offset).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(shape).contiguous(memory_format=torch.channels_last)

    y = m(x)
    assert y.grad_fn is not None and type(y.grad_fn).__name__ == "_FusedGroupNormSiLUBackward"
    assert y.is_contiguous(memory_format=torch.channels_last)
    dx, dw, db = torch.autograd.grad(y, (x, m.weight, m.bias), grad)

    want, inputs = reference(x, m.weight, m.bias, groups, silu)
    want_dx, want_dw, want_db = torch.autograd.grad(want, inputs, grad.double())
    for got, expected in [(y, want), (dx, want_dx), (dw, want_dw), (db, want_db)]:
        scale = expected.abs().max().item()
        assert (got.double() - expected).abs().max().item() <= 2e-5 * scale + 1e-6


class CountingKernel:
    """The loaded C library with each entry point counted as it is called."""

    def __init__(self, lib) -> None:
        self.lib, self.calls = lib, Counter()

    def __getattr__(self, name: str):
        entry = getattr(self.lib, name)

        def counted(*args):
            self.calls[name] += 1
            return entry(*args)

        return counted


@needs_kernel
def test_fused_and_native_paths_train_alike(monkeypatch):
    """One U-Net, both paths: the same loss and parameter gradients up to float32 rounding, with the C
    kernel's entry points called once per GroupNorm on the fused path and never on the native one."""
    kernel = CountingKernel(gn._kernel())
    monkeypatch.setattr(gn, "_kernel", lambda: kernel)
    torch.manual_seed(0)
    net = denoisers.get("unet")((1, 12, 12), base_channels=16, channel_mult=(1, 2), attention_resolutions=[6])
    net = net.to(memory_format=torch.channels_last)
    norms = sum(isinstance(m, gn.GroupNorm) for m in net.modules())
    for p in net.parameters():  # the zero-initialised output layers would hide most of the network
        nn.init.normal_(p, std=0.2)
    x, t = torch.randn(4, 1, 12, 12), torch.randint(0, 1000, (4,))
    grads, calls = {}, {}
    for fused in (False, True):
        gn.use_fused_kernels(net, fused)
        kernel.calls.clear()
        net.zero_grad()
        loss = net(x, t).pow(2).mean()
        loss.backward()
        grads[fused] = (loss.detach(), [p.grad.clone() for p in net.parameters()])
        calls[fused] = dict(kernel.calls)
    assert norms > 0 and calls == {False: {}, True: {"gn_forward": norms, "gn_backward": norms}}
    assert torch.allclose(grads[True][0], grads[False][0], rtol=1e-5)
    for a, b in zip(grads[True][1], grads[False][1], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item() + 1e-7)


@needs_kernel
def test_results_do_not_depend_on_the_thread_count():
    m = module(64, 32, silu=True)
    x = torch.randn(6, 64, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn_like(x)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            y = m(x)
            outputs.append([y, *torch.autograd.grad(y, (x, m.weight, m.bias), grad)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outputs, strict=True):
        assert torch.equal(a, b)


def test_paths_the_kernel_does_not_cover_use_pytorch(monkeypatch):
    """NCHW, another dtype, the flag off, or under autocast: PyTorch's operators, never the kernel."""

    def refuse(*args, **kwargs):
        raise AssertionError("the fused kernel ran where it should not")

    monkeypatch.setattr(gn._FusedGroupNormSiLU, "apply", refuse)
    m = module(32, 32, silu=True)
    x = torch.randn(2, 32, 5, 5)
    want = F.silu(F.group_norm(x, 32, m.weight, m.bias, 1e-5))
    assert torch.equal(m(x), want)  # NCHW
    assert m.double()(x.double().contiguous(memory_format=torch.channels_last)).dtype == torch.float64
    m.float().fused = False
    assert torch.allclose(m(x.contiguous(memory_format=torch.channels_last)), want, atol=1e-6)
    m.fused = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m(x.contiguous(memory_format=torch.channels_last))


def test_without_a_compiler_the_module_falls_back_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    build.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C compiler"):
            assert not gn.kernel_available()
        m = module(32, 32, silu=False)
        x = torch.randn(2, 32, 4, 4).contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch.equal(m(x), F.group_norm(x, 32, m.weight, m.bias, 1e-5))
    finally:
        build.load.cache_clear()


def test_a_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    compiler = tmp_path / "cc"
    compiler.write_text("#!/bin/sh\necho 'cc: error: broken toolchain' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    build.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="broken toolchain"):
            assert build.load(gn.KERNEL) is None
        assert not list((tmp_path / "kernels").glob("*.so"))  # nothing half-written left behind
    finally:
        build.load.cache_clear()


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv(build.DISABLE_ENV, "0")
    build.load.cache_clear()
    try:
        assert build.load(gn.KERNEL) is None
    finally:
        build.load.cache_clear()


@needs_kernel
def test_the_library_is_built_once_and_reused(tmp_path):
    compiler = build._compiler()
    first = build.build(gn.KERNEL, compiler, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build.build(gn.KERNEL, compiler, tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_checkpoints_keep_torch_group_norm_names():
    """The module's parameters are nn.GroupNorm's: old and new checkpoints load both ways."""
    ours, theirs = gn.GroupNorm(8, 16, silu=True), nn.GroupNorm(8, 16)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())


def test_run_config_switches_the_kernel(tmp_path):
    from dataclasses import replace

    from bench.config import RunConfig, TrainConfig
    from bench.runs.experiment import build_experiment

    base = RunConfig(dataset="digits", denoiser_options={"base_channels": 16}, train=TrainConfig(steps=1))
    for flag in (True, False):
        model = build_experiment(replace(base, fused_norm=flag)).model
        norms = [m for m in model.modules() if isinstance(m, gn.GroupNorm)]
        assert norms and all(m.fused is flag for m in norms)


@pytest.mark.parametrize("flag", [[], ["--no-fused-norm"]])
def test_a_run_records_whether_the_kernel_ran(tmp_path, flag):
    from tests.helpers import run_ok

    unet = ["--denoiser", "unet", "-o", "base_channels=8", "-o", "channel_mult=[1]"]
    run_dir = run_ok(tmp_path, *unet, *flag)
    config = json.loads((run_dir / "config.json").read_text())
    hardware = json.loads((run_dir / "metrics.json").read_text())["hardware"]
    assert config["fused_norm"] is not flag
    assert hardware["fused_norm_kernel"] is (not flag and gn.kernel_available())


@needs_kernel
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_stays_non_finite(bad):
    """A diverging run must still be caught by the trainer's non-finite loss check."""
    m = module(8, 4, silu=True)
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    x[0, 0, 1, 1] = bad
    x.requires_grad_()
    y = m(x)
    (dx,) = torch.autograd.grad(y.sum(), x)
    assert not y[0, :2].isfinite().all() and not dx[0, :2].isfinite().all()  # the group that holds it
    assert y[1].isfinite().all() and dx[1].isfinite().all()  # other images are untouched
