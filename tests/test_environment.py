"""Process-wide settings a run makes before its first step."""

from __future__ import annotations

import ctypes
import sys

import pytest
import torch

from bench import environment


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

        def mallopt(param: int, value: int) -> int:
            self.calls.append((param, value))
            return 1

        self.mallopt = mallopt


def test_allocator_tuning_raises_glibc_thresholds(monkeypatch):
    fake = FakeLibc()
    monkeypatch.setattr(environment.ctypes, "CDLL", lambda name: fake)
    monkeypatch.setattr(environment.sys, "platform", "linux")
    assert environment.configure_allocator(torch.device("cpu"), True)
    assert fake.calls == [
        (environment.M_MMAP_THRESHOLD, environment.MMAP_THRESHOLD_BYTES),
        (environment.M_TRIM_THRESHOLD, 2 * environment.MMAP_THRESHOLD_BYTES),
    ]


@pytest.mark.parametrize(("device", "enabled"), [("cpu", False), ("meta", True)])
def test_allocator_tuning_only_when_asked_and_on_cpu(monkeypatch, device, enabled):
    fake = FakeLibc()
    monkeypatch.setattr(environment.ctypes, "CDLL", lambda name: fake)
    assert not environment.configure_allocator(torch.device(device), enabled)
    assert fake.calls == []


def test_allocator_tuning_without_mallopt_is_a_no_op(monkeypatch):
    monkeypatch.setattr(environment.sys, "platform", "linux")
    monkeypatch.setattr(environment.ctypes, "CDLL", lambda name: object())  # a C library without mallopt
    assert not environment.configure_allocator(torch.device("cpu"), True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_allocator_tuning_on_this_machine():
    try:
        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    assert environment.configure_allocator(torch.device("cpu"), True)
