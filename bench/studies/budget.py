"""One total budget for every route of a study: a route's teachers, the pairs they make and the teacher calls
made during training are paid from the same X FLOPs as the student's own training, so that a one-call
student of a teacher is compared with a teacher-free design at equal total compute.

A route is a chain of trainings (its stages): ``direct`` is one stage; ``direct-distilled`` is the teacher,
then the student; ``reflow-distilled`` is the flow, its reflow, then the one-call student. The rule that
splits X over the stages is one setting, the teacher's share s (:data:`TEACHER_SHARE`): the first stage
gets s X and the rest of the chain splits (1 - s) X the same way, so a two-stage route is (s, 1 - s) and a
three-stage one (s, s (1 - s), (1 - s)^2). The first stage of every route with a teacher is then the same
training (the teacher at s X), trained once per seed and counted in full in each route that uses it.

A stage that makes pairs (direct-distilled, reflow) spends at most ``pair_share`` of its part on them: the
configured number of pairs where they fit, fewer where they do not. The stages' optimizer steps follow from
their counted FLOPs per step (the network's forward and backward per image, the objective's extra forwards,
the teacher calls; :func:`bench.runs.cost.run_cost` records the same sum), and the last stage of a route
gets what its earlier stages left, so a route's recorded total is X within half of one of its last stage's
steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..config import RunConfig
from ..io import read_json, write_json_atomic

TEACHER_SHARE = 0.25
"""The default teacher's share, measured (docs/one-step.md, "The teacher's share"): at half the default
run's training as the total, the one-call FD of consistency distillation and of direct-distilled with the
teacher at 0.25, 0.5 and 0.75 of it; 0.25 gave the lowest geometric mean of the two (CD, which starts from
the teacher's weights, needs its own steps most), 0.5 the better direct-distilled alone."""
PAIR_SHARE = 0.5
"""At most this fraction of a stage's part makes its teacher's pairs (the pairs and the training on them
get half each where the configured pairs would take more)."""


@dataclass(frozen=True)
class TotalBudget:
    """X training FLOPs per route, split over its stages by ``teacher_share`` (see the module's note)."""

    flops: float
    teacher_share: float = TEACHER_SHARE
    pair_share: float = PAIR_SHARE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.flops) and self.flops > 0):
            raise ValueError(f"a total budget must be a positive number of FLOPs, got {self.flops!r}")
        for name, share in (("teacher share", self.teacher_share), ("pair share", self.pair_share)):
            if not 0 < share < 1:
                raise ValueError(f"the {name} must lie strictly between 0 and 1, got {share!r}")

    def to_dict(self) -> dict[str, float]:
        return {"flops": self.flops, "teacher_share": self.teacher_share, "pair_share": self.pair_share}


def stage_fractions(stages: int, share: float) -> list[float]:
    """The fraction of X each of a chain's ``stages`` gets: s, then (1 - s) split the same way; they sum
    to 1."""
    fractions, rest = [], 1.0
    for _ in range(stages - 1):
        fractions.append(rest * share)
        rest *= 1 - share
    return [*fractions, rest]


@dataclass(frozen=True)
class StepCost:
    """What one stage's training costs: FLOPs per optimizer step (the network's training FLOPs per image,
    its objective's extra forwards and the teacher calls, times the batch), and per pair its teacher makes
    (the teacher's forward FLOPs x its DDIM steps; 0 for a stage without pairs)."""

    per_step: float
    per_pair: float


@dataclass(frozen=True)
class Stage:
    """One training of a route: its run folder name (without the seed), the design it trains, its teacher's
    run name, the fraction of X it was given, and what it was planned to spend: its part in FLOPs (pairs and
    training), its steps and pairs (None without pairs), and the FLOPs those come to."""

    run: str
    design: str
    teacher: str | None
    fraction: float
    part_flops: float
    steps: int
    pairs: int | None
    flops: float


def stage_name(design: str, fraction: float, last: bool) -> str:
    """A route's last stage is named by the route; an earlier one by its design and its fraction of X (the
    same name in every route that shares it)."""
    return design if last else f"{design}-x{fraction:.4g}"


def chain(route: str, teachers: Mapping[str, str | None]) -> list[str]:
    """The designs a route trains, its first teacher first (``teachers`` maps a design to its teacher)."""
    names = [route]
    while (teacher := teachers[names[0]]) is not None:
        names.insert(0, teacher)
    return names


def plan_routes(
    routes: list[str],
    configs: Mapping[str, RunConfig],
    teachers: Mapping[str, str | None],
    budget: TotalBudget,
    cost: Callable[[RunConfig, RunConfig | None], StepCost] | None = None,
) -> dict[str, list[Stage]]:
    """Each route's stages with their steps and pairs. ``configs`` maps each design the routes train to its
    config (teacher path aside), ``teachers`` a design to its teacher design; ``cost(config,
    teacher_config)`` is a stage's :class:`StepCost` (by default counted on the networks:
    :func:`counted_step_cost`). Raises ValueError, naming the route, the stage and the smallest total that
    trains every stage, when a stage cannot afford one step (or, making pairs, one batch of them)."""
    cost = cost or counted_step_cost
    costs = {}
    for route in routes:
        designs = chain(route, teachers)
        for teacher, design in zip([None, *designs[:-1]], designs, strict=True):
            if design not in costs:
                costs[design] = cost(configs[design], configs[teacher] if teacher else None)
    plans, short = split_routes(routes, configs, teachers, budget, costs)
    if not short:
        return plans
    least = max(need / stage.fraction for _, stage, need in short)
    while split_routes(routes, configs, teachers, replace(budget, flops=least), costs)[1]:
        least *= 1.01  # the earlier stages round to whole steps: the last may need a little more
    route, stage, need = short[0]
    pairs = " and one batch of pairs" if stage.pairs is not None else ""
    raise ValueError(
        f"a total budget of {budget.flops / 1e15:.4g} PFLOPs is too small for route {route!r}: its stage "
        f"{stage.run!r} gets {stage.part_flops:.3g} FLOPs ({stage.fraction:.3g} of the budget) and needs at "
        f"least {need:.3g} for one optimizer step{pairs}; a total of {rounded_up(least / 1e15):.4g} PFLOPs "
        "trains every stage of every route"
    )


def rounded_up(value: float, digits: int = 4) -> float:
    """``value`` rounded up to ``digits`` significant digits (a least budget that, quoted, still suffices)."""
    unit = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / unit) * unit


def split_routes(
    routes: list[str],
    configs: Mapping[str, RunConfig],
    teachers: Mapping[str, str | None],
    budget: TotalBudget,
    costs: Mapping[str, StepCost],
) -> tuple[dict[str, list[Stage]], list[tuple[str, Stage, float]]]:
    """:func:`plan_routes` with each design's cost given: the plans, and each (route, stage, FLOPs it needs)
    whose part pays for less than one step."""
    planned: dict[str, Stage] = {}
    plans, short = {}, []
    for route in routes:
        designs = chain(route, teachers)
        fractions = stage_fractions(len(designs), budget.teacher_share)
        stages, spent = [], 0.0
        for i, (design, fraction) in enumerate(zip(designs, fractions, strict=True)):
            last = i == len(designs) - 1
            run = stage_name(design, fraction, last)
            if run not in planned:  # else a shared teacher: the same training in every route
                part = budget.flops - spent if last else fraction * budget.flops
                teacher = stages[-1].run if stages else None
                stage, need = plan_stage(run, design, teacher, fraction, part, configs[design], costs[design],
                                         budget)  # fmt: skip
                if need is not None:
                    short.append((route, stage, need))
                planned[run] = stage
            stages.append(planned[run])
            spent += planned[run].flops
        plans[route] = stages
    return plans, short


def plan_stage(
    run: str,
    design: str,
    teacher: str | None,
    fraction: float,
    part: float,
    config: RunConfig,
    step: StepCost,
    budget: TotalBudget,
) -> tuple[Stage, float | None]:
    """The stage's pairs (the configured number, or as many as ``pair_share`` of its part pays for) and its
    steps (the rest of its part, to the nearest step); with the FLOPs the smallest such stage needs when
    this part cannot pay for one step and one batch of pairs (else None)."""
    pairs = None
    pair_flops = 0.0
    smallest = step.per_step
    if step.per_pair > 0:
        batch = config.train.batch_size
        pairs = min(config.distill.pairs, math.floor(budget.pair_share * part / step.per_pair))
        pair_flops = max(pairs, 0) * step.per_pair
        smallest += batch * step.per_pair / budget.pair_share
        if pairs < batch:
            return Stage(run, design, teacher, fraction, part, 0, pairs, 0.0), smallest
    steps = round((part - pair_flops) / step.per_step)
    if steps < 1:
        return Stage(run, design, teacher, fraction, part, 0, pairs, 0.0), smallest
    flops = pair_flops + steps * step.per_step
    return Stage(run, design, teacher, fraction, part, steps, pairs, flops), None


def counted_step_cost(config: RunConfig, teacher: RunConfig | None) -> StepCost:
    """A stage's :class:`StepCost` counted as its run will count it (:func:`bench.runs.run.cost_inputs`):
    the network's training and forward FLOPs per image (``torch.utils.flop_counter``), its objective's step
    cost, and the teacher's forward FLOPs for its calls and pairs."""
    import denoisers

    from ..cluster.sweep import network, network_flops
    from ..training.objectives import step_cost

    model, shape = network(config)
    recipe = denoisers.recipe_of(model)
    training, forward = network_flops(config)
    extra = step_cost(recipe.objective, config, model, shape)
    teacher_forward = network_flops(teacher)[1] if teacher is not None else 0.0
    per_image = training + extra.extra_forwards * forward + extra.teacher_calls * teacher_forward
    makes_pairs = teacher is not None and recipe.pairs == "teacher"
    per_pair = config.distill.teacher_steps * teacher_forward if makes_pairs else 0.0
    return StepCost(per_image * config.train.batch_size, per_pair)


def with_stage(config: RunConfig, stage: Stage) -> RunConfig:
    """The design's config trained as the stage: its steps, its part recorded as its FLOP budget, and its
    pairs."""
    distill = config.distill if stage.pairs is None else replace(config.distill, pairs=stage.pairs)
    train = replace(config.train, steps=stage.steps, minutes=None, budget_flops=stage.part_flops)
    return replace(config, train=train, distill=distill)


MANIFEST = "study.json"


def record_manifest(out: Path, budget: TotalBudget | None, plans: dict[str, list[Stage]] | None) -> None:
    """``out/study.json``: the study's budget (per run, or the total with its shares) and each route's
    stages; refuses a folder that holds the study under another budget (its runs would mix two experiments
    in one table)."""
    path = out / MANIFEST
    old = read_json(path) if path.is_file() else None
    described = budget.to_dict() if budget is not None else "per run"
    if old is not None and old.get("budget") != described:
        raise ValueError(
            f"{out} holds this study with budget {old.get('budget')}, not {described}; choose another --out"
        )
    routes = {**(old or {}).get("routes", {})}
    for route, stages in (plans or {}).items():
        routes[route] = [asdict(stage) for stage in stages]
    manifest = {"budget": described, "routes": routes}
    if manifest != old:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, manifest)


def stages_text(out: Path) -> dict[str, str]:
    """Each route's stages under a total budget, as the table shows them: ``teacher-edm-x0.5 (0.5 X: 1,500
    steps) -> direct-distilled (0.5 X: 2,878 pairs, 750 steps)``; empty per run."""
    path = out / MANIFEST
    manifest = read_json(path) if path.is_file() else {}
    texts = {}
    for route, stages in manifest.get("routes", {}).items():
        parts = []
        for stage in stages:
            pairs = f"{stage['pairs']:,} pairs, " if stage["pairs"] is not None else ""
            parts.append(f"{stage['run']} ({stage['fraction']:.3g} X: {pairs}{stage['steps']:,} steps)")
        texts[route] = " -> ".join(parts)
    return texts
