"""Typed run configuration: resolved once from the CLI (or Python), saved with the run, read back on resume.

Each numeric field that has a rule declares it once, as a :class:`Rule` in the field's metadata: the
config's ``__post_init__`` checks it, and the CLI derives its option type from it (``bench.cli.options``),
so a new option costs one field here and one flag there.

The defaults are sized so that ``bench run --denoiser unet --schedule linear`` trains, samples and
evaluates on the embedded 5,000-digit MNIST subset in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from typing import Any

from .denoiser import LOSS_WEIGHTS, Guidance, check_guidance
from .grids import GRID_SETTINGS, RHO, Grid
from .rules import POSITIVE, POSITIVE_INT, Rule, check_choice, check_rules, rule_of, ruled  # noqa: F401

PRECISIONS = ("fp32", "bf16", "fp16")
AUTO_SAMPLER = "auto"
NOISE_LEVELS = ("uniform", "lognormal", "logit-normal")
"""Which noise levels training draws: DDPM's uniform timesteps, EDM's log-normal sigma, or SD3's logit-normal
flow time (Esser et al. 2024): t = sigmoid(n), n ~ N(m, s^2). As sigma = t / (1 - t), logit(t) = ln sigma, so
SD3's logit-normal t is a log-normal sigma with mean m and std s, drawn the same way."""


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "linear"
    timesteps: int = ruled(1000, POSITIVE_INT)
    zero_terminal_snr: bool = False

    def __post_init__(self) -> None:
        check_rules(self)


@dataclass(frozen=True)
class TrainConfig:
    """The shared trainer's recipe. ``steps`` and ``minutes`` are budgets: training stops at whichever comes
    first (``minutes=None`` means no time limit). ``batch_size`` is per process. ``budget_flops`` records
    the training-FLOP budget that ``steps`` was derived from (``bench sweep --budget-flops``); the trainer
    itself counts steps.

    ``loss_weight`` weights each example's loss by its noise level (:data:`bench.denoiser.LOSS_WEIGHTS`;
    ``min_snr_gamma`` is min-SNR's gamma), and ``noise_levels`` chooses them: uniform timesteps (DDPM),
    EDM's ln sigma ~ N(p_mean, p_std^2), or SD3's logit(t) ~ N(logit_mean, logit_std^2), each mapped to
    real-valued timesteps. ``label_dropout`` is the fraction
    of a class-conditional run's examples trained with the null label (the unconditional model that
    classifier-free guidance needs); unconditional runs ignore it."""

    steps: int = ruled(1500, POSITIVE_INT)
    minutes: float | None = ruled(None, replace(POSITIVE, optional=True))
    budget_flops: float | None = ruled(None, replace(POSITIVE, optional=True))
    batch_size: int = ruled(64, POSITIVE_INT)
    lr: float = ruled(1e-3, POSITIVE)
    warmup_steps: int = ruled(100, Rule(int, low=0))
    weight_decay: float = ruled(0.0, Rule(float, low=0))
    grad_clip: float = ruled(1.0, Rule(float, low=0))  # 0 disables clipping
    ema_decay: float = ruled(0.999, Rule(float, low=0, high=1, high_open=True))
    precision: str = "fp32"
    compile: bool = False
    hflip: bool = False  # random horizontal flips of the training images (DDPM's CIFAR-10 recipe)
    loss_weight: str = "uniform"
    min_snr_gamma: float = ruled(5.0, POSITIVE)
    noise_levels: str = "uniform"
    p_mean: float = ruled(-1.2, Rule(float))
    p_std: float = ruled(1.2, POSITIVE)
    logit_mean: float = ruled(0.0, Rule(float))
    logit_std: float = ruled(1.0, POSITIVE)
    label_dropout: float = ruled(0.1, Rule(float, low=0, high=1, high_open=True))
    checkpoint_every: int = ruled(500, POSITIVE_INT)
    log_every: int = ruled(25, POSITIVE_INT)

    def __post_init__(self) -> None:
        check_rules(self)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("loss_weight", self.loss_weight, LOSS_WEIGHTS)
        check_choice("noise_levels", self.noise_levels, NOISE_LEVELS)


@dataclass(frozen=True)
class Stepping:
    """Where a sampler steps (:mod:`bench.grids`) and EDM's churn: the part of :class:`SampleConfig` that
    ``bench sample`` and ``bench eval`` replace in a run's own sampling."""

    grid: str = "uniform"
    rho: float = ruled(RHO, POSITIVE)
    sigma_max: float | None = ruled(None, replace(POSITIVE, optional=True))
    sigma_min: float | None = ruled(None, replace(POSITIVE, optional=True))
    s_churn: float = ruled(0.0, Rule(float, low=0))
    s_tmin: float = ruled(0.0, Rule(float, low=0))
    s_tmax: float | None = ruled(None, Rule(float, low=0, optional=True))
    s_noise: float = ruled(1.0, POSITIVE)


CHURN_DEFAULTS = {name: getattr(Stepping(), name) for name in ("s_churn", "s_tmin", "s_tmax", "s_noise")}
"""EDM's Algorithm 2 settings at their "no churn" values (k-diffusion's defaults)."""
STEPPING_SETTINGS = (*GRID_SETTINGS, *CHURN_DEFAULTS)
"""Where a sampler steps and how it adds noise on the way: named in a sample's label only when not the
default."""


def churn_label(churn: dict[str, Any]) -> list[str]:
    """``churn40``, ``tmin0.05``, ``tmax50``, ``noise1.003``: each churn setting not at its default."""
    short = {"s_churn": "churn", "s_tmin": "tmin", "s_tmax": "tmax", "s_noise": "noise"}
    return [f"{short[k]}{v:g}" for k, v in churn.items() if k == "s_churn" or v != CHURN_DEFAULTS[k]]


@dataclass(frozen=True)
class SampleConfig(Stepping):
    """How a run is sampled for its grid and its metrics.

    ``method="auto"`` uses one-shot sampling for a denoiser trained only on pure noise and DDIM with
    ``steps`` steps otherwise: 1,000-step ancestral sampling is available but costs 20x more here.
    ``eta=1`` makes DDIM the DDPM ancestral sampler on the strided timesteps: its fresh noise corrects the
    errors of a briefly trained model, which deterministic DDIM (eta=0) compounds into saturated blobs.

    ``grid`` is where a sampler that walks any grid (DDIM and the ODE solvers) steps (:mod:`bench.grids`:
    ``uniform``, ``karras`` with ``rho``, ``log-snr``; ``sigma_max`` / ``sigma_min`` None: the schedule's
    range), and ``s_churn``, ``s_tmin``, ``s_tmax`` (None: no bound) and ``s_noise`` are EDM's stochastic
    sampler's, which Euler and Heun take (churn 0: the deterministic sampler). A grid or churn asked of a
    sampler without them is an error, not silently dropped.

    For a class-conditional run: ``guidance_scale`` (classifier-free guidance, 1 = plain conditional),
    ``guidance_interval`` (the noise levels (lo, hi] where guidance applies; everywhere when None) and
    ``class_label`` (every sample of that class; None draws the classes balanced: sample i is of class
    i mod K).
    """

    method: str = AUTO_SAMPLER
    steps: int | None = ruled(50, replace(POSITIVE_INT, optional=True))
    eta: float = ruled(1.0, Rule(float, low=0, high=1))
    variance: str = "beta"
    clip_x0: bool = True
    n: int = ruled(500, POSITIVE_INT)
    batch_size: int = ruled(250, POSITIVE_INT)
    use_ema: bool = True
    guidance_scale: float = ruled(1.0, Rule(float, low=0))
    guidance_interval: tuple[float, float] | None = None
    class_label: int | None = ruled(None, Rule(int, low=0, optional=True))

    @property
    def guided(self) -> bool:
        """Whether any call combines conditional and unconditional outputs."""
        return self.guidance_scale != 1.0

    def guidance(self) -> Guidance:
        """The classifier-free guidance these settings ask of a conditional model's denoiser."""
        return Guidance(self.guidance_scale, self.guidance_interval)

    def settings(self) -> dict[str, Any]:
        """The values of the settings that the (resolved) sampler ``method`` declares, e.g. ``{"eta": 1.0}``
        for DDIM: each sampler is given only its own."""
        from .sampling import sampler_settings

        return {name: getattr(self, name) for name in sampler_settings(self.method) if hasattr(self, name)}

    def grid_choice(self) -> Grid:
        """The grid these settings ask for (:class:`bench.grids.Grid`)."""
        return Grid(self.grid, self.rho, self.sigma_max, self.sigma_min)

    def churn(self) -> dict[str, Any]:
        """EDM's churn settings, by their sampler-setting names; empty when there is no churn (S_churn 0,
        the deterministic sampler), whatever the other three say."""
        return {name: getattr(self, name) for name in CHURN_DEFAULTS} if self.s_churn else {}

    def label(self) -> str:
        """The sampler, its steps and only the settings it declares, for file names: ``ddim-50steps-eta1``,
        ``heun-10steps``, ``ancestral-allsteps-beta``; a grid other than the uniform one and a churn are
        named too (``heun-18steps-karras-rho7-churn40-tmin0.05-tmax50-noise1.003``), so the default
        sampling keeps the names it always had."""
        steps = f"{self.steps}steps" if self.steps else "allsteps"
        own = [
            f"{k}{v:g}" if isinstance(v, float) else str(v)
            for k, v in self.settings().items()
            if k not in STEPPING_SETTINGS
        ]
        if self.takes("grid") and not self.grid_choice().is_default:
            own.append(self.grid_choice().label())
        own.extend(churn_label(self.churn()))
        if self.guided:
            own.append(f"cfg{self.guidance_scale:g}")
        if self.guidance_interval is not None:
            own.append("interval{:g}-{:g}".format(*self.guidance_interval))
        if self.class_label is not None:
            own.append(f"class{self.class_label}")
        return "-".join([self.method, steps, *own])

    def takes(self, setting: str) -> bool:
        """Whether the sampler (or ``auto``, which is DDIM unless the design is sampled in one shot) declares
        ``setting``."""
        from .sampling import sampler_settings

        return setting in sampler_settings("ddim" if self.method == AUTO_SAMPLER else self.method)

    def check_stepping(self) -> None:
        """A grid or churn is refused by a sampler that has none, rather than dropped without a word."""
        self.grid_choice()  # its own rules: a known grid, rho and the sigma range
        if not self.grid_choice().is_default and not self.takes("grid"):
            raise ValueError(
                f"sampler {self.method!r} walks no grid but its own; grid, rho, sigma_max and sigma_min are "
                "for ddim, euler, heun and dpmpp-2m"
            )
        changed = [f for f in CHURN_DEFAULTS if getattr(self, f) != CHURN_DEFAULTS[f]]
        if changed and not self.takes("s_churn"):
            raise ValueError(
                f"sampler {self.method!r} takes no {', '.join(changed)}: EDM's stochastic churn is a setting "
                "of euler and heun"
            )
        if self.s_tmax is not None and self.s_tmin > self.s_tmax:
            raise ValueError(f"s_tmin must be at most s_tmax, got s_tmin={self.s_tmin!r} > {self.s_tmax!r}")

    def __post_init__(self) -> None:
        check_rules(self, prefix="sample ")
        self.check_stepping()
        if self.guidance_interval is not None:  # a list when read back from JSON
            check_guidance(self.guidance_scale, self.guidance_interval)
            object.__setattr__(self, "guidance_interval", tuple(float(v) for v in self.guidance_interval))
            if not self.guided:
                raise ValueError(
                    "a guidance interval needs a guidance scale other than 1 (scale 1 is plain conditional "
                    "sampling everywhere)"
                )


@dataclass(frozen=True)
class DistillConfig:
    """Where a design trained on a teacher's pairs (``direct-distilled``) gets them: ``teacher`` is a complete
    run folder whose EMA model maps ``pairs`` seeded noises x_T to images with deterministic DDIM (eta = 0)
    in ``teacher_steps`` steps. Ignored by designs trained on independent pairs."""

    teacher: str | None = None
    teacher_steps: int = ruled(50, POSITIVE_INT)
    pairs: int = ruled(4000, POSITIVE_INT)

    def __post_init__(self) -> None:
        check_rules(self)


CONSISTENCY_SOLVERS = ("heun", "ddim")
DISTANCES = ("pseudo-huber", "l2")


@dataclass(frozen=True)
class ConsistencyConfig:
    """The consistency designs' settings (:mod:`bench.consistency`); ignored by every other design.

    ``levels`` is CD's N (the rho = 7 grid of noise levels; 18 in Song et al.'s CIFAR-10 runs), and
    ``levels_start`` / ``levels_end`` iCT's s0 and s1, between which N doubles over training.
    ``teacher_solver`` is CD's ODE step (``heun``: two teacher calls, ``ddim``: one, Euler's step in y),
    ``target_ema`` CD's target-network rate mu, ``distance`` the metric d (LPIPS, CD's choice in the paper,
    needs ImageNet-trained VGG weights, which cannot be had offline; pseudo-Huber is iCT's replacement for
    it), ``huber_c`` its c (None: 0.00054 sqrt(d)), and ``student_init`` whether the CD student starts from
    the teacher's weights (the paper's choice) or from a fresh initialisation."""

    levels: int = ruled(18, Rule(int, low=2))
    levels_start: int = ruled(10, Rule(int, low=2))
    levels_end: int = ruled(1280, Rule(int, low=2))
    teacher_solver: str = "heun"
    target_ema: float = ruled(0.95, Rule(float, low=0, high=1, high_open=True))
    distance: str = "pseudo-huber"
    huber_c: float | None = ruled(None, replace(POSITIVE, optional=True))
    student_init: str = "teacher"

    def __post_init__(self) -> None:
        check_rules(self, prefix="consistency ")
        check_choice("teacher_solver", self.teacher_solver, CONSISTENCY_SOLVERS)
        check_choice("distance", self.distance, DISTANCES)
        check_choice("student_init", self.student_init, ("teacher", "random"))
        if self.levels_end < self.levels_start:
            raise ValueError(
                f"levels_end ({self.levels_end}) must be at least levels_start ({self.levels_start})"
            )


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
    # TensorBoard event files in the run folder's tensorboard/ (bench.tensorboard_log): the loss.csv and
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

        from .diffusion import Diffusion

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
        data = dict(data)
        nested = {
            "diffusion": DiffusionConfig,
            "train": TrainConfig,
            "sample": SampleConfig,
            "distill": DistillConfig,
            "consistency": ConsistencyConfig,
        }
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
