"""The report folder of ``bench compare``: the table as CSV and Markdown, and the figures a reader needs
(sample montage, quality against training compute with the Pareto front, quality against network calls per
image, quality against the guidance scale of class-conditional runs, loss curves). Figures are written
atomically like everything else."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from ..io import write_bytes_atomic, write_text_atomic  # noqa: E402
from ..runs.run_folder import RunFolder  # noqa: E402


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def save_figure(fig: plt.Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def design_label(row: pd.Series, *, data: bool = False) -> str:
    """``unet (x0) / cosine / ddim``, prefixed with the dataset and image size when ``data`` (a report
    that mixes several of them), with the loss weighting and noise levels when they are not DDPM's, and a
    class-conditional model's guidance (``unet conditional / linear / ddim, guidance 2 on sigma 0.3-5``)."""
    label = model_label(row) + f" / {row['sampler']}"
    if row.get("source", "run") != "run":
        label += f" {row['nfe']:g} NFE" + ddim_label(row.get("eta", math.nan))
    label += stepping_label(row.get("grid", ""), row.get("churn", ""))
    label += guidance_label(row.get("guidance", math.nan), row.get("interval", ""))
    label += class_label(row.get("class_label", ""))
    if data:
        label = " ".join(filter(None, (row.get("dataset"), row.get("image"), label)))
    return label


def model_label(row: pd.Series) -> str:
    """``unet (edm) min-snr-5 / linear``: what was trained, without how it is sampled."""
    target = "" if row.get("target") in (None, "default") else f" ({row['target']})"
    training = [row.get(k) for k in ("loss_weight", "noise_levels") if row.get(k) not in (None, "uniform")]
    if is_true(row.get("conditional", False)):
        training.append("conditional")
    return f"{row['denoiser']}{target}{''.join(f' {t}' for t in training)} / {row['schedule']}"


def ddim_label(eta: object) -> str:
    return f", eta {eta:g}" if isinstance(eta, float) and not math.isnan(eta) else ""


def stepping_label(grid: object, churn: object) -> str:
    """``, karras (rho 7) grid, churn 40 in sigma 0.05-50, noise 1``: a grid other than the uniform one,
    and EDM's churn where there is some; empty for today's sampling."""
    label = f", {grid} grid" if isinstance(grid, str) and grid not in ("", "uniform") else ""
    return label + (f", churn {churn}" if isinstance(churn, str) and churn else "")


def guidance_label(scale: object, interval: object = "") -> str:
    """``, guidance 2 on sigma 0.3-5`` for a conditional model's sampling; empty for an unconditional one."""
    if not isinstance(scale, int | float) or math.isnan(scale):
        return ""
    return f", guidance {scale:g}" + interval_label(interval)


def class_label(label: object) -> str:
    """``, class 3`` for samples all of one class; empty for samples of every class in turn."""
    return f", class {label}" if isinstance(label, str) and label else ""


def interval_label(interval: object) -> str:
    return f" on sigma {interval}" if isinstance(interval, str) and interval else ""


def is_true(flag: object) -> bool:
    """A flag column's value as pandas hands it back (a NumPy bool, or NaN in a row that lacks it)."""
    return isinstance(flag, bool | np.bool_) and bool(flag)


def montage(runs: pd.DataFrame, path: Path) -> Path | None:
    """One tile per design: the sample grid of its first seed, titled with the design (a run's own samples
    only; later ``bench eval`` entries keep no grid)."""
    own = runs[runs["source"] == "run"] if "source" in runs.columns else runs
    firsts = own.sort_values("seed").groupby("design", sort=False).head(1)
    tiles = [(r["design"], RunFolder(r["path"]).samples_png) for _, r in firsts.iterrows()]
    tiles = [(label, p) for label, p in tiles if p.is_file()]
    if not tiles:
        return None
    cols = min(3, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, png) in zip(axes.flat, tiles, strict=False):
        ax.imshow(Image.open(png), cmap="gray")
        ax.set_title(label, fontsize=9)
    fig.suptitle("Samples of each design (first seed)")
    return save_figure(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by another with less compute and a lower (better) metric."""
    front, best = [], math.inf
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def quality_vs_compute(runs: pd.DataFrame, metric: str, path: Path) -> Path | None:
    data = runs.dropna(subset=[metric, "train_compute"])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    tflop = data["train_compute"] / 1e12
    for design, group in data.assign(tflop=tflop).groupby("design", sort=False):
        ax.scatter(group["tflop"], group[metric], label=design, s=30)
    front = pareto_front(list(zip(tflop, data[metric], strict=True)))
    ax.plot(*zip(*front, strict=True), "k--", lw=1, label="Pareto front")
    if tflop.max() > 10 * tflop.min():
        ax.set_xscale("log")
    else:  # a FLOP-budget sweep puts every run at (nearly) one compute: a linear axis keeps labels legible
        ax.set_xlim(0.8 * tflop.min(), 1.2 * tflop.max())
    ax.set_xlabel("training compute, TFLOP (images seen x forward+backward FLOPs per image)")
    ax.set_ylabel(f"{metric} (lower is better)")
    ax.set_title("Sample quality against training compute (one point per run)")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def nfe_lines(data: pd.DataFrame, column: str) -> list[tuple[str, pd.Series]]:
    """``column`` against network calls per image, one line per design, sampler and grid (and churn) and per
    guidance scale and interval (which change the NFE too): only the lines with two or more points."""
    data = data.dropna(subset=[column, "nfe"])
    if data.empty:
        return []
    data = data.assign(model=data.apply(model_label, axis=1), eta=data.get("eta", math.nan))
    shared = ("dataset", "image", "model", "sampler", "eta", "grid", "churn", "guidance", "interval")
    shared += ("class_label",)
    keys = [k for k in shared if k in data.columns]
    lines = []
    for key, group in data.groupby(keys, dropna=False, sort=False):
        mean = group.groupby("nfe")[column].mean()
        if len(mean) > 1:
            values = dict(zip(keys, key, strict=True))
            label = f"{values['model']} / {values['sampler']}" + ddim_label(values["eta"])
            label += stepping_label(values.get("grid", ""), values.get("churn", ""))
            label += guidance_label(values.get("guidance"), values.get("interval"))
            lines.append((label + class_label(values.get("class_label")), mean))
    return lines


def quality_vs_nfe(runs: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """``metric`` against network calls per image (:func:`nfe_lines`, from the run's own sampling and
    ``bench eval`` entries) and, where ``bench eval --solver-error`` measured it, beside it each
    deterministic sampler's RMS distance to the ODE's converged solution, which judges the solver rather than
    the images; None unless some line has two or more points."""
    panels = [(metric, f"{metric} (lower is better)", "Sample quality against network calls")]
    if "solver_rms" in runs:
        panels.append(("solver_rms", "RMS to the ODE's solution (lower is better)", "Solver error"))
    drawn = [(column, label, title, nfe_lines(runs, column)) for column, label, title in panels]
    drawn = [panel for panel in drawn if panel[3]]
    if not drawn or drawn[0][0] != metric:
        return None
    many = len(drawn[0][3]) > 8  # a study's dozens of lines: the legend beside the axes, not over the lines
    width = (11 if many else 7) + 5 * (len(drawn) - 1)
    fig, axes = plt.subplots(1, len(drawn), figsize=(width, 5 if many else 4.5), squeeze=False)
    colours = plt.get_cmap("tab20").colors
    styles = {label: i for i, (label, _) in enumerate(drawn[0][3])}
    for ax, (column, ylabel, title, lines) in zip(axes[0], drawn, strict=True):
        for label, mean in lines:
            i = styles.setdefault(label, len(styles))
            style = ("-", "--", ":")[i // len(colours) % 3]
            ax.plot(mean.index, mean.values, marker="o", linestyle=style, color=colours[i % len(colours)],
                    label=label)  # fmt: skip
        values = runs.dropna(subset=[column, "nfe"])[column]
        ax.set_xscale("log")
        if values.min() > 0 and values.max() > 10 * values.min():
            ax.set_yscale("log")  # a tenfold spread: the good designs would be a flat line at the bottom
        ax.set_xticks(*spaced_ticks(sorted({nfe for _, mean in lines for nfe in mean.index})))
        ax.minorticks_off()
        ax.set_xlabel("network function evaluations per image (NFE)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    last = axes[0][-1]
    if many:
        last.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        last.legend(fontsize=7)
    return save_figure(fig, path)


def spaced_ticks(calls: list[float]) -> tuple[list[float], list[str]]:
    """Tick positions at every NFE, labelled only where the label does not run into the previous one on
    a log axis (9 and 10 calls side by side, 49 beside 50)."""
    labels, last = [], None
    for nfe in calls:
        keep = last is None or math.log10(nfe) - math.log10(last) > 0.08
        labels.append(f"{nfe:g}" if keep else "")
        last = nfe if keep else last
    return calls, labels


GUIDANCE_PANELS = [
    ("precision", "precision (higher is better)"),
    ("recall", "recall (higher is better)"),
    ("class_accuracy", "class accuracy (higher is better)"),
]


def guidance_lines(runs: pd.DataFrame, columns: list[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """One line per design of a conditional model (everything but the guidance scale, and the NFE that the
    scale changes): its label, its guidance interval ("" for everywhere) and the seeds' mean of ``columns``
    at each measured scale; only lines with two or more scales. Scale 1 guides nowhere, so the design's
    unguided point also starts each of its interval lines."""
    data = runs[runs["guidance"].notna()]
    data = data.assign(model=data.apply(model_label, axis=1), interval=data["interval"].fillna(""))
    shared = ("dataset", "image", "model", "budget", "sampler", "sample_steps", "eta", "grid", "churn")
    keys = [k for k in shared if k in data.columns]
    varying = [k for k in ("dataset", "image", "budget") if k in data.columns and data[k].nunique() > 1]
    lines = []
    for _, design in data.groupby(keys, dropna=False, sort=False):
        label = sampling_label(design.iloc[0], varying)
        unguided = design[(design["guidance"] == 1) & (design["interval"] == "")]
        for interval, line in design.groupby("interval", sort=False):
            if interval:
                line = pd.concat([unguided, line])
            if line["guidance"].nunique() > 1:
                lines.append((label, interval, line.groupby("guidance")[columns].mean()))
    return lines


def sampling_label(row: pd.Series, prefix: list[str]) -> str:
    """``unet conditional / linear / ddim 20 steps, eta 1``, after the values of the ``prefix`` columns."""
    steps = row.get("sample_steps")
    steps = f" {float(steps):g} steps" if pd.notna(steps) else ""
    sampling = f"{row['model']} / {row['sampler']}{steps}" + ddim_label(row.get("eta", math.nan))
    sampling += stepping_label(row.get("grid", ""), row.get("churn", ""))
    return " ".join([*(str(row[k]) for k in prefix), sampling])


def quality_vs_guidance(runs: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """``metric``, precision, recall and class accuracy against the classifier-free guidance scale: one
    line per conditional design (dashed where guidance applies on an interval of noise levels only), the
    mean over seeds at each measured scale; None unless some design was measured at two or more scales."""
    if "guidance" not in runs.columns:
        return None
    panels = [(metric, f"{metric} (lower is better)"), *GUIDANCE_PANELS]
    columns = list(dict.fromkeys(c for c, _ in panels if c in runs.columns))
    lines = guidance_lines(runs, columns) if columns else []
    if not lines:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True)
    palette = plt.get_cmap("tab10")
    designs = list(dict.fromkeys(label for label, _, _ in lines))
    scales = sorted({scale for _, _, mean in lines for scale in mean.index})
    for ax, (column, title) in zip(axes.flat, panels, strict=True):
        for label, interval, mean in lines:
            values = mean[column].dropna() if column in mean else ()
            if len(values):
                colour = palette(designs.index(label) % palette.N)
                name = label + (", guided" + interval_label(interval) if interval else "")
                ax.plot(values.index, values.values, "o--" if interval else "o-", color=colour, label=name)
        if not ax.lines:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        elif column == metric:  # distances of designs that differ by orders of magnitude
            ax.set_yscale("log")
        ax.set_ylabel(title)
        ax.set_xticks(scales, [f"{scale:g}" for scale in scales])
    for ax in axes[1]:
        ax.set_xlabel("classifier-free guidance scale (1: plain conditional)")
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[0]))
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Sample quality against the guidance scale (mean over seeds)")
    fig.tight_layout()
    return save_figure(fig, path)


def quality_vs_training_step(runs: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """``metric`` of the EMA model during training (``eval.csv``, from ``--eval-every``), one line per run."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for _, row in runs.drop_duplicates("path").iterrows():
        csv = RunFolder(row["path"]).eval_curve
        if csv.is_file():
            curve = pd.read_csv(csv)
            if metric in curve:
                label = f"{row['design']} s{row['seed']}"
                ax.plot(curve["step"], curve[metric], "o-", ms=3, lw=1, label=label)
                drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{metric} of the EMA model (lower is better), small sample")
    ax.set_title("Sample quality during training")
    ax.legend(fontsize=6)
    return save_figure(fig, path)


def loss_curves(runs: pd.DataFrame, path: Path) -> Path | None:
    """One colour per design and one line style per seed, so a legend of many runs stays unambiguous."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    designs = list(dict.fromkeys(runs["design"]))
    palette = plt.get_cmap("tab10" if len(designs) <= 10 else "tab20")
    styles = ["-", "--", ":", "-."]
    seeds = sorted(dict.fromkeys(runs["seed"]))
    drawn = 0
    for _, row in runs.drop_duplicates("path").iterrows():
        csv = RunFolder(row["path"]).loss_curve
        if csv.is_file():
            curve = pd.read_csv(csv)
            ax.plot(
                curve["step"],
                curve["loss"],
                lw=1,
                color=palette(designs.index(row["design"]) % palette.N),
                ls=styles[seeds.index(row["seed"]) % len(styles)],
                label=f"{row['design']} s{row['seed']}",
            )
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (MSE on the declared target)")
    ax.set_title("Training loss")
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def write_report(
    out: Path, runs: pd.DataFrame, numeric: pd.DataFrame, shown: pd.DataFrame, metric: str
) -> list[Path]:
    """Write comparison.csv (``numeric``), comparison.md (``shown``, formatted) and the figures into
    ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    runs = runs.copy()
    data_columns = [c for c in ("dataset", "image") if c in runs.columns]
    mixed = len(runs[data_columns].drop_duplicates()) > 1 if data_columns else False
    runs["design"] = runs.apply(design_label, axis=1, data=mixed)
    # forward+backward FLOPs measured per run; 3x forward for runs recorded before that was measured
    per_image = (
        runs["train_gflops"].fillna(3 * runs["forward_gflops"])
        if "train_gflops" in runs
        else (3 * runs["forward_gflops"])
    )
    runs["train_compute"] = runs["train_images"] * per_image * 1e9
    written = [
        write_text_atomic(out / "comparison.csv", numeric.to_csv(index=False)),
        write_text_atomic(out / "comparison.md", markdown_table(shown)),
    ]
    for fn, name in (
        (lambda p: montage(runs, p), "samples.png"),
        (lambda p: quality_vs_compute(runs, metric, p) if metric in runs else None, "quality_vs_compute.png"),
        (lambda p: quality_vs_nfe(runs, metric, p) if metric in runs else None, "quality_vs_nfe.png"),
        (lambda p: quality_vs_guidance(runs, metric, p), "quality_vs_guidance.png"),
        (lambda p: loss_curves(runs, p), "loss_curves.png"),
        (lambda p: quality_vs_training_step(runs, metric, p), "quality_vs_training_step.png"),
    ):
        path = fn(out / name)
        if path is not None:
            written.append(path)
    return written


def write_folder_report(source: Path, out: Path, metric: str = "fd") -> list[Path]:
    """The report of every complete run below ``source``, as ``bench compare SOURCE --out OUT`` writes it."""
    from . import compare
    collection = compare.collect([source])
    if collection.runs.empty:
        raise ValueError(f"no complete run folders under {str(source)!r}")
    table = compare.summarize(collection.runs)
    refs = compare.references(collection.runs)
    numeric, shown = compare.numeric_table(table, refs), compare.format_table(table, refs)
    return write_report(out, collection.runs, numeric, shown, metric)
