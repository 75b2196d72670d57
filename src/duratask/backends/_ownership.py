"""What is duratask's own in a SQLite file or PostgreSQL schema, and whether a place holds a
task hub, nothing, or somebody else's data.

duratask creates a hub only where there is nothing, and marks it with a one-row table
(:data:`MARKER`). A hub made before the mark existed is recognised by its tables. A place
holding anything else is not touched: no hub is created there, and deleting a hub drops only
duratask's own objects (the tables and functions its scripts create).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

MARKER = "duratask_hub"
MARKER_LAYOUT = "duratask task hub"
SCHEMA_VERSION = "schema_version"
# The tables every hub made before the marker has (schema version 1 on).
_LEGACY_CORE = frozenset({SCHEMA_VERSION, "instances", "history", "messages"})

TABLE, FUNCTION = "table", "function"
_CREATED = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(TABLE|FUNCTION)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?:\{schema\}\.)?\"?([A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)


def own_objects(scripts: Iterable[str]) -> frozenset[tuple[str, str]]:
    """Every ``(kind, name)`` (table or function) that duratask's scripts create, with the
    schema version table."""
    found = {(TABLE, SCHEMA_VERSION)}
    for script in scripts:
        text = re.sub(r"--[^\n]*", "", script)
        found.update((kind.lower(), name.lower()) for kind, name in _CREATED.findall(text))
    return frozenset(found)


class Found(Enum):
    """What a file or schema holds."""

    NOTHING = "nothing"  # no objects at all: a hub may be created there
    HUB = "hub"  # a duratask task hub (marked, or made before the mark)
    DAMAGED = "damaged"  # some of duratask's tables, but no hub: a SchemaVersionError
    FOREIGN = "foreign"  # somebody else's objects: a NotATaskHubError


@dataclass(frozen=True, slots=True)
class Survey:
    """What a place holds, and which of its objects are not duratask's."""

    found: Found
    foreign: list[str]


def survey(objects: Iterable[tuple[str, str]], own: frozenset[tuple[str, str]]) -> Survey:
    """Classify a place by its objects, each ``(kind, name)``."""
    present = {(kind, name.lower()) for kind, name in objects}
    tables = {name for kind, name in present if kind == TABLE}
    foreign = sorted(f"{name} ({kind})" if kind != TABLE else name for kind, name in present - own)
    if MARKER in tables or _LEGACY_CORE <= tables:
        return Survey(Found.HUB, foreign)
    if not present:
        return Survey(Found.NOTHING, [])
    if not foreign:
        return Survey(Found.DAMAGED, [])
    return Survey(Found.FOREIGN, foreign)
