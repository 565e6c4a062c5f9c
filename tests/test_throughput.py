import pytest
import torch
from torch import nn

from bench.evaluation import throughput


class LinearDenoiser(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)).view_as(x)


def test_flop_count_matches_the_closed_form():
    """A d x d matrix applied to one image of d pixels costs 2 d^2 FLOPs."""
    d = 64
    flops = throughput.forward_flops_per_image(LinearDenoiser(d), (1, 8, 8), torch.device("cpu"))
    assert flops == 2 * d * d
    # backward: the weight gradient (2 d^2); the input needs no gradient, so no second 2 d^2
    assert throughput.training_flops_per_image(LinearDenoiser(d), (1, 8, 8), torch.device("cpu")) == 4 * d * d


def test_matmul_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(throughput, "measure_matmul_peak", lambda device, dtype: calls.append(1) or 1e11)
    assert throughput.matmul_peak(torch.device("cpu")) == 1e11
    assert throughput.matmul_peak(torch.device("cpu")) == 1e11
    assert len(calls) == 1 and (tmp_path / "matmul_peak.json").is_file()


class FakeClock:
    """perf_counter for code that reads it twice per timed call: each call after the first of a pair
    advances by the next of ``durations``."""

    def __init__(self, durations: list[float]) -> None:
        self.durations, self.now, self.reads = list(durations), 100.0, 0

    def perf_counter(self) -> float:
        if self.reads % 2:
            self.now += self.durations.pop(0)
        self.reads += 1
        return self.now


def test_measured_matmul_peak_is_the_best_of_2n3_flops_over_the_time(monkeypatch):
    """An n x n matmul is n^2 dot products of length n: n^3 multiply-adds, 2 n^3 FLOPs. The best rate is
    that of the first size's second repeat here: 2 * 4^3 / 2e-4 = 6.4e5 FLOP/s, against 1.28e5, 2.048e5 and
    5.12e5 for the others."""
    # on the real clock: a positive, finite rate
    assert 0 < throughput.measure_matmul_peak(torch.device("cpu"), sizes=(64,), repeats=1) < float("inf")
    clock = FakeClock([1e-3, 2e-4, 5e-3, 2e-3])
    monkeypatch.setattr(throughput, "time", clock)
    peak = throughput.measure_matmul_peak(torch.device("cpu"), sizes=(4, 8), repeats=2)
    assert peak == pytest.approx(2 * 4**3 / 2e-4, rel=1e-9)
    assert clock.durations == [] and clock.reads == 8


def test_efficiency_and_memory():
    out = throughput.efficiency(100.0, 1e9, 2e11)
    assert out["achieved_flops_per_s"] == 1e11 and out["fraction_of_peak"] == pytest.approx(0.5)
    assert throughput.efficiency(None, 1e9, 2e11)["fraction_of_peak"] is None
    assert throughput.peak_memory_bytes(torch.device("cpu")) > 10 * 2**20
