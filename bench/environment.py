"""Where a run ran: versions, device, threads and the code's git commit, saved beside its results."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; CUDA asked for without a GPU is an error, not a fallback."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def configure_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 keeps fp32's range with a 10-bit mantissa in matmuls and convolutions: several times the fp32
    tensor-core rate on Ampere and newer GPUs, well inside the noise of diffusion training."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 256 << 20


def configure_allocator(device: torch.device, enabled: bool) -> bool:
    """Keep freed activation buffers in the heap for reuse instead of handing them back to the kernel.

    PyTorch's CPU allocator is plain malloc; glibc serves blocks over its mmap threshold with fresh pages and
    unmaps them on free, so a training step can page-fault its activations in again, page by page. Raising
    the mmap and trim thresholds stops that, with the same peak memory; in `bench run` on a 2-core CPU it
    gives 1.02x training speed at 28x28 and nothing measurable at 14x14, where glibc's adaptive threshold
    already avoids most faults. A process-wide setting, made before the first step; returns whether it was
    made (glibc on CPU only)."""
    if not enabled or device.type != "cpu" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return bool(mmap_set and mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() or platform.processor() or "cpu"


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment(device: torch.device, world_size: int = 1) -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {n: package_version(n) for n in ("ddpm-bench", "torch", "torchvision", "timm", "numpy")},
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "world_size": world_size,
        "git_commit": git_commit(),
        "command": sys.argv,
    }
