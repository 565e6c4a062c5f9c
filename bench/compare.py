"""``bench compare``: read every run folder below some paths (never writing to them) into one table, group
runs that differ only by seed (mean and 95% interval), and write the report folder.

A run folder is any folder holding a ``config.json``. A run whose ``metrics.json`` is missing (still
running) or unreadable (damaged) is reported and left out of the table. Metrics are read through
:class:`bench.run_folder.RunMetrics`, the same layout ``bench run`` writes them with.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from scipy import stats

from .config import TrainConfig
from .cost import own_training_flops
from .grids import RHO, Grid
from .run_folder import EvalSample, Evaluation, RunFolder, RunMetrics, SampleMetrics, TrainMetrics, find_runs

DESIGN = [
    *("dataset", "image", "denoiser", "target", "loss_weight", "noise_levels", "schedule", "conditional"),
    *("sampler", "nfe", "eta", "grid", "churn", "guidance", "interval", "class_label", "budget"),
]
"""What makes a design: runs that share all of these are seeds of one design. The sampler's cost is its
network calls per image (NFE), which its step count and kind fix (a guided call counts twice); where it
steps is its ``grid`` ("" for a sampler that walks none) and EDM's ``churn`` its noise ("" for none). A
class-conditional model's samples differ by their guidance scale (NaN for an unconditional model), the
noise levels it applies in (``interval``, "" where it applies everywhere) and the class asked for
(``class_label``, "" for samples of every class in turn)."""
DESCRIPTIVE = ("run", "path", "seed", "sample_steps")
"""Columns that describe a row without being measurements to average."""
CLASS_CEILING = "class-mean-image"
"""The reference row of a class-conditional run's class metrics: each class's mean image."""
HEADLINE = [
    "fid",
    "inception_score",
    "fd",
    "kid_mean",
    "precision",
    "recall",
    "class_entropy",
    "class_accuracy",
    "fd_class_mean",
    "nll_bpd",
    "train_images_per_s",
    "sample_images_per_s",
    "train_pflops",
    "total_pflops",
]
"""What the terminal table shows unless ``--columns`` asks for others (the CSV has every column); a column no
row measured (class accuracy of unconditional runs) is left out."""
TRAINING = TrainConfig()
"""What a run's config.json from before a training field existed trained with."""
SPEED = [
    "parameters",
    "forward_gflops",
    "train_images_per_s",
    "sample_images_per_s",
    "train_fraction_of_peak",
]


@dataclass
class Collection:
    runs: pd.DataFrame
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def flatten(prefix: str, obj: object, out: dict) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), value, out)
    elif isinstance(obj, int | float | str | bool) or obj is None:
        out[prefix] = obj


def numbers(scores: dict | None) -> dict[str, float]:
    """The numeric leaves of a (nested) scores dict, flattened to ``a.b`` keys; flags are not numbers."""
    flat: dict = {}
    flatten("", scores or {}, flat)
    return {k: v for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def run_rows(folder: RunFolder) -> list[dict]:
    """The run's own row, then one row per later ``bench eval`` entry (another sampler or step count)."""
    metrics, config = folder.read_metrics(), folder.read_config_dict()
    row = run_row(folder, metrics, config)
    rows = [row]
    num_timesteps = int(config["diffusion"]["timesteps"])
    for entry in metrics.evaluations:
        rows.append(
            {
                **row,
                "source": "bench eval",
                "sampler": entry.sample.method,
                "sample_steps": entry.sample.steps,
                "nfe": entry.sample.nfe or recorded_nfe(entry.sample.steps, num_timesteps),
                "eta": ddim_eta(entry.sample.method, entry.sample.eta),
                **stepping_columns(entry.sample),
                **guidance_columns(
                    entry.sample.guidance_scale, entry.sample.guidance_interval, entry.sample.class_label
                ),
                "sample_images_per_s": entry.sample.images_per_s,
                **numbers(entry.quality),
                **standard_columns(entry),
            }
        )
    return rows


def standard_columns(scores: Evaluation) -> dict[str, float]:
    """Standard FID, IS and KID (Inception space); NaN where the evaluation did not measure them (a
    ``bench eval`` row must not inherit its run's)."""
    if scores.fid is None:
        return {"fid": math.nan, "inception_score": math.nan, "kid_inception": math.nan}
    return {
        "fid": scores.fid,
        "inception_score": (scores.inception_score or {}).get("mean", math.nan),
        "kid_inception": (scores.kid_inception or {}).get("mean", math.nan),
    }


def run_row(folder: RunFolder, metrics: RunMetrics, config: dict) -> dict:
    """One run as a flat dict: its design (from config.json) and its measurements (from metrics.json)."""
    options = config.get("denoiser_options", {})
    train, sample = metrics.train, metrics.sample
    nfe = sample.network_evaluations_per_image or recorded_nfe(sample.steps, config["diffusion"]["timesteps"])
    row = {
        "run": folder.name,
        "path": str(folder.path),
        "source": "run",
        "dataset": config["dataset"],
        "image": image_label(config, metrics),
        "denoiser": config["denoiser"] + (f"[{options['preset']}]" if "preset" in options else ""),
        "target": target_label(options),
        "loss_weight": loss_weight_label(config["train"]),
        "noise_levels": noise_levels_label(config["train"]),
        "schedule": config["diffusion"]["schedule"]
        + ("+ztsnr" if config["diffusion"].get("zero_terminal_snr") else ""),
        "conditional": bool(config.get("conditional", False)),  # False in configs from before conditioning
        "sampler": sample.method,
        "sample_steps": sample.steps,
        "nfe": nfe,
        "eta": ddim_eta(sample.method, sample.eta),
        **stepping_columns(sample),
        **guidance_columns(sample.guidance_scale, sample.guidance_interval, sample.class_label),
        "budget": budget_label(config["train"]),
        "seed": config["seed"],
        "parameters": metrics.parameters,
        "forward_gflops": (train.forward_flops_per_image or math.nan) / 1e9,
        "train_gflops": (train.training_flops_per_image or math.nan) / 1e9,
        "train_images_per_s": train.images_per_s,
        "sample_images_per_s": sample.images_per_s,
        "train_fraction_of_peak": train.fraction_of_peak,
        "train_images": train.images_seen,
        **cost_columns(metrics, train),
        **numbers(metrics.quality),
        **standard_columns(metrics),
        **{f"distill_{k}": v for k, v in numbers(metrics.distillation).items()},
    }
    row["nll_bpd"] = (metrics.nll or {}).get("bits_per_dim", math.nan)
    return row


def cost_columns(metrics: RunMetrics, train: TrainMetrics) -> dict[str, float]:
    """The run's own training compute and its total with a teacher's counted (:mod:`bench.cost`), in
    PFLOPs; a run from before costs were recorded had no teacher, so both are its training FLOPs."""
    cost = metrics.cost or {}
    own = cost.get("train_flops", own_training_flops(train))
    total = cost.get("total_flops", own)
    return {
        "train_pflops": own / 1e15 if own is not None else math.nan,
        "total_pflops": total / 1e15 if total is not None else math.nan,
    }


def guidance_columns(
    scale: float | None, interval: list[float] | None, class_label: int | None = None
) -> dict[str, float | str]:
    """The guidance and class of one sampling (NaN and "" for an unconditional model's), so that each scale
    and each class asked for is its own design and an evaluation row never shows its run's."""
    return {
        "guidance": float(scale) if scale is not None else math.nan,
        "interval": "{:g}-{:g}".format(*interval) if interval is not None else "",
        "class_label": str(class_label) if class_label is not None else "",
    }


def stepping_columns(sample: SampleMetrics | EvalSample) -> dict[str, str]:
    """Where the sampler stepped (``uniform``, ``karras (rho 7)``, ``log-snr, sigma 0.002-80``; "" for a
    sampler that walks no grid, and ``uniform`` for a grid sampler recorded before grids were) and its EDM
    churn (``40 in sigma 0.05-50, noise 1.003``; "" for none)."""
    grid = ""
    if takes_grid(sample.method):
        kind, rho = sample.grid or "uniform", sample.rho or RHO
        grid = Grid(kind, rho, sample.sigma_max, sample.sigma_min).describe()
    churn = ""
    if sample.s_churn:
        high = f"{sample.s_tmax:g}" if sample.s_tmax is not None else "inf"
        churn = f"{sample.s_churn:g} in sigma {sample.s_tmin or 0:g}-{high}, noise {sample.s_noise or 1:g}"
    return {"grid": grid, "churn": churn}


def takes_grid(method: str) -> bool:
    """Whether ``method`` walks any grid; False for a sampler this installation does not know."""
    from .sampling import SAMPLERS, takes_grid

    return method in SAMPLERS.names() and takes_grid(method)


def recorded_nfe(steps: int | None, num_timesteps: int) -> int:
    """The NFE of a run or evaluation recorded before NFE was: every sampler then made one call per step
    (all T for ancestral)."""
    return steps if steps is not None else num_timesteps


def design_line(config: dict) -> str | None:
    """The run's training design where it is not DDPM's (its target, loss weight, noise levels, a schedule
    that reaches pure noise), for the end-of-run table: ``target flow, schedule rectified-flow, noise levels
    logit-normal(0, 1)``; None for a DDPM design, whose table stays as it always was."""
    options, train, diffusion = config.get("denoiser_options", {}), config["train"], config["diffusion"]
    parts = []
    if "target" in options:
        parts.append(f"target {target_label(options)}")
    if (weight := loss_weight_label(train)) != "uniform":
        parts.append(f"loss weight {weight}")
    if (levels := noise_levels_label(train)) != "uniform":
        parts.append(f"noise levels {levels}")
    if parts or diffusion.get("zero_terminal_snr") or diffusion["schedule"] == "rectified-flow":
        schedule = diffusion["schedule"] + ("+ztsnr" if diffusion.get("zero_terminal_snr") else "")
        parts.append(f"schedule {schedule}")
    return ", ".join(parts) or None


def target_label(options: dict) -> str:
    """The prediction target, with EDM's sigma_data when it was set (``edm (sd 1)``)."""
    target = options.get("target", "default")
    return f"{target} (sd {options['sigma_data']:g})" if "sigma_data" in options else target


def loss_weight_label(train: dict) -> str:
    weight = train.get("loss_weight", TRAINING.loss_weight)
    if weight == "min-snr":
        return f"min-snr-{train.get('min_snr_gamma', TRAINING.min_snr_gamma):g}"
    return weight


def noise_levels_label(train: dict) -> str:
    levels = train.get("noise_levels", TRAINING.noise_levels)
    if levels == "lognormal":
        return f"lognormal({train.get('p_mean', TRAINING.p_mean):g}, {train.get('p_std', TRAINING.p_std):g})"
    if levels == "logit-normal":
        mean, std = train.get("logit_mean", TRAINING.logit_mean), train.get("logit_std", TRAINING.logit_std)
        return f"logit-normal({mean:g}, {std:g})"
    return levels


def ddim_eta(method: str, eta: float) -> float:
    """DDIM's eta is part of the design (0: deterministic, 1: DDPM-like); other samplers have none."""
    return eta if method == "ddim" else math.nan


def image_label(config: dict, metrics: RunMetrics) -> str:
    """The image size the run trained at ("14x14"), which a dataset name alone does not fix; empty when a
    run from before sizes were recorded left it at the dataset's native size."""
    shape = metrics.image_shape
    if shape:
        return f"{shape[-2]}x{shape[-1]}"
    size = config.get("image_size")
    return f"{size}x{size}" if size else ""


def budget_label(train: dict) -> str:
    if train.get("budget_flops"):
        return f"{train['budget_flops']:.2g} FLOPs"
    if train.get("minutes"):
        return f"{train['minutes']:g} min"
    return f"{train['steps']} steps x {train['batch_size']}"


def collect(paths: list[Path]) -> Collection:
    """Read every run below ``paths``; damaged or unfinished runs go to ``skipped`` with the reason."""
    rows, skipped = [], []
    for folder in find_runs(paths):
        try:
            rows.extend(run_rows(folder))
        except (KeyError, ValueError, OSError, TypeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            skipped.append((folder.path, reason))
            warnings.warn(f"skipping {folder.path}: {reason}", stacklevel=2)
    return Collection(pd.DataFrame(rows), skipped)


def references(runs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The reference rows (``real``: the floor; ``mean-image``: the collapse ceiling; for class-conditional
    runs ``class-mean-image``, the ceiling of the class metrics) of each dataset and image size in ``runs``,
    labelled with them when there are several (:func:`reference_rows`)."""
    found: dict[str, dict[str, float]] = {}
    if runs.empty:
        return found
    images = runs["image"] if "image" in runs.columns else pd.Series("", index=runs.index)
    conditional = runs["conditional"] if "conditional" in runs.columns else pd.Series(False, index=runs.index)
    pairs = list(dict.fromkeys(zip(runs["dataset"], images, strict=True)))
    for dataset, image in pairs:
        chosen = (runs["dataset"] == dataset) & (images == image)
        paths = list(dict.fromkeys(runs.loc[chosen, "path"]))
        conditional_paths = list(dict.fromkeys(runs.loc[chosen & conditional.eq(True), "path"]))
        for name, values in reference_rows(paths, conditional_paths).items():
            flat: dict = {}
            flatten("", values, flat)
            label = name if len(pairs) == 1 else f"{name} ({' '.join(filter(None, (dataset, image)))})"
            found[label] = {k: v for k, v in flat.items() if isinstance(v, int | float)}
    return found


def reference_rows(paths: list[str], conditional_paths: list[str]) -> dict[str, dict]:
    """The reference rows saved with the first evaluated run in ``paths``. When that run has no class rows,
    the first conditional run that has them lends its ``class-mean-image`` row and the class metrics' floor
    (the keys its ``real`` row adds), so a table mixing both kinds of run has both ceilings."""
    rows = first_references(paths)
    if CLASS_CEILING not in rows:
        lent = first_references(conditional_paths, having=CLASS_CEILING)
        if lent:
            rows = {**rows, "real": {**lent.get("real", {}), **rows.get("real", {})}}
            rows[CLASS_CEILING] = lent[CLASS_CEILING]
    return rows


def first_references(paths: list[str], having: str | None = None) -> dict[str, dict]:
    """The reference rows of the first run in ``paths`` that has some (and the row ``having``, if given);
    empty when none has."""
    for path in paths:
        refs = RunFolder(Path(path)).read_metrics().references
        if refs and (having is None or having in refs):
            return refs
    return {}


def apply_filters(runs: pd.DataFrame, where: list[str]) -> pd.DataFrame:
    """``key=value`` filters, all of which must hold; an unknown key is an error listing the columns."""
    for clause in where:
        key, sep, value = clause.partition("=")
        if not sep:
            raise ValueError(f"--where expects KEY=VALUE, got {clause!r}")
        if key not in runs.columns:
            raise ValueError(f"unknown column {key!r} in --where; columns: {', '.join(runs.columns)}")
        runs = runs[runs[key].astype(str) == value]
    return runs


def interval95(values: pd.Series) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t); NaN for a single seed."""
    values = values.dropna()
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per design: the mean of every measurement, its 95% half-interval (``<col>_ci95``), seeds."""
    numeric = [
        c for c in runs.columns if c not in {*DESIGN, *DESCRIPTIVE} and pd.api.types.is_numeric_dtype(runs[c])
    ]
    keys = [k for k in DESIGN if k in runs.columns]
    grouped = runs.groupby(keys, dropna=False, sort=False)
    table = grouped[numeric].mean()
    for col in numeric:
        table[f"{col}_ci95"] = grouped[col].apply(interval95)
    table["seeds"] = grouped["seed"].nunique()
    return table.reset_index()


def headline_columns(table: pd.DataFrame) -> list[str]:
    """The HEADLINE columns this table has (KID and class entropy need a classifier feature space)."""
    return [c for c in HEADLINE if c in table.columns and table[c].notna().any()]


def split_constant_design(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """The table without the design columns that are the same in every row, and those shared values: a
    comparison of designs on one dataset and budget need not repeat them on every line."""
    if len(table) < 2:
        return table, {}
    labels = [c for c in DESIGN if c != "denoiser"]  # the row label, and where reference rows are named
    constant = [c for c in labels if c in table.columns and table[c].nunique(dropna=False) == 1]
    # an empty value (no interval, no image size recorded) says nothing, so it is dropped without a word
    shared = {c: table[c].iloc[0] for c in constant if table[c].iloc[0] != ""}
    return table.drop(columns=constant), shared


def select_columns(table: pd.DataFrame, columns: list[str] | None) -> pd.DataFrame:
    if not columns:
        return table
    unknown = [c for c in columns if c not in table.columns]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; columns: {', '.join(table.columns)}")
    # each chosen measurement keeps its 95% interval, and the seed count stays, so a mean is never shown alone
    extra = [f"{c}_ci95" for c in columns if f"{c}_ci95" in table.columns]
    seeds = ["seeds"] if "seeds" in table.columns and "seeds" not in columns else []
    return table[[c for c in DESIGN if c in table.columns and c not in columns] + columns + extra + seeds]


def format_table(table: pd.DataFrame, references: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Means shown as ``mean ± ci`` where several seeds exist; reference rows appended for comparison."""
    shown = table.copy()
    for col in list(shown.columns):
        ci = f"{col}_ci95"
        if ci in shown.columns:
            shown[col] = [with_interval(m, c) for m, c in zip(shown[col], shown[ci], strict=True)]
            shown = shown.drop(columns=ci)
    for name, values in (references or {}).items():
        ref = {c: "" for c in shown.columns}
        ref.update({"denoiser": f"reference: {name}"})
        ref.update({k: format_value(v) for k, v in values.items() if k in shown.columns})
        shown = pd.concat([shown, pd.DataFrame([ref])], ignore_index=True)
    return shown


def numeric_table(table: pd.DataFrame, references: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """The table as numbers for ``comparison.csv``: means, their ``<col>_ci95`` columns and the reference
    rows, so that other tools read values rather than ``mean ± ci`` strings."""
    rows = [
        {"denoiser": f"reference: {name}", **{k: v for k, v in values.items() if k in table.columns}}
        for name, values in (references or {}).items()
    ]
    return pd.concat([table, pd.DataFrame(rows, columns=table.columns)], ignore_index=True) if rows else table


def with_interval(mean: object, ci: object) -> str:
    """``mean ± ci``, or the mean alone where there is no interval (one seed)."""
    has_ci = isinstance(ci, float) and not math.isnan(ci)
    return format_value(mean) + (f" ± {format_value(ci)}" if has_ci else "")


def format_value(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return str(value)
