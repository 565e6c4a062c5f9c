"""Typed run configuration: resolved once from the CLI (or Python), saved with the run, read back on resume.

Each numeric field that has a rule declares it once, as a :class:`Rule` in the field's metadata: the
config's ``__post_init__`` checks it, and the CLI derives its option type from it (``bench.cli.options``),
so a new option costs one field here and one flag there.

The defaults are sized so that ``bench run --denoiser unet --schedule linear`` trains, samples and
evaluates on the embedded 5,000-digit MNIST subset in a few minutes on a 2-core CPU.

The configs live beside each other by what they configure: ``run`` (the whole run and its schedule),
``training`` (the trainer, a teacher's pairs, the consistency and flow-map objectives), ``sampling`` (the
sampler, its grid and guidance), and ``rules`` (a field's rule). Every name is importable from
``bench.config``.
"""

from .rules import POSITIVE, POSITIVE_INT, Rule, check_choice, check_rules, rule_of, ruled
from .run import DiffusionConfig, RunConfig, config_differences
from .sampling import (
    AUTO_SAMPLER,
    CHURN_DEFAULTS,
    STEPPING_SETTINGS,
    SampleConfig,
    Stepping,
    churn_label,
)
from .training import (
    CONSISTENCY_SOLVERS,
    DERIVATIVES,
    DISTANCES,
    NOISE_LEVELS,
    PRECISIONS,
    ConsistencyConfig,
    DistillConfig,
    FlowMapConfig,
    TrainConfig,
)

__all__ = [
    "AUTO_SAMPLER",
    "CHURN_DEFAULTS",
    "CONSISTENCY_SOLVERS",
    "DERIVATIVES",
    "DISTANCES",
    "NOISE_LEVELS",
    "POSITIVE",
    "POSITIVE_INT",
    "PRECISIONS",
    "STEPPING_SETTINGS",
    "ConsistencyConfig",
    "DiffusionConfig",
    "DistillConfig",
    "FlowMapConfig",
    "Rule",
    "RunConfig",
    "SampleConfig",
    "Stepping",
    "TrainConfig",
    "check_choice",
    "check_rules",
    "churn_label",
    "config_differences",
    "rule_of",
    "ruled",
]
