"""``bench study design``: the design axes EDM (Karras et al. 2022) factors a denoiser into, measured at one
training budget on one backbone:

  prediction target   eps (DDPM), x0, v (Salimans & Ho 2022) and EDM's preconditioned F;
  loss weighting      uniform (each target's own L_simple) and min-SNR-5 (Hang et al. 2023);
  sampler             DDIM (eta 0, the first-order ODE step) and DPM-Solver++(2M) at 10 network calls, and
                      at 50 calls the better of the run's own DDIM (eta 1) and DPM-Solver++(2M);
  grid                DPM-Solver++(2M) and Heun also on the grid the oracle finds best for both (log-SNR,
                      ``python scripts/solver_error.py``), at 10 and 50 calls (Heun's calls are odd: 9, 49).

``bench study flow`` runs the same machinery on the noise path: DDPM (the study's schedule, eps) against flow
matching's velocity on that schedule (the parametrisation alone), rectified flow (the rectified-flow
schedule, velocity, uniform t) and SD3's recipe (the same with logit-normal t), each also with its best
sampler at about 10 calls. It is a study of its own rather than three more rows here because it asks another
question (which noise path): four trainings, the first of which is this study's eps row (uniform weight),
to every digit.

Every design is the ``small`` U-Net trained for the same steps on the same data and seed(s); the runs land
in ``OUT/<denoiser>-<target>[-<weight>]-<schedule>[-<noise levels>]-s<seed>`` and the same command again
skips what is complete, resumes what is half done and scores only what is missing. The report adds
``design.md`` and ``design.csv`` (``flow.md`` and ``flow.csv``): one row per design, with the best sampler at
50 calls (and at about 10 for the flow study), the real-image floor and the mean-image ceiling; a design
column (schedule, loss weight, noise levels) is shown where the designs differ in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ..config import RunConfig, Stepping
from ..process.grids import Grid
from .runner import Study, run_study

STUDY_TARGETS = ("eps", "x0", "v", "edm")
STUDY_WEIGHTS = ("uniform", "min-snr")
FLOW_DESIGNS = (
    ("eps", None, "uniform"),
    ("flow", None, "uniform"),
    ("flow", "rectified-flow", "uniform"),
    ("flow", "rectified-flow", "logit-normal"),
)
"""(target, schedule, noise levels) of the flow study, each with uniform weight: DDPM, the velocity
parametrisation alone on the study's schedule (None: DDPM's linear one by default), rectified flow, and SD3's
recipe (Esser et al. 2024)."""


@dataclass(frozen=True)
class Scoring:
    """One way every design is sampled and scored: a sampler, its steps, DDIM's eta, the grid."""

    method: str
    steps: int
    eta: float = 0.0
    grid: str = "uniform"


BEST_GRID = "log-snr"
"""The grid on which the oracle (scripts/solver_error.py) puts DPM-Solver++(2M) and Heun closest to the exact
endpoint from 30 calls up, on the linear and the cosine schedule."""
FEW_CALLS = (Scoring("ddim", 10, 0.0), Scoring("dpmpp-2m", 10))
"""First- against second-order ODE solver at 10 network calls."""
MANY_CALLS = Scoring("dpmpp-2m", 50)
"""Scored beside the run's own sampling (50-step DDIM, eta 1): the best sampler at 50 calls is the best of
all a design was scored with at 50 calls."""
ON_THE_GRID = (
    Scoring("dpmpp-2m", 10, grid=BEST_GRID),
    Scoring("heun", 5, grid=BEST_GRID),
    Scoring("dpmpp-2m", 50, grid=BEST_GRID),
    Scoring("heun", 25, grid=BEST_GRID),
)
"""The second-order solvers on the better grid, at about 10 and 50 calls (Heun: 9 and 49)."""
ABOUT_10_CALLS = (*FEW_CALLS, *ON_THE_GRID[:2])
"""Every scoring at about 10 calls (Heun's 9), among which the flow study names each design's best."""
SHOWN = {"fd": "FD", "kid_mean": "KID", "precision": "precision", "recall": "recall"}
"""The scores of the best sampler at 50 calls, and their column names."""


def design_configs(base: RunConfig, seeds: list[int]) -> list[RunConfig]:
    """Every target x loss weight x seed, all else from ``base`` (by default the ``small`` U-Net, the
    default run's budget and data)."""
    from ..cluster.sweep import grid

    return grid(
        base,
        denoisers=[base.denoiser],
        schedules=[base.diffusion.schedule],
        seeds=seeds,
        targets=STUDY_TARGETS,
        loss_weights=STUDY_WEIGHTS,
    )


def flow_configs(base: RunConfig, seeds: list[int]) -> list[RunConfig]:
    """The flow study's designs (:data:`FLOW_DESIGNS`) x seed, all else from ``base``."""
    from ..cluster.sweep import grid

    configs = []
    for target, schedule, levels in FLOW_DESIGNS:
        schedules = [schedule or base.diffusion.schedule]
        points = grid(base, denoisers=[base.denoiser], schedules=schedules, seeds=seeds, targets=(target,),
                      loss_weights=("uniform",))  # fmt: skip
        configs += [replace(config, train=replace(config.train, noise_levels=levels)) for config in points]
    return configs


def score_missing(run_dir: Path, base: RunConfig, *, progress: bool) -> None:
    """Score the run with each of FEW_CALLS and MANY_CALLS that its metrics.json does not hold yet, one
    ``bench eval`` per sampler setting (so its reference rows and NLL bound are measured once), each
    deterministic one with its distance to the ODE's converged solution (``--solver-error``)."""
    from ..runs.resample import evaluate_run
    from ..runs.run_folder import RunFolder

    n, seed = base.sample.n, base.seed
    done = {
        key(Scoring(e.sample.method, e.sample.steps, e.sample.eta, e.sample.grid or "uniform"))
        for e in RunFolder(run_dir).read_metrics().evaluations
        if (e.sample.n, e.sample.seed) == (n, seed)
    }
    missing: dict[tuple[str, float, str], list[int]] = {}
    for scoring in (*FEW_CALLS, MANY_CALLS, *ON_THE_GRID):
        if key(scoring) not in done:
            missing.setdefault((scoring.method, scoring.eta, scoring.grid), []).append(scoring.steps)
    for (method, eta, grid), steps in missing.items():
        evaluate_run(run_dir, n=n, method=method, steps=steps, eta=eta, seed=seed, device=base.device,
                     progress=progress, stepping=Stepping(grid=grid), solver_error=True)  # fmt: skip


def key(scoring: Scoring) -> tuple:
    """What tells two scorings apart: eta only for DDIM, the one sampler here that has it."""
    return (scoring.method, scoring.steps, scoring.eta if scoring.method == "ddim" else None, scoring.grid)


def run_design_study(
    base: RunConfig,
    out: Path,
    seeds: list[int],
    *,
    progress: bool = True,
    flow: bool = False,
    jobs: int = 1,
) -> list[Path]:
    """Train (or resume, or skip) every design (the flow study's with ``flow``) into ``out``, score the
    missing samplers, then write ``out/report/`` (the comparison of every run and sampler, quality against
    NFE) and the design table (``design.md``, or ``flow.md`` with its best sampler at about 10 calls)."""
    from ..cluster.sweep import run_id

    def score(run_dir: Path, config: RunConfig, progress: bool) -> None:
        score_missing(run_dir, replace(base, seed=config.seed), progress=progress)

    configs = (flow_configs if flow else design_configs)(base, seeds)
    study = Study(
        designs=[(run_id(config), config) for config in configs],
        score=score,
        tables=lambda out: {"flow" if flow else "design": design_table(out, best_at_few=flow)},
    )
    return run_study(study, out, progress=progress, jobs=jobs)


def design_table(out: Path, *, best_at_few: bool = False) -> pd.DataFrame:
    """One row per design (schedule, target, loss weight, noise levels): FD with DDIM and with
    DPM-Solver++(2M) at 10 calls and of the second-order solvers on the better grid, which sampler is best at
    about 10 calls (with ``best_at_few``) and at 50 and its scores, the NLL bound; means over seeds ± their
    95% interval; then the real-image floor and the mean-image ceiling. A design column the designs share
    is left out."""
    from ..process.sampling import network_calls
    from ..reports import compare

    collection = compare.collect([out])
    if collection.runs.empty:
        raise ValueError(f"no complete run folders under {str(out)!r}")
    table = compare.summarize(collection.runs)
    shown = compare.format_table(table)
    rows = []
    design = ["schedule", "target", "loss_weight", "noise_levels"]
    for (schedule, target, weight, levels), group in table.groupby(design, sort=False):
        row = {"target": target, "schedule": schedule, "loss weight": weight, "noise levels": levels}
        for scoring in (*FEW_CALLS, *ON_THE_GRID):
            nfe = network_calls(scoring.method, scoring.steps)
            at = find(group, scoring)
            row[f"FD at {nfe} NFE, {scoring_label(scoring)}"] = shown.loc[at, "fd"] if at is not None else ""
        if best_at_few:
            few = [find(group, scoring) for scoring in ABOUT_10_CALLS]
            candidates = table.loc[[i for i in few if i is not None and pd.notna(table.loc[i, "fd"])], "fd"]
            best = candidates.idxmin() if len(candidates) else None
            row["best sampler at about 10 NFE"] = sampler_label(table.loc[best]) if best is not None else ""
            row["FD at about 10"] = shown.loc[best, "fd"] if best is not None else ""
        many = network_calls(MANY_CALLS.method, MANY_CALLS.steps)
        candidates = group[(group["nfe"] == many) & group["fd"].notna()]
        best = candidates["fd"].idxmin() if len(candidates) else None
        sampler = sampler_label(table.loc[best]) if best is not None else ""
        row[f"best sampler at {many} NFE"] = sampler
        for metric, label in SHOWN.items():
            row[f"{label} at {many}"] = shown.loc[best, metric] if best is not None else ""
        row["NLL bits/dim"] = shown.loc[group.index[0], "nll_bpd"]
        row["seeds"] = int(group["seeds"].iloc[0])
        rows.append(row)
    many = network_calls(MANY_CALLS.method, MANY_CALLS.steps)
    floor_first = sorted(compare.references(collection.runs).items(), key=lambda item: item[0] != "real")
    for name, values in floor_first:
        reference = {"target": f"reference: {name}"}
        for metric, label in SHOWN.items():
            reference[f"{label} at {many}"] = compare.format_value(values.get(metric, math.nan))
        rows.append(reference)
    frame = pd.DataFrame(rows, dtype=object).fillna("")
    designs = frame.iloc[: len(frame) - len(floor_first)]
    shared = [c for c in ("schedule", "loss weight", "noise levels") if designs[c].nunique() == 1]
    return frame.drop(columns=shared)


def find(group: pd.DataFrame, scoring: Scoring) -> int | None:
    """The index of the group's row sampled as ``scoring`` says (DDIM's eta only for DDIM)."""
    from ..process.sampling import network_calls

    nfe = network_calls(scoring.method, scoring.steps)
    chosen = (group["sampler"] == scoring.method) & (group["nfe"] == nfe)
    chosen &= group["grid"] == Grid(scoring.grid).describe()
    if scoring.method == "ddim":
        chosen &= group["eta"] == scoring.eta
    hits = group.index[chosen]
    return int(hits[0]) if len(hits) else None


def scoring_label(scoring: Scoring) -> str:
    """``ddim, eta 0``, ``dpmpp-2m``, ``heun, log-snr grid``: the sampler, DDIM's eta and a grid other than
    the uniform one."""
    eta = scoring.eta if scoring.method == "ddim" else math.nan
    return sampler_label(
        pd.Series({"sampler": scoring.method, "eta": eta, "grid": Grid(scoring.grid).describe()})
    )


def sampler_label(row: pd.Series) -> str:
    """A table row's sampler as :func:`scoring_label` names it."""
    from ..reports.compare_report import ddim_label, stepping_label

    return row["sampler"] + ddim_label(row["eta"]) + stepping_label(row.get("grid", ""), row.get("churn", ""))
