"""A run as rows of one table: its design columns (from config.json) and its measurements (from
metrics.json), one row for its own sampling and one per later ``bench eval``. ``bench compare`` tabulates
these rows and TensorBoard's HParams table shows the same design and headline scores, so both read a run
the same way."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..config import RunConfig, TrainConfig
from ..config.run import upgrade
from ..process.grids import RHO, Grid
from .cost import own_training_flops
from .run_folder import EvalSample, Evaluation, RunFolder, RunMetrics, SampleMetrics, TrainMetrics

DESIGN = [
    *("dataset", "image", "denoiser", "target", "loss_weight", "noise_levels", "schedule", "conditional"),
    *("sampler", "nfe", "eta", "grid", "churn", "guidance", "interval", "class_label", "budget", "settings"),
]
"""What makes a design: runs that share all of these are seeds of one design. The sampler's cost is its
network calls per image (NFE), which its step count and kind fix (a guided call counts twice); where it
steps is its ``grid`` ("" for a sampler that walks none) and EDM's ``churn`` its noise ("" for none). A
class-conditional model's samples differ by their guidance scale (NaN for an unconditional model), the
noise levels it applies in (``interval``, "" where it applies everywhere) and the class asked for
(``class_label``, "" for samples of every class in turn). ``settings`` names every other setting that
changes the trained weights or the samples where it is not its default (:func:`settings_label`)."""
COLUMN_FIELDS = {
    "dataset": ("dataset",),
    "image": ("image_size",),
    "denoiser": ("denoiser", "denoiser_options.preset"),
    "target": ("denoiser_options.target", "denoiser_options.sigma_data"),
    "loss_weight": ("train.loss_weight", "train.min_snr_gamma"),
    "noise_levels": (
        *("train.noise_levels", "train.p_mean", "train.p_std", "train.logit_mean", "train.logit_std"),
    ),
    "schedule": ("diffusion.schedule", "diffusion.zero_terminal_snr"),
    "conditional": ("conditional",),
    "sampler": ("sample.method",),
    "nfe": ("sample.steps",),
    "eta": ("sample.eta",),
    "grid": ("sample.grid", "sample.rho", "sample.sigma_max", "sample.sigma_min"),
    "churn": ("sample.s_churn", "sample.s_tmin", "sample.s_tmax", "sample.s_noise"),
    "guidance": ("sample.guidance_scale",),
    "interval": ("sample.guidance_interval",),
    "class_label": ("sample.class_label",),
    "budget": ("train.steps", "train.minutes", "train.budget_flops", "train.batch_size"),
}
"""The config fields (dotted paths into config.json) that each design column of their own is made from."""
NON_DESIGN = (
    *("seed", "data_root", "device", "channels_last", "fused_norm", "tune_malloc", "tf32", "tensorboard"),
    *("evaluate", "eval_every", "fid", "inception_weights"),
    *("train.compile", "train.checkpoint_every", "train.log_every", "sample.n", "sample.batch_size"),
    "sample.given",
)
"""The config fields that change neither the trained weights nor the samples' distribution: the seed (the
axis a design's runs are averaged over), where data lives, how fast the same computation runs (the device,
memory layout, fused kernels, TF32, compilation: floating-point rounding only), what is logged, how
many samples are scored and in which batches, and which sampling settings were typed rather than left to
the design (the sampling itself is in the columns). Every other field is part of the design: a column of its
own (:data:`COLUMN_FIELDS`) or named in ``settings``."""
DEFAULTS = RunConfig().to_dict()
OWN_COLUMN_OR_NONE = {path for paths in COLUMN_FIELDS.values() for path in paths} | set(NON_DESIGN)
"""The config fields the settings column leaves out: they have a column of their own, or change nothing."""
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
                "solver_rms": (entry.solver_error or {}).get("rms", math.nan),
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


def leaves(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config's fields by dotted path (``train.lr``); the denoiser's options are leaves each."""
    found: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            found.update(leaves(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


DEFAULT_LEAVES = leaves(DEFAULTS)


def settings_label(config: dict[str, Any]) -> str:
    """Every design field without a column of its own where the run's value is not the default, by its
    name (``lr=0.0005, ema_decay=0.9999, teacher=unet-edm, teacher_solver=ddim``; a teacher by its run
    folder's name); "" when all are at their defaults. A field missing from an older config.json had its
    default."""
    parts = []
    for path, value in sorted(leaves(upgrade(config)).items()):
        default = DEFAULT_LEAVES.get(path, None if path.startswith("denoiser_options.") else value)
        if path in OWN_COLUMN_OR_NONE or value == default:
            continue
        name = path.rsplit(".", 1)[-1]
        if path == "distill.teacher" and value is not None:
            value = Path(value).name
        parts.append(f"{name}={format_setting(value)}")
    return ", ".join(parts)


def format_setting(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "(" + ",".join(format_setting(v) for v in value) + ")"
    return str(value)


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
        "settings": settings_label(config),
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
    """The run's own training compute and its total with a teacher's counted (:mod:`bench.runs.cost`), in
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
    from ..process.sampling import SAMPLERS, takes_grid

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
