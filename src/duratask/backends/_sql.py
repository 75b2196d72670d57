"""What the two SQL stores (SQLite and PostgreSQL) share, written once over a dialect.

The stores keep instances in the same ``instances`` table, with the same columns and the
same meaning; they differ in placeholders (``?`` / ``%s``), in how a time is stored
(microseconds since the epoch / ``timestamptz``), in how a list is matched (``IN`` /
``= ANY``), in how a prefix is matched, and in where the table lives (a schema on
PostgreSQL). A :class:`Dialect` says those things; the rest is here: the filters of a
query or a purge, the query, count and purge operations of the client half of the seam
(:class:`SqlInstanceQueries`), and the encoding of instance rows and outbound messages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from duratask.backends._paging import page_of, resume_after
from duratask.backends._shared import (
    check_page_size,
    pending_state,
    rest_expiry,
    started_event,
    state_from_row,
)
from duratask.backends.base import (
    TERMINAL_STATUSES,
    InstanceQuery,
    InstanceSort,
    OrchestrationMessage,
    PurgeFilter,
    QueryPage,
)
from duratask.history import ExecutionStarted, event_to_json, event_type_name
from duratask.state import OrchestrationState, OrchestrationStatus

SORT_COLUMNS = {
    InstanceSort.CREATED: "created_at",
    InstanceSort.LAST_UPDATED: "last_updated_at",
    InstanceSort.STATUS: "runtime_status",
    InstanceSort.NAME: "name",
}
INSTANCE_COLUMNS = (
    "instance_id, name, version, runtime_status, created_at, last_updated_at, completed_at, "
    "execution_id, input, output, custom_status, failure_details, parent_instance_id, "
    "scheduled_start_at, task_queue"
)
WORKER_COLUMNS = "worker_id, host, pid, started_at, heartbeat_at, registrations, status"
# The end of an insert of a worker's row: a worker already there is refreshed.
WORKER_REFRESH = """ON CONFLICT (worker_id) DO UPDATE
SET heartbeat_at = excluded.heartbeat_at, registrations = excluded.registrations,
    status = excluded.status"""
# The end of the backlog query: counts by kind and name from the CTE ``flags`` (kind, name,
# has_token, due_now, held) that each store writes in its own dialect.
BACKLOG_TOTALS = """SELECT kind, name,
    sum(CASE WHEN NOT held AND due_now THEN 1 ELSE 0 END) AS ready,
    sum(CASE WHEN held AND NOT has_token OR NOT held AND NOT due_now THEN 1 ELSE 0 END) AS later,
    sum(CASE WHEN held AND has_token THEN 1 ELSE 0 END) AS leased
FROM flags GROUP BY kind, name ORDER BY kind DESC, name"""


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one SQL store writes what :mod:`duratask.backends._sql` builds."""

    placeholder: str  # a positional parameter
    instances: str  # the instances table, as a statement names it
    to_time: Callable[[datetime], Any]  # a time as the store binds it
    from_time: Callable[[Any], datetime]  # a stored time, aware UTC
    in_list: Callable[[str, list[object]], tuple[str, list[object]]]
    starts_with: Callable[[str, str], tuple[str, list[object]]]
    contains: Callable[[str, str], tuple[str, list[object]]]  # a substring, no wildcards
    later: Callable[[Any, timedelta], Any]  # a stored time plus a duration, as stored

    def time_or_none(self, value: datetime | None) -> Any:
        return None if value is None else self.to_time(value)


class Where:
    """AND-ed SQL conditions with their bound parameters, built from fixed fragments whose
    parameters are written ``{p}`` (the dialect's placeholder)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.conditions: list[str] = []
        self.params: list[object] = []

    def add(self, condition: str, *params: object) -> None:
        self.conditions.append(condition.replace("{p}", self.dialect.placeholder))
        self.params.extend(params)

    def add_in(self, column: str, values: Iterable[object]) -> None:
        condition, params = self.dialect.in_list(column, list(values))
        self.conditions.append(condition)
        self.params.extend(params)

    def add_prefix(self, column: str, prefix: str) -> None:
        condition, params = self.dialect.starts_with(column, prefix)
        self.conditions.append(condition)
        self.params.extend(params)

    def sql(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "true"


def instance_filter(query: InstanceQuery, dialect: Dialect) -> Where:
    """The WHERE conditions of ``query``'s filters (not its paging)."""
    where = Where(dialect)
    if query.statuses is not None:
        where.add_in("runtime_status", (s.value for s in query.statuses))
    if query.created_from is not None:
        where.add("created_at >= {p}", dialect.to_time(query.created_from))
    if query.created_to is not None:
        where.add("created_at < {p}", dialect.to_time(query.created_to))
    if query.name is not None:
        where.add("name = {p}", query.name)
    if query.instance_id_prefix is not None:
        where.add_prefix("instance_id", query.instance_id_prefix)
    if query.parent_instance_id is not None:
        where.add("parent_instance_id = {p}", query.parent_instance_id)
    if query.top_level_only:
        where.add("parent_instance_id IS NULL")
    if query.custom_status_contains is not None:
        condition, params = dialect.contains("custom_status", query.custom_status_contains)
        where.add(condition.replace(dialect.placeholder, "{p}"), *params)
    return where


def purge_filter(purge: PurgeFilter, dialect: Dialect) -> Where:
    """The WHERE conditions of the terminal instances ``purge`` deletes."""
    statuses = TERMINAL_STATUSES
    if purge.statuses is not None:
        statuses = statuses & purge.statuses
    where = Where(dialect)
    where.add_in("runtime_status", (s.value for s in statuses))
    if purge.created_before is not None:
        where.add("created_at < {p}", dialect.to_time(purge.created_before))
    if purge.created_from is not None:
        where.add("created_at >= {p}", dialect.to_time(purge.created_from))
    if purge.completed_before is not None:
        where.add("completed_at < {p}", dialect.to_time(purge.completed_before))
    return where


def state_params(state: OrchestrationState, dialect: Dialect) -> dict[str, Any]:
    """Named parameters for the instance columns of ``state``."""
    failure, to_time = state.failure_details, dialect.to_time
    completed_at, scheduled_start_at = state.completed_at, state.scheduled_start_at
    return {  # at every step: no helper calls for the usual None
        "instance_id": state.instance_id,
        "name": state.name,
        "version": state.version,
        "runtime_status": state.runtime_status._value_,  # .value is a descriptor call
        "created_at": to_time(state.created_at),
        "last_updated_at": to_time(state.last_updated_at),
        "completed_at": None if completed_at is None else to_time(completed_at),
        "execution_id": state.execution_id,
        "input": state.serialized_input,
        "output": state.serialized_output,
        "custom_status": state.serialized_custom_status,
        "failure_details": failure.to_json() if failure is not None else None,
        "parent_instance_id": state.parent_instance_id,
        "scheduled_start_at": None if scheduled_start_at is None else to_time(scheduled_start_at),
        "task_queue": state.task_queue,
    }


def created_row(message: OrchestrationMessage, dialect: Dialect) -> dict[str, Any]:
    """The instance row a create inserts: PENDING, from its ``ExecutionStarted`` message
    (TypeError for any other)."""
    return state_params(pending_state(message.instance_id, started_event(message)), dialect)


def rest_until(retry_at: datetime | None, dialect: Dialect) -> Any:
    """The lease expiry that rests an abandoned instance until ``retry_at`` (None: no rest)."""
    return None if retry_at is None else dialect.to_time(rest_expiry(retry_at))


class OutboundMessage:
    """A message serialised up front, to be enqueued inside a transaction. ``starts`` is
    the row an :class:`ExecutionStarted` creates if its instance does not exist."""

    __slots__ = ("instance_id", "params", "starts")

    def __init__(self, message: OrchestrationMessage, dialect: Dialect) -> None:
        event = message.event
        self.instance_id = message.instance_id
        self.starts = (
            state_params(pending_state(message.instance_id, event), dialect)
            if isinstance(event, ExecutionStarted)
            else None
        )
        change = message.status_change
        self.params: dict[str, Any] = {
            "instance_id": message.instance_id,
            "execution_id": message.execution_id,
            "event_type": event_type_name(event),
            "event": event_to_json(event),
            "visible_at": dialect.time_or_none(message.visible_at),
            "status_when": change.when.value if change else None,
            "status_becomes": change.becomes.value if change else None,
        }


class SqlRows(ABC):
    """What a SQL store gives the operations written once over it: its dialect, its clock
    and a way to run one statement (its own text, positional or named parameters)."""

    _dialect: Dialect

    @abstractmethod
    def _now(self) -> Any:
        """The time now, as the store binds it."""

    @abstractmethod
    async def _read_rows(self, sql: str, params: Any) -> list[Mapping[str, Any]]:
        """The rows of one read-only statement."""

    @abstractmethod
    async def _write_rows(self, sql: str, params: Any, *, durable: bool = True) -> int:
        """Run one write statement in its own transaction; how many rows it touched.
        ``durable=False``: a write that may be lost in a crash (a lease, a worker's row)."""

    async def _extend_lease(
        self, statement: str, params: dict[str, Any], lease: timedelta, *, durable: bool = False
    ) -> datetime | None:
        """Run ``statement``, which extends a lease held with ``params`` to ``expires_at``
        (now + ``lease``; ``now`` is bound too): the new expiry, or None if the lease was
        lost."""
        now = self._now()
        expires_at = self._dialect.later(now, lease)
        bound = {**params, "now": now, "expires_at": expires_at}
        if not await self._write_rows(statement, bound, durable=durable):
            return None
        return self._dialect.from_time(expires_at)


class SqlInstanceQueries(SqlRows):
    """The query, count and purge operations of the client half of the seam, for a store
    whose instances live in an SQL table; the store runs the statements."""

    async def query_instances(self, query: InstanceQuery) -> QueryPage:
        """Matching instances in the query's order (ties by instance id); ``created_from`` is
        inclusive, ``created_to`` exclusive; the token resumes after the last row of a full
        page."""
        check_page_size(query.page_size)
        dialect = self._dialect
        where = instance_filter(query, dialect)
        column = SORT_COLUMNS[query.sort]
        direction = "DESC" if query.descending else "ASC"
        after = resume_after(query)
        if after is not None:
            value, instance_id = after
            bound = dialect.to_time(value) if isinstance(value, datetime) else value
            beyond = "<" if query.descending else ">"
            where.add(f"({column}, instance_id) {beyond} ({{p}}, {{p}})", bound, instance_id)
        sql = (
            f"SELECT {INSTANCE_COLUMNS} FROM {dialect.instances} WHERE {where.sql()} "
            f"ORDER BY {column} {direction}, instance_id {direction} "
            f"LIMIT {dialect.placeholder}"
        )
        rows = await self._read_rows(sql, [*where.params, query.page_size + 1])
        states = [state_from_row(r, dialect.from_time) for r in rows]
        page, token = page_of(query, states)
        return QueryPage(states=page, continuation_token=token)

    async def count_instances(self, query: InstanceQuery) -> dict[OrchestrationStatus, int]:
        """Counts by status of the instances matching ``query``'s filters."""
        where = instance_filter(query, self._dialect)
        sql = (
            f"SELECT runtime_status, count(*) AS n FROM {self._dialect.instances} "
            f"WHERE {where.sql()} GROUP BY runtime_status"
        )
        rows = await self._read_rows(sql, where.params)
        return {OrchestrationStatus(row["runtime_status"]): row["n"] for row in rows}

    async def purge_instance(self, instance_id: str) -> bool:
        """Delete a terminal instance and all it owns; False if absent or not terminal."""
        where = Where(self._dialect)
        where.add("instance_id = {p}", instance_id)
        where.add_in("runtime_status", (s.value for s in TERMINAL_STATUSES))
        return bool(await self._purge(where))

    async def purge_instances(self, purge_filter_: PurgeFilter) -> int:
        """Delete every terminal instance matching the filter; returns how many."""
        return await self._purge(purge_filter(purge_filter_, self._dialect))

    async def _purge(self, where: Where) -> int:
        # Deleting an instance row deletes all it owns (ON DELETE CASCADE).
        sql = f"DELETE FROM {self._dialect.instances} WHERE {where.sql()}"
        return await self._write_rows(sql, where.params)
