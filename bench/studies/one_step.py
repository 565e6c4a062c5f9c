"""``bench study one-step``: the seed's question answered with the one-step methods that followed it, on
one network (the small U-Net), one data set, one budget per training and one ruler, with each design's
total compute, teachers counted:

  teacher-edm            the iterative teacher: the U-Net with EDM's preconditioning (so consistency
                         distillation's student can start from its weights, as Song et al. do), scored with
                         DDIM (eta 0), DPM-Solver++(2M) and Heun at 1-50 calls;
  direct                 one call from pure noise on independent pairs (collapses to the mean image);
  direct-distilled       the same on the teacher's DDIM pairs (Luhman & Luhman 2021);
  consistency-distilled  CD (Song et al. 2023) of the teacher, 1, 2 and 4 calls;
  ect                    easy consistency tuning (Geng et al. 2024) from the teacher's weights, 1, 2 and 4
                         calls;
  consistency            iCT (Song & Dhariwal 2023), no teacher, 1, 2 and 4 calls;
  sct                    continuous-time consistency training (Lu & Song 2024), no teacher, 1, 2 and 4 calls;
  flow                   a rectified flow (velocity on the rectified-flow schedule), its Euler calls;
  meanflow, shortcut     the flow maps trained from scratch (Geng et al. 2025; Frans et al. 2024) on the
                         flow's schedule, 1, 2 and 4 jumps of the flow-map sampler;
  reflow                 the 2-rectified flow trained on the flow's own ODE pairs (Liu et al. 2023), 1, 2
                         and 4 Euler calls (DDIM with eta 0 on the flow path);
  reflow-distilled       the one-call student of the reflow (direct-distilled with the flow target).

A new study rather than ``bench study direct`` grown: that one keeps its question (why predicting the image
from pure noise collapses, with the recoverability bound and the eps teacher its figures were measured
with), and this one needs an EDM teacher and a flow chain it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from ..config import RunConfig, Stepping  # noqa: E402
from ..reports.compare_report import save_figure  # noqa: E402
from .budget import Stage, TotalBudget, chain, plan_routes, record_manifest, stages_text, with_stage  # noqa: E402
from .runner import Study, run_study  # noqa: E402


@dataclass(frozen=True)
class OneStepDesign:
    """A design of the study: its plugin and options, its schedule (None: the study's), the design it
    learns from (None: none), and how it is scored: (sampler, eta, grid, step counts)."""

    denoiser: str
    options: dict
    schedule: str | None = None
    teacher: str | None = None
    scorings: tuple[tuple[str, float, str, tuple[int, ...]], ...] = ()


ODE_SCORINGS = (
    ("ddim", 0.0, "uniform", (1, 2, 4, 10, 20, 50)),
    ("dpmpp-2m", 0.0, "uniform", (2, 4, 10, 20, 50)),
    ("dpmpp-2m", 0.0, "log-snr", (2, 4, 10, 20, 50)),
    ("heun", 0.0, "log-snr", (2, 3, 5, 10, 25)),
)
"""The teacher's deterministic samplers, at 1-50 network calls (Heun's N steps are 2N - 1 calls): every
sampler and grid ``bench study design`` scores its designs with (DDIM, DPM-Solver++(2M) on the uniform and
the log-SNR grid, Heun on the log-SNR grid; the run's own DDIM with eta 1 at 50 is its own sampling), so that
the teacher's best here is the best that study would find."""
EULER = (("ddim", 0.0, "uniform", (1, 2, 4, 50)),)
"""A flow's Euler calls: DDIM with eta 0 is Euler's method on the flow path."""
CONSISTENCY = (("consistency", 0.0, "uniform", (1, 2, 4)),)
FLOW_MAP = (("flow-map", 0.0, "uniform", (1, 2, 4)),)
TEACHER, FLOW = "teacher-edm", "flow"
DESIGNS = {
    TEACHER: OneStepDesign("unet", {"target": "edm"}, scorings=ODE_SCORINGS),
    "direct": OneStepDesign("direct", {}),
    "direct-distilled": OneStepDesign("direct-distilled", {}, teacher=TEACHER),
    "consistency-distilled": OneStepDesign(
        "consistency-distilled", {}, teacher=TEACHER, scorings=CONSISTENCY
    ),
    "ect": OneStepDesign("ect", {}, teacher=TEACHER, scorings=CONSISTENCY),
    "consistency": OneStepDesign("consistency", {}, scorings=CONSISTENCY),
    "sct": OneStepDesign("sct", {}, scorings=CONSISTENCY),
    FLOW: OneStepDesign("unet", {"target": "flow"}, schedule="rectified-flow", scorings=EULER),
    "meanflow": OneStepDesign("meanflow", {}, schedule="rectified-flow", scorings=FLOW_MAP),
    "shortcut": OneStepDesign("shortcut", {}, schedule="rectified-flow", scorings=FLOW_MAP),
    "reflow": OneStepDesign("reflow", {}, schedule="rectified-flow", teacher=FLOW, scorings=EULER),
    "reflow-distilled": OneStepDesign(
        "direct-distilled", {"target": "flow"}, schedule="rectified-flow", teacher="reflow"
    ),
}
"""In training order: each teacher before its students."""
PROGRESSIVE_TEACHER_STEPS = (33, 17, 9, 5, 3, 2)
"""Progressive distillation's rounds from the teacher's 33-step DDIM: 17, 9, 5, 3, 2 and 1 calls."""


def progressive_designs(rounds: int) -> dict[str, OneStepDesign]:
    """``rounds`` rounds of progressive distillation, each student teaching the next."""
    if not 0 <= rounds <= len(PROGRESSIVE_TEACHER_STEPS):
        raise ValueError(f"progressive rounds must be in 0..{len(PROGRESSIVE_TEACHER_STEPS)}, got {rounds}")
    designs, teacher = {}, TEACHER
    for r in range(1, rounds + 1):
        name = f"progressive-{r}"
        designs[name] = OneStepDesign("progressive-distilled", {"target": "edm"}, teacher=teacher)
        teacher = name
    return designs


def all_designs(rounds: int) -> dict[str, OneStepDesign]:
    return {**DESIGNS, **progressive_designs(rounds)}


def chosen_routes(rounds: int, routes: list[str] | None) -> list[str]:
    """The routes a study trains: all (None), or those named, each checked."""
    known = list(all_designs(rounds))
    if routes is None:
        return known
    unknown = [r for r in routes if r not in known]
    if unknown:
        raise ValueError(f"unknown route {', '.join(unknown)}; the study's routes are: {', '.join(known)}")
    if len(set(routes)) != len(routes):
        raise ValueError(f"give each route once, got {', '.join(routes)}")
    return [r for r in known if r in routes]


def with_teachers(rounds: int, routes: list[str]) -> dict[str, OneStepDesign]:
    """The designs ``routes`` train, their teachers (and theirs) included, in training order."""
    designs = all_designs(rounds)
    needed = set()
    for route in routes:
        needed.update(chain(route, {name: d.teacher for name, d in designs.items()}))
    return {name: design for name, design in designs.items() if name in needed}


CALLS = (1, 2, 4)
ABOUT = {10: (9, 10), 20: (19, 20), 50: (49, 50)}
"""The teacher's columns beyond 4 calls: Heun's 2N - 1 calls count with the round number above them."""


def run_name(name: str, seed: int, seeds: list[int]) -> str:
    return name if len(seeds) == 1 else f"{name}-s{seed}"


def design_config(
    base: RunConfig, name: str, design: OneStepDesign, seed: int, teacher: Path | None
) -> RunConfig:
    """The run of design ``name`` with ``seed``, learning from the run folder ``teacher``, all else from
    ``base``."""
    diffusion = replace(base.diffusion, schedule=design.schedule or base.diffusion.schedule)
    distill = base.distill
    if teacher is not None:
        distill = replace(distill, teacher=str(teacher))
    if name.startswith("progressive-"):
        distill = replace(distill, teacher_steps=PROGRESSIVE_TEACHER_STEPS[int(name.rsplit("-", 1)[1]) - 1])
    return replace(
        base,
        denoiser=design.denoiser,
        denoiser_options={**base.denoiser_options, **design.options},
        diffusion=diffusion,
        distill=distill,
        seed=seed,
    )


def study_configs(
    base: RunConfig,
    out: Path,
    seeds: list[int],
    rounds: int = 0,
    plans: dict[str, list[Stage]] | None = None,
    routes: list[str] | None = None,
) -> list[tuple[str, RunConfig]]:
    """Every design x seed (and ``rounds`` rounds of progressive distillation), or those ``routes`` need,
    each student taught by its teacher of the same seed, all else from ``base``: each trained for ``base``'s
    steps, or under a total budget the stages its ``plans`` give each route (:func:`plan`)."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"give each seed once, got {', '.join(map(str, seeds)) or 'none'}")
    designs = all_designs(rounds)
    configs = []
    if plans is None:
        for seed in seeds:
            for name, design in with_teachers(rounds, chosen_routes(rounds, routes)).items():
                teacher = out / run_name(design.teacher, seed, seeds) if design.teacher else None
                config = design_config(base, name, design, seed, teacher)
                configs.append((run_name(name, seed, seeds), config))
        return configs
    for seed in seeds:
        added = set()
        for stages in plans.values():
            for stage in stages:
                if stage.run in added:
                    continue
                added.add(stage.run)
                teacher = out / run_name(stage.teacher, seed, seeds) if stage.teacher else None
                config = design_config(base, stage.design, designs[stage.design], seed, teacher)
                configs.append((run_name(stage.run, seed, seeds), with_stage(config, stage)))
    return configs


def plan(
    base: RunConfig, rounds: int, budget: TotalBudget, routes: list[str] | None = None
) -> dict[str, list[Stage]]:
    """Every route's stages (or those of ``routes``) under the total ``budget``
    (:func:`bench.studies.budget.plan_routes`)."""
    chosen = chosen_routes(rounds, routes)
    designs = with_teachers(rounds, chosen)
    configs = {name: design_config(base, name, design, base.seed, None) for name, design in designs.items()}
    return plan_routes(chosen, configs, {name: design.teacher for name, design in designs.items()}, budget)


def design_of(run: str) -> str:
    """The design a run folder name belongs to (``reflow-s1`` -> ``reflow``)."""
    base = run.rsplit("-s", 1)[0] if run.rsplit("-s", 1)[-1].isdigit() else run
    return base


def score_missing(run_dir: Path, base: RunConfig, *, progress: bool) -> None:
    """Score the run with each sampler and step count its design asks for that its metrics.json lacks."""
    from ..runs.resample import evaluate_run
    from ..runs.run_folder import RunFolder

    metrics = RunFolder(run_dir).read_metrics()
    config = RunFolder(run_dir).read_config()
    n, seed = base.sample.n, config.seed
    own = metrics.sample
    done = {(own.method, own.steps, own.eta if own.method == "ddim" else 0.0, own.grid or "uniform")}
    done |= {
        (e.sample.method, e.sample.steps, e.sample.eta if e.sample.method == "ddim" else 0.0,
         e.sample.grid or "uniform")
        for e in metrics.evaluations
        if (e.sample.n, e.sample.seed) == (n, seed)
    }  # fmt: skip
    design = DESIGNS.get(design_of(run_dir.name))
    for method, eta, grid, steps in design.scorings if design is not None else ():
        missing = [s for s in steps if (method, s, eta, grid) not in done]
        if missing:
            evaluate_run(run_dir, n=n, method=method, steps=missing, eta=eta, seed=seed, device=base.device,
                         progress=progress, stepping=Stepping(grid=grid))  # fmt: skip


def mean_and_interval(values: pd.Series) -> tuple[float, float]:
    """The mean over seeds and the half-width of its 95% t-interval (NaN for one seed)."""
    values = values.dropna()
    if values.empty:
        return math.nan, math.nan
    if len(values) < 2:
        return float(values.iloc[0]), math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def shown(mean: float, half: float, digits: int = 1) -> str:
    if math.isnan(mean):
        return ""
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if not math.isnan(half) else "")


def best_fd(runs: pd.DataFrame, calls: tuple[int, ...]) -> pd.DataFrame:
    """Per run: the lowest FD among its samplings with one of ``calls`` network calls, and which sampler."""
    chosen = runs[runs["nfe"].isin(calls) & runs["fd"].notna()]
    best = chosen.loc[chosen.groupby("run")["fd"].idxmin()] if not chosen.empty else chosen
    return best.set_index("run")


def sampler_text(row: pd.Series) -> str:
    grid = row.get("grid", "")
    grid = f", {grid}" if isinstance(grid, str) and grid and not grid.startswith("uniform") else ""
    if row["sampler"] == "ddim":
        return f"ddim eta 0{grid}" if row.get("eta") == 0 else f"ddim{grid}"
    return f"{row['sampler']}{grid}"


def one_step_table(out: Path) -> pd.DataFrame:
    """One row per design: the best FD at 1, 2 and 4 network calls (and the teacher's at about 10, 20 and
    50), the sampler of its 1-call (or lowest-call) score and of its best at about 50, its own training
    compute and its total with its teachers counted; the 1-call FD over the teacher's best 50-call FD; then
    the real-image floor and the mean-image ceiling. Means over seeds ± their 95% interval when there are
    several."""
    from ..reports import compare
    collection = compare.collect([out])
    runs = collection.runs
    if runs.empty:
        raise ValueError(f"no complete run folders under {str(out)!r}")
    runs = runs.assign(design=runs["run"].map(design_of))
    teacher_50 = best_fd(runs[runs["design"] == TEACHER], ABOUT[50])["fd"]
    teacher_50_mean = teacher_50.mean() if len(teacher_50) else math.nan
    stages = stages_text(out)
    rows = []
    for name in [*DESIGNS, *progressive_designs(len(PROGRESSIVE_TEACHER_STEPS))]:
        group = runs[runs["design"] == name]
        if group.empty:
            continue
        row: dict = {"design": name}
        if name.startswith("progressive-"):  # a round: its teacher's calls and its own, and its FD there
            taught = PROGRESSIVE_TEACHER_STEPS[int(name.rsplit("-", 1)[1]) - 1]
            calls = int(group["nfe"].iloc[0])
            row["design"] = f"{name} ({taught} -> {calls} calls)"
            row["FD at its own calls"] = shown(*mean_and_interval(group.groupby("run")["fd"].first()))
        first_sampler = ""
        for calls in CALLS:
            best = best_fd(group, (calls,))
            mean, half = mean_and_interval(best["fd"])
            row[f"FD at {calls} call" + ("s" if calls > 1 else "")] = shown(mean, half)
            if not first_sampler and not best.empty:
                first_sampler = sampler_text(best.iloc[0])
        for about, calls in ABOUT.items():
            best = best_fd(group, calls)
            row[f"FD at {about}"] = shown(*mean_and_interval(best["fd"]))
        one = best_fd(group, (1,))["fd"]
        row["1 call / teacher's best at 50"] = (
            f"{one.mean() / teacher_50_mean:.2f}x" if len(one) and teacher_50_mean > 0 else ""
        )
        row["sampler"] = first_sampler
        best_50 = best_fd(group, ABOUT[50])  # which sampler gave each seed's best at about 50 calls
        row["best at 50: sampler"] = ", ".join(sorted({sampler_text(r) for _, r in best_50.iterrows()}))
        own = group.groupby("run")["train_pflops"].first()
        total = group.groupby("run")["total_pflops"].first()
        row["own PFLOPs"] = f"{own.mean():.3g}"
        row["total PFLOPs"] = f"{total.mean():.3g}"
        row["seeds"] = group["run"].nunique()
        if name in stages:
            row["stages (X: the total budget)"] = stages[name]
        rows.append(row)
    for label, values in sorted(compare.references(runs).items(), key=lambda item: item[0] != "real"):
        fd = values.get("fd", math.nan)
        rows.append({"design": f"reference: {label}", "FD at 1 call": f"{fd:.1f}" if fd == fd else ""})
    frame = pd.DataFrame(rows, dtype=object).fillna("")
    empty = [c for c in frame.columns if c != "design" and (frame[c] == "").all()]
    return frame.drop(columns=empty)


def quality_vs_calls(out: Path, path: Path) -> Path:
    """FD against network calls (log axes): each design's best at each call count, the teacher's curve,
    and the floor and ceiling."""
    from ..reports import compare
    runs = compare.collect([out]).runs
    runs = runs.assign(design=runs["run"].map(design_of))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in DESIGNS:
        group = runs[(runs["design"] == name) & runs["fd"].notna()]
        samplers = {sampler_text(row) for _, row in group.iterrows()}
        for sampler in sorted(samplers):  # a line per sampler: a design's best would mix them
            chosen = group[[sampler_text(row) == sampler for _, row in group.iterrows()]]
            curve = chosen.groupby(["run", "nfe"])["fd"].min().groupby("nfe").mean()
            if len(curve) == 1 and len(samplers) > 1:
                continue  # the run's own sampling beside the scored ones (DDIM with eta 1 at 50 calls)
            label = name if len(samplers) == 1 else f"{name}, {sampler}"
            ax.plot(curve.index, curve.values, "-o" if len(curve) > 1 else "s", label=label, ms=5)
    rounds = runs[runs["design"].isin(list(progressive_designs(len(PROGRESSIVE_TEACHER_STEPS))))]
    rounds = rounds[rounds["fd"].notna()]  # a round's route, not a round trained as a later round's teacher
    if not rounds.empty:  # one point per round: together, the curve of progressive distillation
        curve = rounds.groupby("nfe")["fd"].mean()
        ax.plot(curve.index, curve.values, "-^", label="progressive-distilled (a round per point)", ms=5)
    for label, values in compare.references(runs).items():
        if "fd" in values:
            ax.axhline(values["fd"], color="k", ls=":" if label == "real" else "--", lw=1,
                       label=f"reference: {label}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network calls per image (NFE)")
    ax.set_ylabel("FD (lower is better)")
    ax.set_title("One-step designs against their teachers, quality against network calls")
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def run_one_step_study(
    base: RunConfig,
    out: Path,
    seeds: list[int],
    *,
    rounds: int = 0,
    budget: TotalBudget | None = None,
    routes: list[str] | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> list[Path]:
    """Train (or resume, or skip) every design x seed into ``out`` (or what ``routes`` need), teachers
    first, and ``rounds`` rounds of progressive distillation, each for ``base``'s steps or, with a total
    ``budget``, every route's stages at their parts of it; score each at the calls its design asks for, then
    write ``out/report/`` with one_step.md, one_step_paired.md (each route's one call against the best over
    the seeds) and quality_vs_calls.png. Bad input raises ValueError before anything is written."""
    plans = plan(base, rounds, budget, routes) if budget is not None else None
    designs = study_configs(base, out, seeds, rounds, plans, routes)
    record_manifest(out, budget, plans)

    def score(run_dir: Path, config: RunConfig, progress: bool) -> None:
        score_missing(run_dir, base, progress=progress)

    study = Study(
        designs=designs,
        score=score,
        tables=lambda out: {"one_step": one_step_table(out), "one_step_paired": one_call_paired(out)},
        figures=lambda report: [quality_vs_calls(out, report / "quality_vs_calls.png")],
    )
    return run_study(study, out, progress=progress, jobs=jobs)


def one_call_paired(out: Path) -> pd.DataFrame:
    """Each route's best FD at one network call over the seeds: its mean with its 95% interval and its paired
    difference to the best route's over the seeds both have, an order read only where that interval excludes
    zero (:func:`bench.reports.paired.versus_best`)."""
    from ..reports import compare
    from ..reports.paired import versus_best

    runs = compare.collect([out]).runs
    runs = runs.assign(design=runs["run"].map(design_of))
    rows = []
    for name in all_designs(len(PROGRESSIVE_TEACHER_STEPS)):
        best = best_fd(runs[runs["design"] == name], (1,))
        for _, best_row in best.iterrows():
            rows.append({"design": name, "seed": int(best_row["seed"]), "value": float(best_row["fd"])})
    table = versus_best(pd.DataFrame(rows, columns=["design", "seed", "value"]))
    return table.rename(columns={"design": "route", "mean": "FD at 1 call"})
