"""The task hubs the chaos and soak tests run on: a SQLite file or a PostgreSQL schema.

A :class:`Target` gives the URL the workers use, the URL the test's client uses (on
PostgreSQL with its own ``application_name``, so the workers' connections can be told
apart: the store names them ``duratask[<schema>]`` unless the URL names them), and plain SQL
access to the hub's tables to check what the public API does not show.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duratask as dt

from ..conformance.conftest import drop_schema, new_schema, require_postgres

STORE_KINDS = ("sqlite", "postgres")
TERMINAL = [s.value for s in dt.OrchestrationStatus if s.is_terminal]


@dataclass
class Target:
    """One fresh task hub."""

    kind: str
    url: str
    client_url: str
    sqlite_path: Path | None = None
    schema: str | None = None
    postgres_url: str | None = None

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``query`` on the hub; ``{t}`` stands for a table prefix (the schema)."""
        if self.sqlite_path is not None:
            sqlite_query = query.format(t="").replace("%s", "?")
            with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
                return conn.execute(sqlite_query, params).fetchall()
        import psycopg
        from psycopg import sql

        assert self.schema is not None and self.postgres_url is not None
        prefix = sql.SQL("{}.").format(sql.Identifier(self.schema))
        statement = sql.SQL(query).format(t=prefix)
        with psycopg.connect(self.postgres_url, application_name="duratask-test-admin") as conn:
            return conn.execute(statement, params).fetchall()

    def leftovers(self) -> dict[str, list[tuple[Any, ...]]]:
        """Work still in the hub: messages, activity work items, instance leases."""
        return {
            "messages": self.rows("SELECT instance_id, event_type FROM {t}messages"),
            "activities": self.rows("SELECT instance_id, task_id FROM {t}activities"),
            "leases": self.rows(
                "SELECT instance_id FROM {t}instances WHERE lock_token IS NOT NULL"
            ),
        }

    def finished_count(self) -> int:
        """How many instances of the hub (sub-orchestrations too) are finished."""
        marks = ", ".join(["%s"] * len(TERMINAL))
        query = f"SELECT count(*) FROM {{t}}instances WHERE runtime_status IN ({marks})"
        return int(self.rows(query, TERMINAL)[0][0])

    def sequence_numbers(self) -> dict[str, list[int]]:
        """The stored history rows' sequence numbers, by instance, in order."""
        numbers: dict[str, list[int]] = {}
        query = "SELECT instance_id, sequence_number FROM {t}history ORDER BY 1, 2"
        for iid, number in self.rows(query):
            numbers.setdefault(iid, []).append(int(number))
        return numbers

    def worker_connections(self) -> int | None:
        """Open connections of this hub's workers (PostgreSQL only; None on SQLite)."""
        if self.schema is None:
            return None
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        return int(self.rows(query, (f"duratask[{self.schema}]",))[0][0])


@contextlib.contextmanager
def make_target(kind: str, tmp_path: Path) -> Iterator[Target]:
    """A fresh hub of ``kind``; a PostgreSQL schema is dropped afterwards."""
    if kind == "sqlite":
        path = tmp_path / "hub.db"
        url = f"sqlite:///{path}"
        yield Target(kind, url, url, sqlite_path=path)
        return
    if kind != "postgres":
        raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
    base = require_postgres()
    schema = new_schema()
    join = "&" if "?" in base else "?"
    url = f"{base}{join}schema={schema}"
    try:
        yield Target(
            kind,
            url,
            f"{url}&application_name=duratask-test-client",
            schema=schema,
            postgres_url=base,
        )
    finally:
        drop_schema(schema)
