"""Named plugin registries, in the style of timm's ``register_model`` / ``create_model``.

A plugin is a callable with a name. Built-in plugins register themselves when their package is
imported; third-party packages register through Python entry points
(``[project.entry-points."bench.schedules"]`` and friends), which are loaded the first time a registry
is asked for a name, so installing a package is all it takes to make its plugins appear in ``bench list``.

What a plugin declares besides its callable (a denoiser's size presets, a dataset's default image size) is
given where it is registered, as keyword metadata (``@register("unet", presets=PRESETS)``), as timm's
``default_cfgs`` are. A third-party module that an entry point names may register itself the same way
with its metadata; the registry then keeps that registration.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable)


class UnknownPluginError(ValueError):
    """Raised for a name that no plugin registered; the message lists the names that exist."""


@dataclass(frozen=True)
class Plugin(Generic[T]):
    name: str
    obj: T
    description: str
    source: str  # "builtin" or the distribution / entry point that provided it
    metadata: Mapping[str, Any] = field(default_factory=dict)


def first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


class Registry(Generic[T]):
    """A dictionary of plugins of one kind, extended by the entry-point group ``group``."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._plugins: dict[str, Plugin[T]] = {}
        self._entry_points_loaded = False

    def register(
        self,
        name: str,
        obj: T | None = None,
        *,
        description: str | None = None,
        source: str = "builtin",
        **metadata: Any,
    ):
        """Register ``obj`` under ``name``; usable as ``@registry.register("name", **metadata)``.

        The description defaults to the first line of the object's docstring, which is what ``bench list``
        prints, so a plugin documents itself in one place.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def decorator(fn: T) -> T:
            if name in self._plugins and self._plugins[name].obj is not fn:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered (by {self._plugins[name].source}); "
                    "choose another name"
                )
            text = description if description is not None else first_line(fn.__doc__)
            self._plugins[name] = Plugin(name, fn, text, source, dict(metadata))
            return fn

        return decorator(obj) if obj is not None else decorator

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            known = self._plugins.get(ep.name)
            if known is not None and known.source != "builtin":  # this entry point, loaded before
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the built-ins
                warnings.warn(
                    f"could not load {self.kind} plugin {ep.name!r} ({ep.value}): {exc}", stacklevel=2
                )
                continue
            dist = getattr(ep, "dist", None)
            origin = f"{dist.name} (entry point)" if dist is not None else f"{ep.value} (entry point)"
            # the module may have registered it, with metadata, when it was imported (by this entry point
            # or, for a package that registers several kinds of plugin, by another registry's)
            registered = self._plugins.get(ep.name)
            if registered is None:
                self.register(ep.name, obj, source=origin)
            elif registered.obj is obj:
                self._plugins[ep.name] = replace(registered, source=origin)
            else:
                warnings.warn(
                    f"{self.kind} plugin {ep.name!r} of {origin} is not used: a built-in {self.kind} has "
                    "that name",
                    stacklevel=2,
                )

    def get(self, name: str) -> T:
        """Return the plugin called ``name`` or raise :class:`UnknownPluginError` listing the known names."""
        return self.plugin(name).obj

    def plugin(self, name: str) -> Plugin[T]:
        self._load_entry_points()
        try:
            return self._plugins[name]
        except KeyError:
            known = self.names()
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownPluginError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(known) or '(none)'}.{hint}"
            ) from None

    def metadata(self, name: str) -> Mapping[str, Any]:
        """What the plugin ``name`` declared when it was registered (empty when nothing)."""
        return self.plugin(name).metadata

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._plugins)

    def plugins(self) -> list[Plugin[T]]:
        return [self._plugins[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._plugins

    def reload_entry_points(self) -> None:
        """Forget which entry points were loaded, so packages installed since are found (used by tests)."""
        self._entry_points_loaded = False
