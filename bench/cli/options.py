"""What every ``bench`` command shares: option types that validate (each rule is the config field's own
:class:`bench.config.Rule`, or a plugin registry's list of names), options derived from config fields, the
mapping from parsed options back to config dataclasses, and the decorator that turns the library's input
errors into usage errors (exit code 2)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from ..config import AUTO_SAMPLER, POSITIVE_INT, Rule, rule_of
from ..config.sampling import DESIGN_CHOSEN

InputErrors = (ValueError, FileExistsError, FileNotFoundError, PermissionError)
"""What the library raises for bad input (CheckpointError and UnknownPluginError are ValueErrors)."""


class RuleType(click.ParamType):
    """A number checked against a :class:`Rule`, with the config's own message ("steps must be a positive
    integer, got 0")."""

    def __init__(self, rule: Rule, field: str) -> None:
        self.rule, self.field = rule, field
        self.name = "integer" if rule.kind is int else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, int | float):
            number = value
        else:
            try:
                number = self.rule.kind(value)
            except ValueError:
                self.fail(f"{self.field} must be {self.rule.describe()}, got {value!r}", param, ctx)
        try:
            return self.rule.check(self.field, number)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def positive_int(field: str) -> RuleType:
    return RuleType(POSITIVE_INT, field)


class PluginName(click.ParamType):
    """A name that a plugin registry knows; the error lists the known names, with a "did you mean"."""

    name = "name"

    def __init__(self, registry: Callable[[], Any], also: tuple[str, ...] = ()) -> None:
        self.registry = registry  # called lazily: importing the plugins is not free
        self.also = also  # names that are not plugins but allowed (``auto``)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value in self.also:
            return value
        try:
            self.registry().get(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


class CommaList(click.ParamType):
    """``a,b,c`` -> a list, each item converted by the click type ``item`` (its error replaced by
    ``item_error`` when given) and, with ``allowed``, one of those; an empty list is an error, and so is an
    item given twice."""

    name = "list"

    def __init__(
        self,
        item: click.ParamType | None = None,
        *,
        allowed: tuple[str, ...] | None = None,
        item_error: str | None = None,
    ) -> None:
        self.item, self.allowed, self.item_error = item, allowed, item_error

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list:
        if isinstance(value, list):
            return value
        items = [item.strip() for item in str(value).split(",") if item.strip()]
        if not items:
            self.fail(f"expected a comma-separated list, got {value!r}", param, ctx)
        if self.allowed is not None:
            bad = [item for item in items if item not in self.allowed]
            if bad:
                self.fail(f"{', '.join(bad)} not allowed; choose from {', '.join(self.allowed)}", param, ctx)
        if self.item is None:
            converted = items
        else:
            try:
                converted = [self.item.convert(item, param, ctx) for item in items]
            except click.BadParameter:
                if self.item_error is None:
                    raise
                self.fail(self.item_error, param, ctx)
        twice = sorted({str(item) for item in converted if converted.count(item) > 1})
        if twice:
            self.fail(f"{', '.join(twice)} given twice in {value!r}; give each once", param, ctx)
        return converted


class GuidanceInterval(click.ParamType):
    """``SIGMA_LO,SIGMA_HI``: the noise levels where classifier-free guidance applies (``inf`` allowed)."""

    name = "SIGMA_LO,SIGMA_HI"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        from ..process.denoiser import check_guidance

        if isinstance(value, tuple):
            return value
        try:
            interval = tuple(float(item) for item in str(value).split(","))
            check_guidance(1.0, interval)
        except ValueError as exc:
            message = str(exc) if "guidance" in str(exc) else f"expected SIGMA_LO,SIGMA_HI, got {value!r}"
            self.fail(message, param, ctx)
        return interval


class KeyValue(click.ParamType):
    """``key=value`` with the value read as a Python literal when it is one (``3``, ``0.1``, ``(1,2,2)``,
    ``True``), else kept as a string; dashes in the key become underscores."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):
            return value
        try:
            return parse_option(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip().replace("-", "_"), value


def config_option(*decls: str, kind: type, field: str, default: Any, **kwargs: Any) -> Callable:
    """A click option for the config field ``kind.field``: its type checks the field's rule, and its
    default is the caller's (usually the default config's value)."""
    rule = rule_of(kind, field)
    option_type = RuleType(rule, field) if rule is not None else kwargs.pop("type", None)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, type=option_type, default=default, **kwargs)


def from_options(kind: type, values: dict[str, Any], prefix: str = "", **overrides: Any) -> Any:
    """Build the config dataclass ``kind`` from parsed options: each field takes the option of the same name
    (with ``prefix``), so a new option needs no mapping line; ``overrides`` win."""
    given = {
        f.name: values[prefix + f.name]
        for f in dataclasses.fields(kind)
        if prefix + f.name in values and f.name not in overrides
    }
    return kind(**given, **overrides)


def command_line_given(name: str) -> bool:
    """Whether the option ``name`` of the current command was typed on the command line (not defaulted);
    False outside a command."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def given_sampling(prefix: str = "", steps: str = "steps") -> tuple[str, ...]:
    """The settings a design may choose for itself (:data:`bench.config.sampling.DESIGN_CHOSEN`) that were
    typed on the command line, by field name; their options are ``prefix`` + the field's name, the steps'
    ``steps``."""
    options = {name: prefix + name for name in DESIGN_CHOSEN} | {"steps": steps}
    return tuple(name for name, option in options.items() if command_line_given(option))


def usage_errors(fn: Callable | None = None, *, interrupted: str = "interrupted: {exc}") -> Callable:
    """Run the command and turn the library's input errors into click usage errors (exit code 2), a
    RuntimeError into a plain error (exit code 1), and Ctrl-C into exit code 130 with the ``interrupted``
    message (``{exc}`` is what was interrupted and how to continue)."""
    if fn is None:
        return functools.partial(usage_errors, interrupted=interrupted)

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as exc:
            click.echo(interrupted.format(exc=exc), err=True)
            sys.exit(130)
        except InputErrors as exc:
            raise click.UsageError(str(exc)) from None
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None

    return command


def _denoisers() -> Any:
    import denoisers

    return denoisers.REGISTRY


def _schedules() -> Any:
    import schedules

    return schedules.REGISTRY


def _datasets() -> Any:
    from .. import datasets

    return datasets.DATASETS


def _samplers() -> Any:
    from ..process.sampling import SAMPLERS

    return SAMPLERS


DENOISER, SCHEDULE, DATASET = PluginName(_denoisers), PluginName(_schedules), PluginName(_datasets)
SAMPLER = PluginName(_samplers, also=(AUTO_SAMPLER,))
