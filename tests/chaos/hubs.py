"""The task hubs the chaos and soak tests run on: a SQLite file, a PostgreSQL schema or an
Azure Storage hub on Azurite (``azure_hub``).

A :class:`Target` gives the URL the workers use, the URL the test's client uses (on
PostgreSQL with its own ``application_name``, so the workers' connections can be told
apart: the store names them ``duratask[<schema>]`` unless the URL names them), and a look
at the hub's stored rows (plain SQL on the SQL stores) to check what the public API does
not show.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duratask as dt

from ..conformance.conftest import drop_schema, new_schema, require_postgres
from .supervisor import pause

if TYPE_CHECKING:
    from .supervisor import Supervisor

SQL_KINDS = ("sqlite", "postgres")
STORE_KINDS = (*SQL_KINDS, "azure")
TERMINAL = [s.value for s in dt.OrchestrationStatus if s.is_terminal]


@dataclass
class Target:
    """One fresh task hub, and a look at its storage beside the public API: what work is
    left, which instances and history rows are stored."""

    kind: str
    url: str
    client_url: str
    kill_interval: tuple[float, float] = (0.5, 2.0)
    """Seconds between two kills of the chaos tests (a random pause in this range)."""

    def leftovers(self) -> dict[str, list[Any]]:
        """Work still in the hub: messages, activity work items, instance and entity
        leases."""
        raise NotImplementedError

    def instance_ids(self) -> set[str]:
        """Every instance stored in the hub."""
        raise NotImplementedError

    def sequence_numbers(self) -> dict[str, list[int]]:
        """The stored history rows' sequence numbers, by instance, in order."""
        raise NotImplementedError

    def finished_count(self) -> int:
        """How many instances of the hub (sub-orchestrations too) are finished."""
        raise NotImplementedError

    def worker_connections(self) -> int | None:
        """Open database connections of this hub's workers (None where not counted)."""
        return None

    def storage_problems(self) -> list[str]:
        """What is wrong in the stored rows beyond what the other methods show."""
        return []

    def figures(self) -> dict[str, Any]:
        """Figures of the hub's storage worth printing with a run's."""
        return {}


@dataclass
class SqlTarget(Target):
    """A SQLite file or a PostgreSQL schema, read with plain SQL."""

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

    def leftovers(self) -> dict[str, list[Any]]:
        return {
            "messages": self.rows("SELECT instance_id, event_type FROM {t}messages"),
            "activities": self.rows("SELECT instance_id, task_id FROM {t}activities"),
            "leases": self.rows(
                "SELECT instance_id FROM {t}instances WHERE lock_token IS NOT NULL"
            ),
            "entity_messages": self.rows("SELECT entity_id FROM {t}entity_messages"),
            "entity_leases": self.rows(
                "SELECT entity_id FROM {t}entities WHERE lock_token IS NOT NULL"
            ),
        }

    def instance_ids(self) -> set[str]:
        return {iid for (iid,) in self.rows("SELECT instance_id FROM {t}instances")}

    def finished_count(self) -> int:
        marks = ", ".join(["%s"] * len(TERMINAL))
        query = f"SELECT count(*) FROM {{t}}instances WHERE runtime_status IN ({marks})"
        return int(self.rows(query, TERMINAL)[0][0])

    def sequence_numbers(self) -> dict[str, list[int]]:
        numbers: dict[str, list[int]] = {}
        query = "SELECT instance_id, sequence_number FROM {t}history ORDER BY 1, 2"
        for iid, number in self.rows(query):
            numbers.setdefault(iid, []).append(int(number))
        return numbers

    def worker_connections(self) -> int | None:
        if self.schema is None:
            return None
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        return int(self.rows(query, (f"duratask[{self.schema}]",))[0][0])


async def wait_for_drain(
    target: Target, supervisor: Supervisor, deadline: float, poll: float = 0.1
) -> None:
    """Wait until the hub holds no work (see :meth:`Target.leftovers`); AssertionError with
    what is left and the workers' logs at ``deadline``."""
    idle = asyncio.Event()  # never set: pause() is the poll interval
    while True:
        left = await asyncio.to_thread(target.leftovers)
        if not any(left.values()):
            return
        supervisor.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"the hub did not drain: {left}\n{supervisor.logs()}")
        await pause(idle, poll)


@contextlib.contextmanager
def make_target(kind: str, tmp_path: Path) -> Iterator[Target]:
    """A fresh hub of ``kind``; a PostgreSQL schema is dropped afterwards."""
    if kind == "sqlite":
        path = tmp_path / "hub.db"
        url = f"sqlite:///{path}"
        yield SqlTarget(kind, url, url, sqlite_path=path)
        return
    if kind == "azure":
        from .azure_hub import new_azure_hub  # imports the Azure clients only when used

        yield new_azure_hub(kind)
        return
    if kind != "postgres":
        raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
    base = require_postgres()
    schema = new_schema()
    join = "&" if "?" in base else "?"
    url = f"{base}{join}schema={schema}"
    try:
        yield SqlTarget(
            kind,
            url,
            f"{url}&application_name=duratask-test-client",
            schema=schema,
            postgres_url=base,
        )
    finally:
        drop_schema(schema)
