"""Rules for numeric config fields: each field that has one declares it once, as a :class:`Rule` in the
field's metadata; the config's ``__post_init__`` checks it (:func:`check_rules`), and the CLI derives its
option type from it (``bench.cli.options``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What values a number may take: an integer or a real number, bounded below and/or above (open or
    closed), None allowed when ``optional``."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def describe(self) -> str:
        noun = "integer" if self.kind is int else "number"
        positive = (self.low == 0 and self.low_open) or (self.kind is int and self.low == 1)
        if self.high is None:
            if positive:
                return f"a positive {noun}"
            return f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else f"a {noun}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else int | float):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, name: str, value: Any) -> Any:
        if not self.allows(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return value


POSITIVE_INT = Rule(int, low=1)
POSITIVE = Rule(float, low=0, low_open=True)


def ruled(default: Any, rule: Rule, **kwargs: Any) -> Any:
    """A dataclass field with a :class:`Rule`."""
    return field(default=default, metadata={"rule": rule}, **kwargs)


def rule_of(kind: type, name: str) -> Rule | None:
    """The rule the config dataclass ``kind`` declares for its field ``name``, if any."""
    return {f.name: f.metadata.get("rule") for f in dataclasses.fields(kind)}.get(name)


def check_rules(config: Any, prefix: str = "") -> None:
    """Check every field of ``config`` that declares a rule; the error names the field."""
    for f in dataclasses.fields(config):
        rule = f.metadata.get("rule")
        if rule is not None:
            rule.check(prefix + f.name, getattr(config, f.name))


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
