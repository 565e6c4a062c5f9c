"""The objective registry and what an objective declares.

A training objective is the loss a design trains with, and the state it keeps beside the model. A
denoiser's :class:`denoisers.Recipe` names one (``objective="regression"`` unless it says otherwise); the
trainer builds it from this registry and calls it, and never asks which one it is. What an objective
needs and what it costs is declared where it is registered (:class:`Declaration`), as a sampler declares its
network calls: ``bench list``, the run's checks (:func:`check_objective`, :func:`needs_teacher`) and the cost
accounting (:mod:`bench.runs.cost`) read the declaration instead of naming designs.

A plugin registers a factory that builds the objective from an :class:`ObjectiveContext`::

    @OBJECTIVES.register("my-loss", declares=Declaration(predictions=("x0",)))
    def my_loss(context: ObjectiveContext) -> Objective:
        return MyLoss(context.diffusion)

and another package registers the same way through the ``bench.objectives`` entry-point group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from denoisers import Recipe

from ...config import ConsistencyConfig, DistillConfig, FlowMapConfig, RunConfig, TrainConfig
from ...process.denoiser import CONSISTENCY, Denoiser
from ...process.diffusion import Diffusion
from ...registry import Registry
from ..pairs import TeacherError

TEACHER_USES = {
    "ode-steps": "its probability-flow ODE steps during training",
    "init": "its weights, to start from",
}
"""What an objective may take from a teacher run (``--teacher``): ODE steps it calls during training (the
teacher then must be trained on the same schedule) or only the weights the student starts from."""


@dataclass(frozen=True)
class Batch:
    """One training step's examples: the images, and what some objectives take beside them."""

    x0: torch.Tensor
    inputs: torch.Tensor | None = None  # the x_T each image is paired with (a teacher's pairs)
    labels: torch.Tensor | None = None  # each image's class, for a class-conditional model


@dataclass(frozen=True)
class StepCost:
    """Network calls per training example of one step, beyond the student's one forward and backward."""

    extra_forwards: float = 0  # forwards of a student-sized network without backward (a target network)
    teacher_calls: float = 0  # forwards of the teacher


DESIGN_SETTINGS = tuple(
    f"{section}.{field.name}"
    for section, kind in (
        ("distill", DistillConfig),
        ("consistency", ConsistencyConfig),
        ("flow_map", FlowMapConfig),
    )
    for field in dataclasses.fields(kind)
)
"""The settings only some designs read: a teacher's (``distill``), the consistency objectives' and the
flow-map objectives'."""
PAIRS_SETTINGS = ("distill.teacher", "distill.teacher_steps", "distill.pairs", "distill.teacher_clip_x0")
"""What a design trained on a teacher's (noise, image) pairs reads (``Recipe.pairs == "teacher"``)."""


def no_extra_cost(config: RunConfig) -> StepCost:
    return StepCost()


@dataclass(frozen=True)
class Declaration:
    """What an objective declares at registration, so that shared code asks instead of naming designs.

    predictions:  the network outputs it trains (``Recipe.prediction``).
    teacher:      what it takes from a ``--teacher`` run (a key of :data:`TEACHER_USES`), None for nothing.
    second_time:  whether the network must take a second time input (a flow map's r beside t).
    jvp:          whether it differentiates the network forward-mode (a Jacobian-vector product).
    pairs:        whether it trains on a teacher's (noise, image) pairs (``Recipe.pairs="teacher"``).
    labels:       whether it trains class-conditional models (``--conditional``).
    own_noise:    whether it draws its own noise levels and weights its own loss, so that
                  ``--loss-weight`` and ``--noise-levels`` mean nothing to it.
    fixed_plan:   why a run cannot be extended past the steps it was planned for (None: it can).
    cost:         its :class:`StepCost` for a run's config.
    measured_cost: where its cost depends on the network beyond a count of calls (a JVP's FLOPs), its
                  :class:`StepCost` measured on the run's network (config, model, image shape); the run
                  records that one, ``bench list`` shows ``cost``.
    student_steps: for a student that learns two of its teacher's DDIM steps in one, the steps it samples
                  with for a teacher of so many steps.
    check:        its own check of a design (recipe, diffusion, training config), before anything is built.
    settings:     the design-specific settings it reads (config paths such as ``consistency.target_ema``,
                  of :data:`DESIGN_SETTINGS`): given to a design whose objective does not read them, they
                  are a usage error rather than ignored.
    """

    predictions: tuple[str, ...]
    teacher: str | None = None
    second_time: bool = False
    jvp: bool = False
    pairs: bool = False
    labels: bool = False
    own_noise: bool = False
    fixed_plan: str | None = None
    cost: Callable[[RunConfig], StepCost] = no_extra_cost
    measured_cost: Callable[[RunConfig, nn.Module, tuple[int, ...]], StepCost] | None = None
    student_steps: Callable[[int], int] | None = None
    check: Callable[[Recipe, Diffusion, TrainConfig], None] | None = None
    settings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.teacher is not None and self.teacher not in TEACHER_USES:
            known = ", ".join(TEACHER_USES)
            raise ValueError(f"teacher must be one of {known} or None, got {self.teacher!r}")
        if not self.predictions:
            raise ValueError("an objective trains at least one prediction")
        if unknown := sorted(set(self.settings) - set(DESIGN_SETTINGS)):
            raise ValueError(f"settings must be among {', '.join(DESIGN_SETTINGS)}; not {unknown}")


class Objective(Protocol):
    """A training loss and the state it keeps beside the model. The trainer calls :meth:`bind` once with the
    model (on its device), :meth:`loss` for each step's batch (per-example losses, which it averages),
    :meth:`after_step` after each optimiser step, and keeps :meth:`state_dict` in the checkpoint."""

    def bind(self, model: nn.Module) -> None: ...
    def loss(
        self, student: Denoiser, batch: Batch, step: int, generator: torch.Generator
    ) -> torch.Tensor: ...
    def after_step(self) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class StatelessObjective:
    """The parts of :class:`Objective` a loss without state of its own leaves as they are."""

    def bind(self, model: nn.Module) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class BareModelObjective(StatelessObjective):
    """An objective whose targets (a JVP, the model's own steps) run on the bare model the trainer binds
    (no DDP, no compile) without gradient: under DistributedDataParallel only the student's own forward,
    which the loss differentiates, goes through the wrapper."""

    model: nn.Module | None = None

    def bind(self, model: nn.Module) -> None:
        self.model = model

    def bare(self, student: Denoiser) -> Denoiser:
        """The student's wrapper around the bare model (the student itself before :meth:`bind`)."""
        return student if self.model is None else dataclasses.replace(student, net=self.model)


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective is built from: the run's config, the student's recipe, network (before the trainer
    wraps it) and process, its image shape, and its teacher's denoiser (None for a design without one)."""

    config: RunConfig
    recipe: Recipe
    model: nn.Module
    diffusion: Diffusion
    image_shape: tuple[int, ...]
    teacher: Denoiser | None = None


ObjectiveFactory = Callable[[ObjectiveContext], Objective]

OBJECTIVES: Registry[ObjectiveFactory] = Registry("objective", "bench.objectives")


def declaration(name: str) -> Declaration:
    """What the objective ``name`` declared at registration (an unknown name lists the known ones)."""
    declared = OBJECTIVES.metadata(name).get("declares")
    if not isinstance(declared, Declaration):
        raise TypeError(f"objective {name!r} was registered without declares=Declaration(...)")
    return declared


def step_cost(name: str, config: RunConfig, model: nn.Module, image_shape: tuple[int, ...]) -> StepCost:
    """The objective ``name``'s cost per step of a run: measured on its network where it declared how,
    else its declared count."""
    declared = declaration(name)
    if declared.measured_cost is not None:
        return declared.measured_cost(config, model, image_shape)
    return declared.cost(config)


def needs_teacher(recipe: Recipe) -> bool:
    """Whether a run of this design needs ``--teacher``: for its pairs, or for what its objective takes."""
    return recipe.pairs == "teacher" or declaration(recipe.objective).teacher is not None


def design_settings(recipe: Recipe) -> set[str]:
    """The design-specific settings (:data:`DESIGN_SETTINGS`) a design reads: its objective's, and a
    teacher's pairs' for a design trained on them."""
    pairs = set(PAIRS_SETTINGS) if recipe.pairs == "teacher" else set()
    return set(declaration(recipe.objective).settings) | pairs


def check_objective(
    recipe: Recipe, diffusion: Diffusion, config: TrainConfig, *, conditional: bool = False
) -> None:
    """Refuse a design its objective cannot train, before anything is built or written: a prediction it does
    not train, teacher pairs or (``conditional``) labels it does not take, a loss weighting or noise levels
    it does not use, and its own checks."""
    name, declared = recipe.objective, declaration(recipe.objective)
    if recipe.prediction not in declared.predictions:
        raise ValueError(
            f"the {name} objective trains the {', '.join(declared.predictions)} prediction"
            f"{'s' if len(declared.predictions) > 1 else ''}, not {recipe.prediction!r}"
        )
    if recipe.pairs == "teacher" and not declared.pairs:
        raise ValueError(f"the {name} objective draws its own noise: it takes no teacher pairs")
    if conditional and not declared.labels:
        raise ValueError(f"the {name} objective trains no class-conditional model: it takes no labels")
    if declared.own_noise and (config.loss_weight, config.noise_levels) != ("uniform", "uniform"):
        raise ValueError(
            f"the {name} objective draws its own noise levels and weights its own loss; use "
            "--loss-weight uniform --noise-levels uniform"
        )
    if declared.check is not None:
        declared.check(recipe, diffusion, config)


def check_network(name: str, model: nn.Module) -> None:
    """Refuse a network that cannot give the objective ``name`` what it declared it needs: a second time
    input (a network that takes one says so with ``second_time = True``)."""
    if declaration(name).second_time and not getattr(model, "second_time", False):
        raise ValueError(
            f"the {name} objective needs a network that takes a second time input; "
            f"{type(model).__name__} takes only (x_t, t)"
        )


def build_objective(context: ObjectiveContext) -> Objective:
    """The objective the recipe names, built by its plugin, for a design :func:`check_objective` accepted
    (the caller checks it first, before anything costly such as loading a teacher): its network checked
    (:func:`check_network`) and a teacher present where it declared one."""
    name = context.recipe.objective
    check_network(name, context.model)
    if declaration(name).teacher is not None and context.teacher is None:
        raise ValueError(f"the {name} objective learns from a teacher: give --teacher RUN_DIR")
    return OBJECTIVES.get(name)(context)


def start_from_teacher(context: ObjectiveContext, *, hint: str = "") -> None:
    """Load the teacher's weights into the student (a distilled student's start), refused with the reason
    when the two networks differ or read their output as different things (:func:`check_same_output`);
    ``hint`` ends the message with what else the user may do."""
    if context.teacher is None:
        name = context.recipe.objective
        raise ValueError(f"the {name} objective starts from a teacher: give --teacher RUN_DIR")
    check_same_output(context, hint)
    try:
        context.model.load_state_dict(context.teacher.net.state_dict())
    except RuntimeError as exc:
        raise TeacherError(
            "the student cannot start from the teacher's weights, its network differs "
            f"({str(exc)[:300]}); build it as the teacher was (the same --preset and -o options){hint}"
        ) from None


def same_output(teacher: str, student: str) -> bool:
    """Whether a student predicting ``student`` reads a teacher's network output (predicting ``teacher``)
    as the same quantity: the same prediction, or EDM's F for the consistency function's F (both are
    the network behind c_skip y + c_out F with EDM's c_in; they differ only in c_skip and c_out near
    sigma_min, so a consistency model starts from an EDM teacher, as Song et al. 2023 do)."""
    return teacher == student or (teacher, student) == ("edm", CONSISTENCY)


def check_same_output(context: ObjectiveContext, hint: str = "") -> None:
    """Refuse to start a student from a teacher whose network predicts something else (an eps network's
    output read as EDM's F would start the student from nonsense), saying what the teacher predicts and
    what to pass instead."""
    assert context.teacher is not None
    teacher, student = context.teacher, context.recipe
    scaled = student.prediction in ("edm", CONSISTENCY)  # the predictions whose output sigma_data scales
    if same_output(teacher.prediction, student.prediction) and (
        not scaled or teacher.sigma_data == student.sigma_data
    ):
        return
    fixes = []
    if student.prediction != CONSISTENCY and teacher.prediction in declaration(student.objective).predictions:
        fixes.append(f"-o target={teacher.prediction} for the student")
    wanted = "edm" if student.prediction == CONSISTENCY else student.prediction
    fixes.append(f"a teacher trained with --target {wanted} (sigma_data {student.sigma_data:g})")
    raise TeacherError(
        f"the teacher predicts {teacher.prediction!r} (sigma_data {teacher.sigma_data:g}) and this student "
        f"{student.prediction!r} (sigma_data {student.sigma_data:g}): the student starts from the teacher's "
        f"weights and would read their output as its own; use {' or '.join(fixes)}{hint}"
    )
