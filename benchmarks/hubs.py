"""Where a trial's task hub lives, how to reach it, and how to remove it afterwards.

Every trial gets a fresh hub: a new SQLite file in a new temporary directory, a new
PostgreSQL schema, a new named in-memory store, or a new task hub on the run's Azurite. The
runner picks the place and cleans it up after the trial's process has ended, even if that
process had to be killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORES = ("memory", "sqlite", "postgresql", "azure")
# The stores W5-W7 and worker processes run on: Azurite is measured on W1-W4 (the Azure
# Storage issue's figures); its instance queries and entities are slower paths, not limits.
AZURE_WORKLOADS = ("L", "W1", "W2", "W3", "W4")
AZURE_SIZE = 0.1  # of each workload's counts (orchestrations, W2's activities)
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True, slots=True)
class HubPlace:
    """The place of one trial's hub: a private directory, and a schema name for PostgreSQL."""

    store: str
    directory: str
    pg_url: str
    schema: str
    azure_url: str = ""  # the run's Azurite, an azure:// URL with {hub} for the hub's name

    @classmethod
    def new(cls, store: str, workdir: str, pg_url: str, azure_url: str = "") -> HubPlace:
        token = uuid.uuid4().hex[:12]
        directory = Path(workdir) / f"trial-{token}"
        directory.mkdir(parents=True)
        return cls(store, str(directory), pg_url, f"bench_{token}", azure_url)

    @property
    def application_name(self) -> str:
        """The PostgreSQL ``application_name`` of every connection the trial's system opens:
        it finds the backends serving the trial (W1's server CPU)."""
        return self.schema

    def sqlite_path(self, name: str = "hub.db") -> str:
        return str(Path(self.directory) / name)

    def duratask_url(self) -> str:
        """The duratask store URL of this hub."""
        if self.store == "memory":
            return f"memory://{self.schema}"
        if self.store == "sqlite":
            return f"sqlite:///{self.sqlite_path()}"
        if self.store == "postgresql":
            return with_schema(self.pg_url, self.schema, self.application_name)
        if self.store == "azure":
            return self.azure_url.format(hub=self.schema.replace("_", ""))
        raise ValueError(f"unknown store {self.store!r}")

    def cleanup(self) -> None:
        """Remove the hub: its directory and, for PostgreSQL, its schema. Idempotent."""
        if self.store == "postgresql":
            with contextlib.suppress(Exception):
                drop_pg_schema(self.pg_url, self.schema)
        shutil.rmtree(self.directory, ignore_errors=True)

    def to_json(self) -> dict[str, str]:
        return {
            "store": self.store,
            "directory": self.directory,
            "pg_url": self.pg_url,
            "schema": self.schema,
            "azure_url": self.azure_url,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HubPlace:
        return cls(
            data["store"], data["directory"], data["pg_url"], data["schema"], data["azure_url"]
        )


def with_schema(pg_url: str, schema: str, application_name: str = "") -> str:
    """``pg_url`` with duratask's ``schema`` query parameter added, and libpq's
    ``application_name`` if one is given (duratask passes it on to its connections)."""
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
    return f"{url}&application_name={application_name}" if application_name else url


def drop_pg_schema(pg_url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def probe_postgres(pg_url: str) -> tuple[dict[str, str] | None, str]:
    """Server facts if PostgreSQL answers at ``pg_url``; else None and why not."""
    try:
        import psycopg
    except ImportError as exc:
        return None, f"psycopg is not installed ({exc}); pip install 'psycopg[binary]'"
    try:
        with psycopg.connect(pg_url, autocommit=True, connect_timeout=3) as conn:
            facts: dict[str, str] = {}
            for setting in ("server_version", "synchronous_commit", "fsync", "wal_sync_method"):
                row = conn.execute(f"SHOW {setting}").fetchone()
                facts[setting] = str(row[0]) if row else "?"
            return facts, ""
    except Exception as exc:
        return None, f"PostgreSQL at {pg_url} is not reachable: {' '.join(str(exc).split())}"


def probe_duratask_postgres(pg_url: str) -> str:
    """Why duratask cannot use PostgreSQL at ``pg_url``, or "" if it can open a store there."""
    try:
        from duratask.backends import open_store

        open_store(with_schema(pg_url, "bench_probe"))
    except Exception as exc:
        return f"duratask has no usable PostgreSQL store: {type(exc).__name__}: {exc}"
    return ""


def filesystem_of(path: str) -> str:
    """The mount point and filesystem type holding ``path`` (from /proc/mounts)."""
    real = os.path.realpath(path)
    best, fstype = "", "?"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, fstype = mount, parts[2]
    return f"{fstype} at {best}" if best else "?"
