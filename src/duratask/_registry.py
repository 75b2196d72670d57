"""The registry of orchestrations and activities a worker can run, with their payload types."""

from __future__ import annotations

import collections.abc
import functools
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_IDENTIFIER_MAX = 256
# What names and instance ids may not hold (C0 controls and DEL): one search, not a loop.
CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A registered orchestration or activity and the types of its input and result."""

    name: str
    version: str | None
    fn: Callable[..., Any]
    input_type: Any = None
    output_type: Any = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def function_name(fn: Callable[..., Any] | str) -> str:
    """The default registered name of a function (its ``__name__``), or the string itself."""
    if isinstance(fn, str):
        return fn
    name = getattr(fn, "__duratask_name__", None) or getattr(fn, "__name__", None)
    if not name:
        raise TypeError(f"{fn!r} has no __name__; register it with an explicit name")
    return str(name)


@functools.lru_cache(maxsize=1024)
def _type_hints(fn: Callable[..., Any]) -> tuple[Any, Any]:
    """(type of the second parameter, result type) from annotations; None where unknown.
    Cached: orchestrations ask for it at every call_activity."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None, None
    params = list(inspect.signature(fn).parameters.values())
    input_type = hints.get(params[1].name) if len(params) >= 2 else None
    output_type = hints.get("return")
    origin = typing.get_origin(output_type)
    if origin in (collections.abc.Generator, typing.Generator):
        args = typing.get_args(output_type)
        output_type = args[2] if len(args) == 3 else None
    return input_type, output_type


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is 1-256 printable characters, else raise ValueError."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > _IDENTIFIER_MAX
        or CONTROL_CHARACTER.search(name) is not None
        or not _encodable(name)
    ):
        raise ValueError(f"invalid {what} name {name!r}: 1-{_IDENTIFIER_MAX} printable characters")
    return name


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Registry:
    """Orchestrations by (name, version) and activities by name."""

    def __init__(self) -> None:
        self._orchestrations: dict[tuple[str, str | None], FunctionSpec] = {}
        self._activities: dict[str, FunctionSpec] = {}
        self._names: dict[Callable[..., Any], str] = {}
        self._entities: dict[str, Any] = {}  # a function (ctx, input) or a class
        self.generation = 0  # moves on at each registration

    def add_orchestration(
        self, fn: Callable[..., Any], *, name: str | None = None, version: str | None = None
    ) -> str:
        registered = check_name(name or function_name(fn), "orchestration")
        if version is not None:
            check_name(version, f"version of orchestration {registered!r}:")
        key = (registered, version)
        if key in self._orchestrations:
            raise ValueError(
                f"orchestration {registered!r} version {version!r} is registered twice"
            )
        input_type, output_type = _type_hints(fn)
        self._orchestrations[key] = FunctionSpec(registered, version, fn, input_type, output_type)
        self._names[fn] = registered
        self.generation += 1
        return registered

    def add_activity(self, fn: Callable[..., Any], *, name: str | None = None) -> str:
        registered = check_name(name or function_name(fn), "activity")
        if registered in self._activities:
            raise ValueError(f"activity {registered!r} is registered twice")
        input_type, output_type = _type_hints(fn)
        self._activities[registered] = FunctionSpec(registered, None, fn, input_type, output_type)
        self._names[fn] = registered
        self.generation += 1
        return registered

    def add_entity(self, entity: Any, *, name: str | None = None) -> str:
        """Register an entity: a function ``(ctx, input)`` or a class whose public methods are
        its operations. Entity names are case-insensitive (kept lower-case) and hold no ``@``."""
        registered = check_name(name or function_name(entity), "entity").lower()
        if "@" in registered:
            raise ValueError(f"entity name {registered!r} must not contain '@'")
        if not callable(entity):
            raise TypeError(f"an entity is a function (ctx, input) or a class, not {entity!r}")
        if registered in self._entities:
            raise ValueError(f"entity {registered!r} is registered twice")
        self._entities[registered] = entity
        self.generation += 1
        return registered

    def get_entity(self, name: str) -> Any:
        """The entity registered as ``name`` (any case), or None."""
        return self._entities.get(name.lower())

    @property
    def entity_names(self) -> list[str]:
        return sorted(self._entities)

    def get_orchestration(self, name: str, version: str | None) -> FunctionSpec | None:
        return self._orchestrations.get((name, version))

    def orchestration_versions(self, name: str) -> list[str | None]:
        return [v for (n, v) in self._orchestrations if n == name]

    def get_activity(self, name: str) -> FunctionSpec | None:
        return self._activities.get(name)

    @property
    def orchestration_keys(self) -> frozenset[tuple[str, str | None]]:
        """Every registered (name, version) pair."""
        return frozenset(self._orchestrations)

    @property
    def orchestration_names(self) -> list[str]:
        return sorted({n for n, _ in self._orchestrations})

    @property
    def activity_names(self) -> list[str]:
        return sorted(self._activities)

    def name_of(self, fn: Callable[..., Any] | str) -> str:
        """The registered name of a function, falling back to its ``__name__``."""
        if isinstance(fn, str):
            return fn
        return self._names.get(fn) or function_name(fn)

    def result_type_of(self, fn: Callable[..., Any] | str, *, activity: bool) -> Any:
        """The annotated result type of a task target, if it is known."""
        if isinstance(fn, str):
            spec = self.get_activity(fn) if activity else self.get_orchestration(fn, None)
            return spec.output_type if spec else None
        return _type_hints(fn)[1]
