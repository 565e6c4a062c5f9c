"""A run's whole configuration (:class:`RunConfig`): the data, the schedule, the denoiser and its options,
how it trains and samples, and the machine settings; saved as the run folder's config.json and rebuilt from
it (:meth:`RunConfig.from_dict`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from typing import Any

from .rules import POSITIVE_INT, check_rules, ruled
from .sampling import SampleConfig
from .training import ConsistencyConfig, DistillConfig, FlowMapConfig, TrainConfig


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "linear"
    timesteps: int = ruled(1000, POSITIVE_INT)
    zero_terminal_snr: bool = False

    def __post_init__(self) -> None:
        check_rules(self)


@dataclass(frozen=True)
class RunConfig:
    denoiser: str = "unet"
    denoiser_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist5k"
    data_root: str | None = None
    # class-conditional (net(x_t, t, y)) on a labelled dataset, with train.label_dropout for guidance
    conditional: bool = False
    image_size: int | None = ruled(None, replace(POSITIVE_INT, optional=True))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    flow_map: FlowMapConfig = field(default_factory=FlowMapConfig)
    evaluate: bool = True
    # score the EMA model every N training steps on a small sample (eval.csv); None: only at the end
    eval_every: int | None = ruled(None, replace(POSITIVE_INT, optional=True))
    # standard FID, IS and KID (bench.metrics.fidelity) at the end and with --eval-every
    fid: bool = False
    inception_weights: str | None = None
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
    # TensorBoard event files in the run folder's tensorboard/ (bench.runs.tensorboard_log): the loss.csv and
    # eval.csv curves, sample grids, and the design beside its final scores for the HParams table.
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check_rules(self)
        self.check_conditioning()
        self.check_sigma_range()

    def check_sigma_range(self) -> None:
        """A grid's sigma_max and sigma_min against this run's schedule, before anything trains: clamped to
        its range with a warning, and refused when nothing of the range is left between them."""
        grid = self.sample.grid_choice()
        if grid.sigma_max is None and grid.sigma_min is None:
            return
        import schedules

        from ..process.diffusion import Diffusion

        d = self.diffusion
        betas = schedules.make(d.schedule, d.timesteps, zero_terminal_snr=d.zero_terminal_snr)
        grid.sigma_range(Diffusion(betas))

    def check_conditioning(self) -> None:
        """Refuse sampling settings that need a conditional model (or a null class) the run does not have."""
        if "num_classes" in self.denoiser_options:
            raise ValueError(
                "num_classes is not a denoiser option: train class-conditional with --conditional, which "
                "takes the dataset's classes"
            )
        sample = self.sample
        if not self.conditional:
            if sample.guided:
                raise ValueError(
                    f"guidance scale {sample.guidance_scale:g} needs a class-conditional run (trained with "
                    "--conditional); this run is unconditional, so use 1"
                )
            if sample.class_label is not None:
                raise ValueError(
                    "a class to sample needs a class-conditional run (trained with --conditional); this run "
                    "is unconditional"
                )
        elif sample.guided and self.train.label_dropout == 0:
            raise ValueError(
                f"guidance scale {sample.guidance_scale:g} needs the unconditional model, which a run "
                "trained with --label-dropout 0 never learnt; use scale 1, or train with --label-dropout > 0"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild a config saved by :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        data = upgrade(data)
        nested = {
            "diffusion": DiffusionConfig,
            "train": TrainConfig,
            "sample": SampleConfig,
            "distill": DistillConfig,
            "consistency": ConsistencyConfig,
            "flow_map": FlowMapConfig,
        }
        for key, kind in nested.items():
            if key in data:
                data[key] = _build(kind, data[key])
        return _build(cls, data)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config read as what it was run with where a field it predates would say otherwise: a run with
    a teacher from before ``distill.teacher_clip_x0`` clipped its teacher's x0 (a run without a teacher
    keeps the default, which changes nothing)."""
    distill = data.get("distill")
    if isinstance(distill, dict) and distill.get("teacher") is not None and "teacher_clip_x0" not in distill:
        return {**data, "distill": {**distill, "teacher_clip_x0": True}}
    return dict(data)


def _build(kind: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} field(s): {', '.join(sorted(unknown))}")
    return kind(**data)


def config_differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """``key: saved -> wanted`` for every leaf that differs (JSON-normalised, so tuples equal lists)."""
    saved, wanted = json.loads(json.dumps(saved)), json.loads(json.dumps(wanted))
    diffs = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.extend(config_differences(a, b, f"{name}."))
        elif a != b:
            diffs.append(f"{name}: {a!r} in the folder, {b!r} asked")
    return diffs
