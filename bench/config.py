"""Typed run configuration: resolved once from the CLI (or Python), saved with the run, read back on resume.

The defaults are sized so that ``bench run --denoiser unet --schedule linear`` trains, samples and
evaluates on the embedded 5,000-digit MNIST subset in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16")
AUTO_SAMPLER = "auto"


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "linear"
    timesteps: int = 1000
    zero_terminal_snr: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """The shared trainer's recipe. ``steps`` and ``minutes`` are budgets: training stops at whichever comes
    first (``minutes=None`` means no time limit). ``batch_size`` is per process. ``budget_flops`` records
    the training-FLOP budget that ``steps`` was derived from (``bench sweep --budget-flops``); the trainer
    itself counts steps."""

    steps: int = 1500
    minutes: float | None = None
    budget_flops: float | None = None
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "fp32"
    compile: bool = False
    checkpoint_every: int = 500
    log_every: int = 25

    def __post_init__(self) -> None:
        positive_ints = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "checkpoint_every": self.checkpoint_every,
            "log_every": self.log_every,
        }
        for name, value in positive_ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ValueError(f"minutes must be a positive number, got {self.minutes!r}")
        if self.budget_flops is not None and not (math.isfinite(self.budget_flops) and self.budget_flops > 0):
            raise ValueError(f"budget_flops must be a positive number, got {self.budget_flops!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class SampleConfig:
    """How a run is sampled for its grid and its metrics.

    ``method="auto"`` uses one-shot sampling for a denoiser trained only on pure noise and DDIM with
    ``steps`` steps otherwise: 1,000-step ancestral sampling is available but costs 20x more here.
    ``eta=1`` makes DDIM the DDPM ancestral sampler on the strided timesteps: its fresh noise corrects the
    errors of a briefly trained model, which deterministic DDIM (eta=0) compounds into saturated blobs.
    """

    method: str = AUTO_SAMPLER
    steps: int | None = 50
    eta: float = 1.0
    variance: str = "beta"
    clip_x0: bool = True
    n: int = 500
    batch_size: int = 250
    use_ema: bool = True

    def settings(self) -> dict[str, Any]:
        """The values of the settings that the (resolved) sampler ``method`` declares, e.g. ``{"eta": 1.0}``
        for DDIM: each sampler is given only its own."""
        from .sampling import sampler_settings

        return {name: getattr(self, name) for name in sampler_settings(self.method) if hasattr(self, name)}

    def __post_init__(self) -> None:
        for name in ("n", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"sample {name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    denoiser: str = "unet"
    denoiser_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist5k"
    data_root: str | None = None
    image_size: int | None = None
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    evaluate: bool = True
    seed: int = 0
    device: str = "auto"
    # Convolutions in NHWC: oneDNN and cuDNN run them faster than NCHW (the U-Net trains 1.3x faster on a
    # 2-core CPU); results differ from NCHW only by floating-point rounding.
    channels_last: bool = True
    # GroupNorm and the SiLU after it in one C kernel on CPU for channels-last float32 activations (1.19x
    # training and 1.30x sampling speed for the small U-Net on a 2-core CPU, scripts/speed_flags.py); falls
    # back to PyTorch's operators elsewhere.
    fused_norm: bool = True
    # On CPU with glibc: freed activation memory stays in the heap instead of being unmapped and faulted in
    # again every step (1.02x training speed at 28x28 on a 2-core CPU, none measurable at 14x14).
    tune_malloc: bool = True
    # TF32 matmuls and convolutions on Ampere and newer GPUs; no effect on CPU.
    tf32: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config saved by :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        data = dict(data)
        nested = {"diffusion": DiffusionConfig, "train": TrainConfig, "sample": SampleConfig}
        for key, kind in nested.items():
            if key in data:
                data[key] = _build(kind, data[key])
        return _build(cls, data)


def _build(kind: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} field(s): {', '.join(sorted(unknown))}")
    return kind(**data)
