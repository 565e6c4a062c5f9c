"""How close a run comes to the hardware: FLOPs per image counted by ``torch.utils.flop_counter``, the
device's measured matmul peak (cached), achieved FLOP/s, and peak memory."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..environment import device_name
from ..io import cache_root, write_json_atomic

PROBE_BATCH = 2


def _probe(image_shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The small batch the FLOP counts run on (FLOPs scale linearly with the batch)."""
    x = torch.zeros(PROBE_BATCH, *image_shape, device=device)
    return x, torch.zeros(PROBE_BATCH, dtype=torch.long, device=device)


def forward_flops_per_image(model: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> float:
    """FLOPs of one forward pass per image (a multiply-add counts 2)."""
    x, t = _probe(image_shape, device)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, t)
    model.train(was_training)
    return counter.get_total_flops() / PROBE_BATCH


def training_flops_per_image(model: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> float:
    """FLOPs of one forward and backward pass per image, counted (not the 3x-forward rule of thumb, which
    overcounts layers whose input needs no gradient)."""
    x, t = _probe(image_shape, device)
    with FlopCounterMode(display=False) as counter:
        model(x, t).float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / PROBE_BATCH


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call (callers on CUDA synchronise inside ``fn``)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_matmul_peak(
    device: torch.device,
    *,
    sizes: tuple[int, ...] = (1024, 2048, 3072),
    dtype: torch.dtype = torch.float32,
    repeats: int = 8,
) -> float:
    """Best FLOP/s of square matmuls over a few sizes and repeats: what this device reaches at this dtype."""
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, *, refresh: bool = False) -> float:
    """The measured matmul peak for (device model, dtype, threads), measured once and cached on disk."""
    key = f"{device_name(device)}|{dtype}|threads={torch.get_num_threads()}"
    path = cache_root() / "matmul_peak.json"
    cached = {}
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}
    if key not in cached or refresh:
        cached[key] = measure_matmul_peak(device, dtype=dtype)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, cached)
        except OSError:
            pass  # a read-only cache costs a re-measurement next time, nothing else
    return float(cached[key])


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA allocator peak on GPU; the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def efficiency(images_per_s: float | None, flops_per_image: float, peak: float) -> dict[str, float | None]:
    if not images_per_s:
        return {"achieved_flops_per_s": None, "fraction_of_peak": None}
    achieved = images_per_s * flops_per_image
    return {"achieved_flops_per_s": achieved, "fraction_of_peak": achieved / peak}
