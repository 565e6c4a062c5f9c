"""The training objectives, the fourth plugin registry beside schedules, denoisers and samplers: the loss a
design trains with, named by its recipe (``Recipe.objective``) and built by the trainer from here.

  base         the registry, what an objective declares (:class:`Declaration`) and the checks that read it;
  regression   the loss on the prediction target (DDPM's L_simple, its weightings, teacher pairs, labels);
  consistency  consistency distillation (CD) and improved consistency training (iCT);
  progressive  progressive distillation (two teacher DDIM steps in one student step);
  flow_map     flow maps from scratch: MeanFlow and shortcut models;
  tuning       easy consistency tuning (ECT) from a diffusion run's weights;
  continuous   continuous-time consistency training (sCT) in TrigFlow's variables;
  forward_mode the JVP the last two kinds of target take, routed past the fused kernels and costed.

A new objective is a module here (or in another package, through the ``bench.objectives`` entry points)
that registers a factory with its declaration.
"""

from . import consistency as _consistency  # noqa: F401  (registers the consistency objectives)
from . import continuous as _continuous  # noqa: F401  (registers "continuous-consistency")
from . import flow_map as _flow_map  # noqa: F401  (registers "meanflow" and "shortcut")
from . import progressive as _progressive  # noqa: F401  (registers "progressive-distillation")
from . import regression as _regression  # noqa: F401  (registers "regression")
from . import tuning as _tuning  # noqa: F401  (registers "consistency-tuning")
from .base import (
    DESIGN_SETTINGS,
    OBJECTIVES,
    PAIRS_SETTINGS,
    TEACHER_USES,
    Batch,
    Declaration,
    Objective,
    ObjectiveContext,
    ObjectiveFactory,
    StatelessObjective,
    StepCost,
    build_objective,
    check_network,
    check_objective,
    declaration,
    design_settings,
    needs_teacher,
    start_from_teacher,
    step_cost,
)

__all__ = [
    "DESIGN_SETTINGS",
    "OBJECTIVES",
    "PAIRS_SETTINGS",
    "TEACHER_USES",
    "Batch",
    "Declaration",
    "Objective",
    "ObjectiveContext",
    "ObjectiveFactory",
    "StatelessObjective",
    "StepCost",
    "build_objective",
    "check_network",
    "check_objective",
    "declaration",
    "design_settings",
    "needs_teacher",
    "start_from_teacher",
    "step_cost",
]
