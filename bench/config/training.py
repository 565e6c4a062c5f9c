"""How a run trains: the shared trainer's recipe (:class:`TrainConfig`), a teacher's pairs
(:class:`DistillConfig`), the consistency objectives' settings (:class:`ConsistencyConfig`) and the flow-map
objectives' (:class:`FlowMapConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..process.denoiser import LOSS_WEIGHTS
from .rules import POSITIVE, POSITIVE_INT, Rule, check_choice, check_rules, ruled

PRECISIONS = ("fp32", "bf16", "fp16")
NOISE_LEVELS = ("uniform", "lognormal", "logit-normal")
"""Which noise levels training draws: DDPM's uniform timesteps, EDM's log-normal sigma, or SD3's logit-normal
flow time (Esser et al. 2024): t = sigmoid(n), n ~ N(m, s^2). As sigma = t / (1 - t), logit(t) = ln sigma, so
SD3's logit-normal t is a log-normal sigma with mean m and std s, drawn the same way."""


@dataclass(frozen=True)
class TrainConfig:
    """The shared trainer's recipe. ``steps`` and ``minutes`` are budgets: training stops at whichever comes
    first (``minutes=None`` means no time limit). ``batch_size`` is per process. ``budget_flops`` records
    the training-FLOP budget that ``steps`` was derived from (``bench sweep --budget-flops``); the trainer
    itself counts steps.

    ``loss_weight`` weights each example's loss by its noise level
    (:data:`bench.process.denoiser.LOSS_WEIGHTS`; ``min_snr_gamma`` is min-SNR's gamma), and ``noise_levels``
    chooses them: uniform timesteps (DDPM), EDM's ln sigma ~ N(p_mean, p_std^2), or SD3's logit(t) ~
    N(logit_mean, logit_std^2), each mapped to real-valued timesteps. ``label_dropout`` is the fraction of a
    class-conditional run's examples trained with the null label (the unconditional model that classifier-free
    guidance needs); unconditional runs ignore it."""

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
class DistillConfig:
    """What a design that learns from a teacher takes from it: ``teacher`` is a complete run folder whose
    EMA model maps ``pairs`` seeded noises x_T to images with deterministic DDIM (eta = 0) in
    ``teacher_steps`` steps (``direct-distilled``, ``reflow``), or takes ODE steps during training
    (``consistency-distilled``; ``progressive-distilled``, whose ``teacher_steps`` is the grid it halves).
    ``teacher_clip_x0`` clips the teacher's x0 estimate to the data range in those steps and pairs; off by
    default, so that a student learns the teacher's probability-flow ODE itself, as the papers distil it
    (the teacher's own sampling, like any run's, clips by default: ``SampleConfig.clip_x0``)."""

    teacher: str | None = None
    teacher_steps: int = ruled(50, POSITIVE_INT)
    pairs: int = ruled(4000, POSITIVE_INT)
    teacher_clip_x0: bool = False

    def __post_init__(self) -> None:
        check_rules(self)


CONSISTENCY_SOLVERS = ("heun", "ddim")
DISTANCES = ("pseudo-huber", "l2")


@dataclass(frozen=True)
class ConsistencyConfig:
    """The consistency designs' settings (:mod:`bench.training.objectives.consistency`); ignored by every
    other design.

    ``levels`` is CD's N (the rho = 7 grid of noise levels; 18 in Song et al.'s CIFAR-10 runs), and
    ``levels_start`` / ``levels_end`` iCT's s0 and s1: its grid starts with N = s0 + 1 levels and N doubles
    over training up to s1 + 1.
    ``teacher_solver`` is CD's ODE step (``heun``: two teacher calls, ``ddim``: one, Euler's step in y),
    ``target_ema`` CD's target-network rate mu, ``distance`` the metric d (LPIPS, CD's choice in the paper,
    needs ImageNet-trained VGG weights, which cannot be had offline; pseudo-Huber is iCT's replacement for
    it), ``huber_c`` its c (None: 0.00054 sqrt(d)), and ``student_init`` whether the CD student starts from
    the teacher's weights (the paper's choice) or from a fresh initialisation.
    Continuous-time consistency training (sCT, :mod:`bench.training.objectives.continuous`) raises the
    weight of its tangent's second term from 0 to 1 over ``tangent_warmup`` steps (0: none) and normalises
    the tangent g as g / (||g|| + ``tangent_c``)."""

    levels: int = ruled(18, Rule(int, low=2))
    levels_start: int = ruled(10, Rule(int, low=2))
    levels_end: int = ruled(1280, Rule(int, low=2))
    teacher_solver: str = "heun"
    target_ema: float = ruled(0.95, Rule(float, low=0, high=1, high_open=True))
    distance: str = "pseudo-huber"
    huber_c: float | None = ruled(None, replace(POSITIVE, optional=True))
    student_init: str = "teacher"
    tangent_warmup: int = ruled(150, Rule(int, low=0))
    tangent_c: float = ruled(0.1, POSITIVE)

    def __post_init__(self) -> None:
        check_rules(self, prefix="consistency ")
        check_choice("teacher_solver", self.teacher_solver, CONSISTENCY_SOLVERS)
        check_choice("distance", self.distance, DISTANCES)
        check_choice("student_init", self.student_init, ("teacher", "random"))
        if self.levels_end < self.levels_start:
            raise ValueError(
                f"levels_end ({self.levels_end}) must be at least levels_start ({self.levels_start})"
            )


DERIVATIVES = ("jvp", "finite-difference")
"""How MeanFlow and sCT take their total derivative along the path: forward-mode differentiation
(``torch.func.jvp``) or a central finite difference of two more forwards (FastGen's and TiM's option, for
networks the JVP cannot run)."""
UNIT = Rule(float, low=0, high=1)


@dataclass(frozen=True)
class FlowMapConfig:
    """The flow-map designs' settings (:mod:`bench.training.objectives.flow_map`); ignored by every other
    design.

    MeanFlow (``meanflow``) draws its two flow times t and r from a logit-normal (``time_mean``,
    ``time_std``; the larger is t) and sets r = t on ``equal_fraction`` of them (there the loss is flow
    matching's), takes du/dt by ``derivative``, and weights each example's squared error e by
    1 / (e + 0.001)^``adaptive_power`` under stop-gradient (the paper's adaptive loss, p = 1; 0 is plain l2).
    Shortcut models (``shortcut``) train flow matching on most of the batch and the self-consistency target
    on ``consistency_fraction`` of it, at steps that are powers of two of 1 / ``shortcut_steps``."""

    equal_fraction: float = ruled(0.75, UNIT)
    time_mean: float = ruled(-0.4, Rule(float))
    time_std: float = ruled(1.0, POSITIVE)
    derivative: str = "jvp"
    adaptive_power: float = ruled(1.0, Rule(float, low=0))
    consistency_fraction: float = ruled(0.25, UNIT)
    shortcut_steps: int = ruled(128, Rule(int, low=2))

    def __post_init__(self) -> None:
        check_rules(self, prefix="flow-map ")
        check_choice("derivative", self.derivative, DERIVATIVES)
        if self.shortcut_steps & (self.shortcut_steps - 1):
            lower = 1 << (self.shortcut_steps.bit_length() - 1)
            raise ValueError(
                f"shortcut_steps must be a power of two (the steps halve down to 1 / shortcut_steps), got "
                f"{self.shortcut_steps}; {lower} or {2 * lower} would do"
            )
