"""Versioned SQL migrations shipped inside a store package (``migrations/NNN_name.sql``),
and the logic (functions) a store re-applies when it changes (``logic.sql``)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from duratask.backends._ownership import Found
from duratask.errors import SchemaVersionError, StoreError

_MIGRATION_NAME = re.compile(r"^(\d{3})_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    script: str


def load_migrations(package: str, store: str) -> list[Migration]:
    """The ``migrations/NNN_name.sql`` scripts of ``package`` in version order (1, 2, ...
    without gaps); ``store`` names the store in the error for a gap."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"{store} migrations must be numbered 001, 002, ...: {found}")
    return found


def check_upgradable(where: str, current: int, supported: int, found: Found | None) -> None:
    """Refuse (:class:`SchemaVersionError`) a hub at schema version ``current`` that this
    duratask, which knows versions up to ``supported``, cannot bring up to date: a newer
    one, or one of which ``found`` only some of duratask's tables."""
    if current > supported:
        raise SchemaVersionError(where, current, supported)
    if found is Found.DAMAGED:
        raise SchemaVersionError(
            where,
            current,
            supported,
            "it holds only some of duratask's tables: it was changed by hand, or is damaged",
        )


def mismatched_tables(
    where: str, current: int, supported: int, migration: Migration, cause: str
) -> SchemaVersionError:
    """The error for a migration that failed on tables that are not those of version
    ``current``; ``cause`` is the database's message."""
    return SchemaVersionError(
        where,
        current,
        supported,
        f"its tables do not match that version (migration {migration.name}: {cause}): "
        "it was changed by hand, or is damaged",
    )


@dataclass(frozen=True, slots=True)
class Logic:
    """A store's functions (``logic.sql``), re-applied whenever its ``digest`` changes."""

    script: str
    digest: str


def load_logic(package: str) -> Logic:
    """The ``logic.sql`` script of ``package`` and its digest."""
    script = resources.files(package).joinpath("logic.sql").read_text("utf-8")
    return Logic(script, hashlib.sha256(script.encode()).hexdigest())
