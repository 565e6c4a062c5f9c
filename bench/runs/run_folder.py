"""The run folder ``results/<run-id>/``: the one owner of its layout and its file formats.

It names every file a run leaves, and reads and writes ``config.json``, ``status.json``, ``metrics.json``,
``environment.json`` and ``loss.csv``. The layout of ``metrics.json`` is defined once, by :class:`RunMetrics`
and the sections below: ``bench run`` writes it through them and ``bench compare`` reads it through them,
so a field renamed on one side fails on the other instead of quietly turning into a column of NaNs. Every
write is atomic (:mod:`bench.io`).

Fields added after the first released runs default to None, so folders written before them still read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..io import read_json, write_json_atomic, write_text_atomic
from ..training.checkpoint import CHECKPOINT_NAME

CONFIG_NAME = "config.json"
STATUS_NAME = "status.json"
METRICS_NAME = "metrics.json"
ENVIRONMENT_NAME = "environment.json"
LOSS_NAME = "loss.csv"
EVAL_NAME = "eval.csv"  # quality against training step, with --eval-every
SAMPLES_PNG_NAME = "samples.png"
SAMPLES_NPZ_NAME = "samples.npz"
PAIRS_NAME = "pairs.pt"  # a distilled design's teacher pairs (bench.training.pairs)
CLAIM_NAME = "claim.json"  # who trains the run now (bench.runs.claims)
EXTRA_SAMPLES_DIR = "samples"  # what `bench sample` adds later, beside the run's own files
TENSORBOARD_DIR = "tensorboard"  # the run's TensorBoard event files (bench.runs.tensorboard_log)
RUN_FILES = (
    *(CONFIG_NAME, STATUS_NAME, METRICS_NAME, ENVIRONMENT_NAME),
    *(LOSS_NAME, EVAL_NAME, CHECKPOINT_NAME, PAIRS_NAME, CLAIM_NAME),
)

Scores = dict[str, float]


class MetricsFormatError(ValueError):
    """A ``metrics.json`` that lacks a field the layout requires (damaged, or written by other code)."""


# ------------------------------------------------------------------------------------- metrics layout
@dataclass(frozen=True)
class TrainMetrics:
    steps: int
    images_seen: int
    images_per_s: float | None
    data_wait_s: float
    final_loss: float | None
    stop_reason: str
    train_seconds_total: float
    forward_flops_per_image: float | None = None  # None in runs from before it was measured
    training_flops_per_image: float | None = None  # None in runs from before it was measured: 3x forward
    achieved_flops_per_s: float | None = None
    fraction_of_peak: float | None = None


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """What a run's own sampling and a later ``bench eval`` entry both record beside their sampler."""

    # a class-conditional run's sampling (None for an unconditional one)
    guidance_scale: float | None = None
    guidance_interval: list[float] | None = None
    class_label: int | None = None
    # where the sampler stepped and EDM's churn (None in runs from before grids, and for samplers without)
    grid: str | None = None
    rho: float | None = None
    sigma_max: float | None = None
    sigma_min: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None


@dataclass(frozen=True)
class SampleMetrics(SamplingSettings):
    method: str
    steps: int | None
    eta: float
    n: int
    images_per_s: float | None
    network_evaluations_per_image: int | None = None
    network_evaluations_per_s: float | None = None
    achieved_flops_per_s: float | None = None
    fraction_of_peak: float | None = None
    ema: bool | None = None


@dataclass(frozen=True)
class EvalSample(SamplingSettings):
    """How the samples of a later ``bench eval`` entry were drawn."""

    method: str
    steps: int | None
    eta: float
    n: int
    seed: int
    images_per_s: float | None
    nfe: int | None = None  # network calls per image; None in entries from before it was recorded


@dataclass(frozen=True)
class Evaluation:
    """What scoring a set of samples adds (:func:`bench.evaluation.scoring.score_samples`, plus the NLL
    bound)."""

    quality: Scores | None = None
    references: dict[str, Scores] | None = None
    feature_space: dict[str, Any] | None = None
    eval_config: dict[str, Any] | None = None
    seconds: float | None = None
    nll: dict[str, Any] | None = None
    # standard, Inception-space metrics (bench.metrics.fidelity), with --fid
    fid: float | None = None
    inception_score: dict[str, float] | None = None
    kid_inception: dict[str, float] | None = None
    fid_settings: dict[str, Any] | None = None

    def evaluation_fields(self) -> dict[str, Any]:
        """The fields of :class:`Evaluation` alone, to copy into a RunMetrics or an EvaluationEntry."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(Evaluation)}


@dataclass(frozen=True)
class EvaluationEntry(Evaluation):
    """One later ``bench eval`` of a finished run with another sampler or step count; ``solver_error`` its
    RMS distance to the ODE's converged solution from the same noises (``bench eval --solver-error``)."""

    sample: EvalSample | None = None
    solver_error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_empty(dataclasses.asdict(self))


@dataclass(frozen=True)
class RunMetrics(Evaluation):
    """``metrics.json``: the run's size, speed and hardware, its scores, and later evaluations."""

    run_id: str = ""
    parameters: int | None = None
    image_shape: list[int] | None = None  # None in runs from before sizes were recorded
    train: TrainMetrics | None = None
    sample: SampleMetrics | None = None
    hardware: dict[str, Any] | None = None
    distillation: dict[str, Any] | None = None  # bench.training.pairs.distillation_metrics, for teacher pairs
    # bench.runs.cost.run_cost: own training FLOPs, and a teacher's, counted
    cost: dict[str, Any] | None = None
    phases: dict[str, float] = field(default_factory=dict)
    evaluations: list[EvaluationEntry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, leaving out sections a run did not produce (no ``quality`` with ``--no-eval``)."""
        data = _without_empty({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        data = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in data.items()}
        if self.evaluations:
            data["evaluations"] = [entry.to_dict() for entry in self.evaluations]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunMetrics:
        for name in ("run_id", "parameters", "train", "sample"):
            if name not in data:
                raise MetricsFormatError(f"metrics.json has no {name!r}")
        return cls(
            **_known(cls, data, nested=("train", "sample", "evaluations")),
            train=_section(TrainMetrics, data["train"], "train"),
            sample=_section(SampleMetrics, data["sample"], "sample"),
            evaluations=[
                EvaluationEntry(
                    **_known(EvaluationEntry, entry, nested=("sample",)),
                    sample=_section(EvalSample, entry.get("sample"), f"evaluations[{i}].sample"),
                )
                for i, entry in enumerate(data.get("evaluations", []))
            ],
        )


def _without_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None and v != []}


def _known(kind: type, data: dict[str, Any], nested: tuple[str, ...]) -> dict[str, Any]:
    """The fields of ``kind`` present in ``data``, less the ``nested`` ones the caller builds itself."""
    names = {f.name for f in dataclasses.fields(kind)} - set(nested)
    return {k: v for k, v in data.items() if k in names}


def _section(kind: type, data: Any, where: str) -> Any:
    """``kind`` from a JSON object; a missing required field is a :class:`MetricsFormatError` naming it."""
    if not isinstance(data, dict):
        raise MetricsFormatError(f"metrics.json {where} is not an object")
    required = [
        f.name
        for f in dataclasses.fields(kind)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise MetricsFormatError(f"metrics.json has no {where}.{missing[0]}")
    return kind(**_known(kind, data, nested=()))


# ---------------------------------------------------------------------------------------- the folder
@dataclass(frozen=True)
class RunFolder:
    """One run's folder; its paths and the readers and writers of its files."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def samples_png(self) -> Path:
        return self.path / SAMPLES_PNG_NAME

    @property
    def samples_npz(self) -> Path:
        return self.path / SAMPLES_NPZ_NAME

    @property
    def extra_samples(self) -> Path:
        return self.path / EXTRA_SAMPLES_DIR

    @property
    def pairs(self) -> Path:
        return self.path / PAIRS_NAME

    @property
    def loss_curve(self) -> Path:
        return self.path / LOSS_NAME

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    # config.json ------------------------------------------------------------------------------------
    def is_run(self) -> bool:
        return (self.path / CONFIG_NAME).is_file()

    def write_config(self, config: RunConfig) -> None:
        write_json_atomic(self.path / CONFIG_NAME, config.to_dict())

    def read_config_dict(self) -> dict[str, Any]:
        """config.json as saved: what ``bench compare`` reads without rebuilding the config."""
        if not self.is_run():
            raise FileNotFoundError(f"{str(self.path)!r} is not a run folder: it has no {CONFIG_NAME}")
        return read_json(self.path / CONFIG_NAME)

    def read_config(self) -> RunConfig:
        return RunConfig.from_dict(self.read_config_dict())

    # status.json ------------------------------------------------------------------------------------
    def write_status(self, state: str, **extra: Any) -> None:
        write_json_atomic(self.path / STATUS_NAME, {"state": state, "updated": time.time(), **extra})

    def state(self) -> str | None:
        """The last state written (``training``, ``sampling``, ``evaluating``, ``complete``, ...), or None."""
        path = self.path / STATUS_NAME
        return read_json(path).get("state") if path.is_file() else None

    # environment.json -------------------------------------------------------------------------------
    def write_environment(self, environment: dict[str, Any]) -> None:
        write_json_atomic(self.path / ENVIRONMENT_NAME, environment)

    # metrics.json -----------------------------------------------------------------------------------
    def has_metrics(self) -> bool:
        return (self.path / METRICS_NAME).is_file()

    def write_metrics(self, metrics: RunMetrics) -> None:
        write_json_atomic(self.path / METRICS_NAME, metrics.to_dict())

    def read_metrics(self) -> RunMetrics:
        """The run's metrics; FileNotFoundError (saying the run's state) when it has none yet."""
        if not self.has_metrics():
            raise FileNotFoundError(f"no {METRICS_NAME} yet (state: {self.state() or 'unknown'})")
        return RunMetrics.from_dict(read_json(self.path / METRICS_NAME))

    def add_evaluation(self, entry: EvaluationEntry) -> None:
        """Append a ``bench eval`` result; the run's own numbers are kept as they are."""
        metrics = self.read_metrics()
        self.write_metrics(dataclasses.replace(metrics, evaluations=[*metrics.evaluations, entry]))

    # loss.csv and eval.csv: one row per step logged ------------------------------------------------
    @property
    def eval_curve(self) -> Path:
        return self.path / EVAL_NAME

    def write_loss_curve(self, rows: list[dict]) -> None:
        self._write_curve(LOSS_NAME, rows)

    def read_loss_curve(self) -> list[dict]:
        return self._read_curve(LOSS_NAME)

    def write_eval_curve(self, rows: list[dict]) -> None:
        self._write_curve(EVAL_NAME, rows)

    def read_eval_curve(self) -> list[dict]:
        return self._read_curve(EVAL_NAME)

    def _write_curve(self, name: str, rows: list[dict]) -> None:
        """Every column any row has (a run resumed from a curve written before a column existed, such as
        ``grad_norm``, leaves the older rows' cells empty)."""
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path / name, buf.getvalue())

    def _read_curve(self, name: str) -> list[dict]:
        path = self.path / name
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [
                {k: float(v) if k != "step" else int(v) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)
            ]


def find_runs(paths: list[Path]) -> list[RunFolder]:
    """Every run folder (a folder holding a config.json) at or below ``paths``, sorted."""
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"path {str(path)!r} does not exist")
        candidates = [path / CONFIG_NAME, *path.rglob(CONFIG_NAME)] if path.is_dir() else []
        found.update(c.parent for c in candidates if c.is_file())
    return [RunFolder(p) for p in sorted(found)]
