"""The SQLite task hub store: one file, shareable by several worker and client processes."""

from __future__ import annotations

import json
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from duratask.backends._shared import (
    LeasedCreates,
    StartLease,
    backlog_from_row,
    ended_executions,
    execution_from_row,
    history_is_known,
    leased_activities,
    new_lock_token,
    schedule_from_row,
    schedule_params,
    started_work_item,
    takeover_from_row,
    utc_now,
    work_kinds,
)
from duratask.backends._sql import OutboundMessage, SqlInstanceQueries, created_row, rest_until
from duratask.backends._sql_leases import SqlLeases
from duratask.backends._wakeups import (
    ACTIVITY,
    ENTITY,
    ORCHESTRATION,
    SCHEDULE,
    InstanceWatch,
    WakeUps,
    hub_wakeups,
)
from duratask.backends.base import (
    EXECUTIONS_KEPT,
    ActivityRequest,
    ActivityWorkItem,
    BacklogEntry,
    EpisodeFence,
    ExecutionRecord,
    HistoryMark,
    KnownHistories,
    LeaseHeld,
    LeaseTakeover,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
    ScheduleRecord,
    StoreDescription,
)
from duratask.backends.sqlite import _queries as q
from duratask.backends.sqlite._codec import (
    DIALECT,
    from_micros,
    locked_message_from_row,
    state_from_row,
    state_params,
    to_micros,
)
from duratask.backends.sqlite._database import Database
from duratask.backends.sqlite._entities import SqliteEntities, enqueue_entity_messages
from duratask.errors import (
    InstanceBusyError,
    LeaseLostError,
    OrchestrationAlreadyExistsError,
    ScheduleAlreadyExistsError,
    StoreError,
    TaskHubNotFoundError,
)
from duratask.history import (
    HistoryEvent,
    event_from_json,
    event_to_json,
    event_type_name,
)
from duratask.state import OrchestrationState, OrchestrationStatus


class SqliteOrchestrationService(SqliteEntities, SqlLeases, SqlInstanceQueries, LeasedCreates):
    """A task hub in one SQLite file (WAL mode), safe to share between processes.

    ``synchronous`` is the SQLite ``PRAGMA synchronous`` level (FULL survives power loss);
    ``busy_timeout`` is how long, in seconds, to wait for another process's write lock;
    ``clock`` (aware UTC) decides visibility and lease expiry, replaceable in tests.
    """

    wakes_all_processes = False  # other processes on the same file poll
    _dialect = DIALECT
    _statements = q

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], datetime] | None = None,
        synchronous: str = "FULL",
        busy_timeout: float = 10.0,
    ) -> None:
        if path == ":memory:" or path.startswith("file:"):
            raise ValueError(
                f"SQLite task hub path {path!r}: a hub is shared by several connections, which "
                "an in-memory or URI-named database is not; use a file, or the memory store"
            )
        if "\x00" in path:
            raise ValueError(f"SQLite task hub path {path!r} contains a NUL character")
        self._db = Database(path, synchronous=synchronous, busy_timeout=busy_timeout)
        self._clock = clock or utc_now
        # Wake-ups reach every store object on this file in this process; other processes
        # sharing the file find new work by polling.
        self._wakeups = WakeUps()
        self._hub = hub_wakeups(os.path.realpath(path))
        self._hub.join(self._wakeups)

    @property
    def path(self) -> str:
        """The SQLite file of the task hub."""
        return self._db.path

    def _now(self) -> int:
        if self._clock is utc_now:  # the usual clock: the same microseconds, no datetime
            return time.time_ns() // 1000
        return to_micros(self._clock())

    def _enqueue_outbound(
        self, conn: sqlite3.Connection, message: OrchestrationMessage, now: int
    ) -> bool:
        return _enqueue(conn, OutboundMessage(message, DIALECT), now)

    # -- push wake-ups (SupportsWakeUps) ------------------------------------------------------
    async def wait_for_notification(self, timeout: float, *, kind: str | None = None) -> bool:
        """Wait up to ``timeout`` s for a sign (from this process) that work may be available."""
        return await self._wakeups.wait_for_work(timeout, kind)

    def watch_instance(self, instance_id: str) -> InstanceWatch:
        """Interest in one instance's row changing (changes made in this process)."""
        return self._wakeups.watch(instance_id)

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        """Connect, applying pending schema migrations (idempotent). With ``create`` a
        missing file (in a directory that exists) or an empty one becomes a task hub;
        without, :class:`TaskHubNotFoundError` is raised unless the file holds one."""
        _check_file(self.path, create=create)
        started = self._db.start()
        try:
            await self._db.migrate(self._now(), create=create)
        except BaseException:
            if started:  # leave a store that was already open to its other users
                await self._db.stop()
            raise

    async def create_task_hub(self) -> None:
        """Create the hub, with any missing directories of its file, or bring it up to
        date; the store is left open."""
        folder = Path(self.path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the directory of the SQLite task hub {self.path!r}: "
                f"{exc.strerror or exc}"
            ) from None
        await self.open(create=True)

    def describe(self) -> StoreDescription:
        """The SQLite file (its absolute path)."""
        location = os.path.realpath(self.path)
        return StoreDescription("sqlite", f"SQLite {location!r}", ("sqlite", location))

    async def close(self) -> None:
        """Close the connection; :meth:`open` may be called again."""
        await self._db.stop()

    async def delete_task_hub(self) -> None:
        """Drop the hub's own tables, never another application's; the file stays and a later
        :meth:`open` recreates the hub."""
        await self._db.drop_own_tables()

    # -- orchestration work items -------------------------------------------------------
    async def _lease_next_instance(
        self,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories,
        keys: list[str] | None,
        queues: list[str] | None,
    ) -> OrchestrationWorkItem | None:
        now = self._now()
        wanted = {
            "keys": json.dumps(keys) if keys is not None else None,
            "queues": json.dumps(queues) if queues is not None else None,
        }
        params = {"now": now, **wanted}
        # Cheap read first, so idle pollers do not queue up for the write lock.
        if not await self._db.read(lambda c: _fetch_one(c, q.SELECT_NEXT_INSTANCE, params)):
            return None
        token = new_lock_token()

        def job(conn: sqlite3.Connection) -> OrchestrationWorkItem | None:
            # The time is read again under the write lock: a message committed since the
            # read above has an enqueue time after that read's time, and must still count.
            now = self._now()
            row = conn.execute(q.SELECT_NEXT_INSTANCE, {"now": now, **wanted}).fetchone()
            if row is None:
                return None
            if row["lock_token"] is not None:  # a lease that ran out, never released
                _record_takeover(conn, row, now, owner)
            return _lease_instance(conn, row[0], now, owner, token, lease, known_histories)

        return await self._db.write(job, durable=False)

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        """Commit one episode in one transaction while ``fence`` holds (see the seam)."""
        instance_id = commit.state.instance_id
        lock_token = fence.lock_token if isinstance(fence, LeaseHeld) else None
        write = _EpisodeWrite(commit, self._now(), lock_token)

        def job(conn: sqlite3.Connection) -> list[int]:
            length = _check_fence(conn, instance_id, fence, write.now)
            if (commit.reset_history and length) or commit.continued_executions:
                _record_ended_executions(conn, commit, write.now, stored_ended=bool(length))
            finished = commit.finished_activity
            if finished is not None:
                key = (finished.work_item_id, finished.lock_token)
                if not conn.execute(q.DELETE_LEASED_ACTIVITY, key).rowcount:
                    raise LeaseLostError(f"lease on activity {finished.work_item_id} was lost")
            return write.apply(conn, length)

        leased_ids = await self._db.write(job, covering=True)  # a commit always writes
        self._hub.work(work_kinds(commit))
        self._hub.instances_changed([instance_id])
        return write.leased_items(leased_ids)

    async def abandon_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at``, the instance rests until then."""
        release = {"instance_id": work_item.instance_id, "token": work_item.lock_token}
        retry_us = rest_until(retry_at, DIALECT)

        def job(conn: sqlite3.Connection) -> None:
            if retry_us is None:
                conn.execute(q.RELEASE_INSTANCE_LEASE, release)
            else:
                conn.execute(q.REST_INSTANCE, {**release, "retry_at": retry_us})

        await self._db.write(job)
        if retry_us is None:
            self._hub.work([ORCHESTRATION])

    # -- activity work items --------------------------------------------------------------
    async def _lease_activities(
        self,
        owner: str,
        lease: timedelta,
        max_items: int,
        names: list[str] | None,
        queues: list[str] | None,
    ) -> list[ActivityWorkItem]:
        now = self._now()
        params = {
            "now": now,
            "max_items": max_items,
            "names": json.dumps(names) if names is not None else None,
            "queues": json.dumps(queues) if queues is not None else None,
        }
        if not await self._db.read(lambda c: _fetch_one(c, q.SELECT_NEXT_ACTIVITIES, params)):
            return []
        expires_at = now + _micros(lease)
        locked_until = from_micros(expires_at)
        token = new_lock_token()
        lease_params = {**params, "token": token, "owner": owner, "expires_at": expires_at}

        def job(conn: sqlite3.Connection) -> list[ActivityWorkItem]:
            rows = conn.execute(q.LEASE_NEXT_ACTIVITIES, lease_params).fetchall()
            return leased_activities(rows, token, locked_until, _duration)

        return await self._db.write(job, durable=False)

    async def complete_activity_work_item(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> None:
        """Delete the activity and enqueue its result, in one transaction."""
        now = self._now()
        outbound = OutboundMessage(result, DIALECT)

        def job(conn: sqlite3.Connection) -> None:
            _finish_activity(conn, work_item, outbound, now)

        await self._db.write(job)
        self._hub.work([ORCHESTRATION])

    async def abandon_activity_work_item(
        self, work_item: ActivityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; the activity is visible again at ``retry_at`` (now if None)."""
        params = {
            "id": work_item.work_item_id,
            "token": work_item.lock_token,
            "visible_at": to_micros(retry_at) if retry_at is not None else self._now(),
        }
        await self._db.write(lambda c: c.execute(q.RELEASE_ACTIVITY_LEASE, params))
        self._hub.work([ACTIVITY])

    # -- schedules ---------------------------------------------------------------------------
    async def create_schedule(self, record: ScheduleRecord) -> None:
        """Store a new schedule; :class:`ScheduleAlreadyExistsError` if the id is taken."""
        params = schedule_params(record, to_micros)
        created = await self._db.write(lambda c: c.execute(q.INSERT_SCHEDULE, params).rowcount)
        if not created:
            raise ScheduleAlreadyExistsError(record.schedule_id)
        self._hub.work([SCHEDULE])

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """One schedule, or None."""
        params = {"schedule_id": schedule_id}
        row = await self._db.read(lambda c: c.execute(q.SELECT_SCHEDULE, params).fetchone())
        return None if row is None else schedule_from_row(row, from_micros)

    async def list_schedules(self, prefix: str | None = None) -> list[ScheduleRecord]:
        """The schedules whose id starts with ``prefix``, by id."""
        params = {"prefix": prefix or "", "prefix_length": len(prefix or "")}
        rows = await self._db.read(lambda c: c.execute(q.SELECT_SCHEDULES, params).fetchall())
        return [schedule_from_row(row, from_micros) for row in rows]

    async def update_schedule(self, record: ScheduleRecord) -> bool:
        """Write the schedule if its stored revision is still ``record.revision``."""
        params = schedule_params(record, to_micros)
        written = await self._db.write(lambda c: c.execute(q.UPDATE_SCHEDULE, params).rowcount)
        if written:
            self._hub.work([SCHEDULE])
        return bool(written)

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False if there was none."""
        params = {"schedule_id": schedule_id}
        deleted = await self._db.write(lambda c: c.execute(q.DELETE_SCHEDULE, params).rowcount)
        self._hub.work([SCHEDULE])
        return bool(deleted)

    async def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` schedules due at ``now``, soonest first."""
        params = {"now": to_micros(now), "limit": limit}
        rows = await self._db.read(lambda c: c.execute(q.DUE_SCHEDULES, params).fetchall())
        return [schedule_from_row(row, from_micros) for row in rows]

    async def next_schedule_due_at(self) -> datetime | None:
        """The earliest time a schedule is due."""
        row = await self._db.read(lambda c: c.execute(q.NEXT_SCHEDULE_DUE_AT).fetchone())
        return None if row is None or row["due"] is None else from_micros(row["due"])

    # -- workers and their leases -----------------------------------------------------------
    async def backlog(self) -> list[BacklogEntry]:
        """The work waiting, by kind and name."""
        params = {"now": self._now()}
        rows = await self._db.read(lambda c: c.execute(q.BACKLOG, params).fetchall())
        return [backlog_from_row(row) for row in rows]

    async def lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        """The instance's leases that ran out unreleased or were broken, oldest first."""
        rows = await self._db.read(
            lambda c: c.execute(q.SELECT_TAKEOVERS, (instance_id,)).fetchall()
        )
        return [takeover_from_row(row, from_micros) for row in rows]

    async def list_executions(self, instance_id: str) -> list[ExecutionRecord]:
        """The records of the instance's earlier executions, oldest first."""
        rows = await self._db.read(
            lambda c: c.execute(q.SELECT_EXECUTIONS, (instance_id,)).fetchall()
        )
        return [execution_from_row(row, from_micros) for row in rows]

    async def break_leases(self, owner: str) -> int:
        """Free every instance and activity ``owner`` holds."""
        params = {"owner": owner, "now": self._now()}

        def job(conn: sqlite3.Connection) -> int:
            conn.execute(q.RECORD_BROKEN_LEASES, params)
            broken: int = conn.execute(q.BREAK_INSTANCE_LEASES, params).rowcount
            broken += conn.execute(q.BREAK_ENTITY_LEASES, params).rowcount
            return broken + conn.execute(q.BREAK_ACTIVITY_LEASES, params).rowcount

        broken = await self._db.write(job)
        if broken:
            self._hub.work([ORCHESTRATION, ACTIVITY, ENTITY])
        return broken

    # -- client operations -----------------------------------------------------------------
    async def _create(
        self,
        message: OrchestrationMessage,
        replaceable: frozenset[OrchestrationStatus],
        start_lease: StartLease | None,
        *,
        durable: bool = True,
    ) -> OrchestrationWorkItem | None:
        instance_id = message.instance_id
        row = created_row(message, DIALECT)
        outbound = OutboundMessage(message, DIALECT)
        now = self._now()
        if start_lease is not None and not start_lease.allows(message, from_micros(now)):
            start_lease = None
        token = new_lock_token() if start_lease is not None else ""

        def job(conn: sqlite3.Connection) -> OrchestrationWorkItem | None:
            existing = conn.execute(q.SELECT_STATUS, (instance_id,)).fetchone()
            if existing is not None:
                status = OrchestrationStatus(existing[0])
                if status not in replaceable:
                    raise OrchestrationAlreadyExistsError(instance_id, status)
                conn.execute(q.DELETE_INSTANCE, (instance_id,))  # cascades to its children
            conn.execute(q.INSERT_INSTANCE_IF_ABSENT, row)
            if start_lease is None or existing is not None:  # a replaced one: to the fetchers
                _enqueue(conn, outbound, now)
                return None
            expires_at = now + _micros(start_lease.duration)
            params = {**outbound.params, "now": now}
            message_id = int(conn.execute(q.INSERT_DEQUEUED_MESSAGE, params).lastrowid or 0)
            lease = {"token": token, "owner": start_lease.owner, "expires_at": expires_at}
            conn.execute(q.LEASE_INSTANCE, {"instance_id": instance_id, **lease})
            return started_work_item(message, message_id, token, from_micros(expires_at))

        leased: OrchestrationWorkItem | None = await self._db.write(job, durable=durable)
        if leased is None:
            self._hub.work([ORCHESTRATION])
        self._hub.instances_changed([instance_id])
        return leased

    async def wait_durable(self, timeout: float) -> None:
        """Every write of this store object is durable when it returns (see the seam)."""
        await self._db.wait_durable(timeout)

    async def send_message(self, message: OrchestrationMessage) -> bool:
        """Enqueue a message; False if its instance does not exist."""
        now = self._now()
        outbound = OutboundMessage(message, DIALECT)
        sent: bool = await self._db.write(lambda c: _enqueue(c, outbound, now))
        self._hub.work([ORCHESTRATION])
        return sent

    async def get_instance(self, instance_id: str) -> OrchestrationState | None:
        """The stored state of one instance, or None."""
        row = await self._db.read(lambda c: _fetch_one(c, q.SELECT_INSTANCE, (instance_id,)))
        return state_from_row(row) if row is not None else None

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The instance's history in order (empty if unknown)."""
        return await self._db.read(lambda c: _history(c, instance_id))

    async def _read_rows(self, sql: str, params: Any) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = await self._db.read(
            lambda c: c.execute(sql, params).fetchall()
        )
        return rows

    async def _write_rows(self, sql: str, params: Any, *, durable: bool = True) -> int:
        touched: int = await self._db.write(
            lambda c: c.execute(sql, params).rowcount, durable=durable
        )
        return touched


def _check_file(path: str, *, create: bool) -> None:
    """Refuse a hub file that cannot exist (its directory is missing), or that does not
    exist when nothing may be created."""
    folder = Path(path).parent
    if not folder.is_dir():
        problem = f"the directory {str(folder)!r} does not exist"
        if not os.path.isabs(path):
            problem += (
                f" (the path is relative to {os.getcwd()!r}; in a store URL four slashes make "
                f"an absolute path: sqlite:////{path})"
            )
        if not create:
            raise TaskHubNotFoundError(f"no SQLite task hub at {path!r}: {problem}")
        raise StoreError(
            f"cannot create the SQLite task hub {path!r}: {problem} (create it first; "
            "'duratask hub create' does)"
        )
    if not create and not os.path.exists(path):
        raise TaskHubNotFoundError(f"no SQLite task hub at {path!r}: no such file")


def _enqueue(conn: sqlite3.Connection, outbound: OutboundMessage, now: int) -> bool:
    """Insert a message (inside a write transaction); an ExecutionStarted creates its
    instance row if absent, any other message to a missing instance is dropped (False)."""
    if outbound.starts is not None:
        conn.execute(q.INSERT_INSTANCE_IF_ABSENT, outbound.starts)
    elif conn.execute(q.INSTANCE_EXISTS, (outbound.instance_id,)).fetchone() is None:
        return False
    params = {**outbound.params, "now": now}
    conn.execute(q.INSERT_MESSAGE, params)
    if params["status_when"] is not None:
        conn.execute(q.CHANGE_STATUS, params)
    return True


class _EpisodeWrite:
    """An episode's commit, encoded before its transaction; :meth:`apply` writes it once
    the lease (or the free instance) has been checked."""

    def __init__(self, commit: OrchestrationCommit, now: int, lock_token: str | None) -> None:
        self.commit = commit
        self.now = now
        self.instance_id = commit.state.instance_id
        self.row = state_params(commit.state)
        self.events = [(event_type_name(e), event_to_json(e)) for e in commit.new_events]
        self.outbound = [OutboundMessage(m, DIALECT) for m in commit.messages]
        self.release = {"instance_id": self.instance_id, "token": lock_token}
        eager = commit.eager_activities
        self.owner = eager.owner if eager else None
        self.leased_count = min(len(commit.activities), eager.max_items) if eager else 0
        self.expires_at = now + _micros(eager.duration) if eager else 0
        self.tokens = [new_lock_token() for _ in range(self.leased_count)]

    def apply(self, conn: sqlite3.Connection, stored_length: int) -> list[int]:
        """Append the history, consume, schedule, send and update the row (releasing the
        lease); returns the ids of the activities leased to the committing worker."""
        commit, instance_id, now = self.commit, self.instance_id, self.now
        first = 0 if commit.reset_history else stored_length
        if commit.reset_history:
            conn.execute(q.DELETE_HISTORY, (instance_id,))
        conn.executemany(
            q.INSERT_HISTORY,
            [(instance_id, first + i, kind, text) for i, (kind, text) in enumerate(self.events)],
        )
        if commit.consumed_message_ids:
            conn.executemany(
                q.DELETE_MESSAGE, [(mid, instance_id) for mid in commit.consumed_message_ids]
            )
        leased_ids = []
        for request, token in zip(commit.activities, self.tokens, strict=False):
            row = _leased_activity_row(request, now, token, self.owner, self.expires_at)
            cursor = conn.execute(q.INSERT_LEASED_ACTIVITY, row)
            leased_ids.append(int(cursor.lastrowid or 0))
        if len(commit.activities) > self.leased_count:
            conn.executemany(
                q.INSERT_ACTIVITY,
                [_activity_row(a, now) for a in commit.activities[self.leased_count :]],
            )
        for message in self.outbound:
            _enqueue(conn, message, now)
        enqueue_entity_messages(conn, commit.entity_messages, now)
        if commit.changes_instance:
            conn.execute(q.UPDATE_INSTANCE, _UPDATE_INSTANCE_ROW(self.row))  # releases the lease
            conn.execute(q.UPDATE_INSTANCE_INDEXED, _UPDATE_INSTANCE_INDEXED_ROW(self.row))
        else:
            conn.execute(q.RELEASE_INSTANCE_LEASE, self.release)
        return leased_ids

    def leased_items(self, leased_ids: list[int]) -> list[ActivityWorkItem]:
        return [
            ActivityWorkItem(
                work_item_id=activity_id,
                request=request,
                lock_token=token,
                locked_until=from_micros(self.expires_at),
                dequeue_count=1,
            )
            for activity_id, request, token in zip(
                leased_ids, self.commit.activities, self.tokens, strict=False
            )
        ]


def _finish_activity(
    conn: sqlite3.Connection, work_item: ActivityWorkItem, result: OutboundMessage, now: int
) -> bool:
    """Delete the leased activity and enqueue its result; False if the instance is gone."""
    key = (work_item.work_item_id, work_item.lock_token)
    if not conn.execute(q.DELETE_LEASED_ACTIVITY, key).rowcount:
        raise LeaseLostError(f"lease on activity {work_item.work_item_id} was lost")
    return _enqueue(conn, result, now)


def _lease_instance(
    conn: sqlite3.Connection,
    instance_id: str,
    now: int,
    owner: str,
    token: str,
    lease: timedelta,
    known_histories: Mapping[str, HistoryMark] | None,
) -> OrchestrationWorkItem:
    """Lease a free instance with its visible messages (inside a write transaction)."""
    expires_at = now + _micros(lease)
    lease_params = {"instance_id": instance_id, "now": now}
    conn.execute(
        q.LEASE_INSTANCE, {**lease_params, "token": token, "owner": owner, "expires_at": expires_at}
    )
    conn.execute(q.COUNT_DEQUEUES, lease_params)
    messages = conn.execute(q.SELECT_VISIBLE_MESSAGES, lease_params).fetchall()
    state = state_from_row(conn.execute(q.SELECT_INSTANCE, (instance_id,)).fetchone())
    length: int = conn.execute(q.HISTORY_LENGTH, (instance_id,)).fetchone()[0]
    known = history_is_known(known_histories, instance_id, state.execution_id, length)
    return OrchestrationWorkItem(
        instance_id=instance_id,
        lock_token=token,
        locked_until=from_micros(expires_at),
        history=[] if known or length == 0 else _history(conn, instance_id),
        messages=[locked_message_from_row(m) for m in messages],
        state=state,
        history_length=length,
        history_loaded=not known,
    )


def _record_ended_executions(
    conn: sqlite3.Connection, commit: OrchestrationCommit, now: int, *, stored_ended: bool
) -> None:
    """Keep the records of the executions ``commit`` ends: the stored one its reset drops
    (``stored_ended``: the stored history was not empty), then those it ran back to back."""
    instance_id = commit.state.instance_id
    stored = None
    if commit.reset_history and stored_ended:
        stored = state_from_row(conn.execute(q.SELECT_INSTANCE, (instance_id,)).fetchone())
    last = conn.execute(q.LAST_EXECUTION, (instance_id,)).fetchone()
    previous = None if last is None else (last["generation"], from_micros(last["ended_at"]))
    records = ended_executions(stored, commit, previous, from_micros(now))
    conn.executemany(
        q.INSERT_EXECUTION,
        [
            {
                "instance_id": instance_id,
                "generation": record.generation,
                "execution_id": record.execution_id,
                "name": record.name,
                "version": record.version,
                "started_at": to_micros(record.started_at),
                "ended_at": to_micros(record.ended_at),
                "status": record.status.value,
                "input": record.input_summary,
                "output": record.output_summary,
            }
            for record in records
        ],
    )
    if records:
        latest = records[-1].generation
        conn.execute(q.TRIM_EXECUTIONS, (instance_id, latest - EXECUTIONS_KEPT))


def _record_takeover(conn: sqlite3.Connection, row: sqlite3.Row, now: int, owner: str) -> None:
    conn.execute(
        q.INSERT_TAKEOVER,
        {
            "instance_id": row["instance_id"],
            "execution_id": row["execution_id"],
            "previous_owner": row["lock_owner"],
            "lease_expired_at": row["lock_expires_at"],
            "now": now,
            "taken_by": owner,
        },
    )


def _check_fence(conn: sqlite3.Connection, instance_id: str, fence: EpisodeFence, now: int) -> int:
    """The stored history length, if ``fence`` holds (inside the write transaction)."""
    if isinstance(fence, LeaseHeld):
        row = conn.execute(q.SELECT_LOCK_TOKEN, (instance_id,)).fetchone()
        if row is None or row[0] != fence.lock_token:
            raise LeaseLostError(f"lease on instance {instance_id!r} was lost")
        length: int = conn.execute(q.HISTORY_LENGTH, (instance_id,)).fetchone()[0]
        if length != fence.history_length:
            raise LeaseLostError(f"history of instance {instance_id!r} changed under the work item")
        return length
    ready = (instance_id, fence.execution_id, now)
    found = conn.execute(q.INSTANCE_READY_FOR_EPISODE, ready).fetchone()
    if found is None or found["history_length"] != fence.history_length:
        raise InstanceBusyError(f"instance {instance_id!r} is busy or changed")
    return fence.history_length


def _history(conn: sqlite3.Connection, instance_id: str) -> list[HistoryEvent]:
    return [event_from_json(r[0]) for r in conn.execute(q.SELECT_HISTORY, (instance_id,))]


def _fetch_one(conn: sqlite3.Connection, sql: str, params: Any) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
    return row


def _activity_row(request: ActivityRequest, now: int) -> dict[str, Any]:
    return {
        "instance_id": request.instance_id,
        "execution_id": request.execution_id,
        "task_id": request.task_id,
        "name": request.name,
        "version": request.version,
        "input": request.input,
        "now": now,
        "attempt": request.attempt,
        "timeout": None if request.timeout is None else _micros(request.timeout),
        "heartbeat_timeout": (
            None if request.heartbeat_timeout is None else _micros(request.heartbeat_timeout)
        ),
        "heartbeat_details": request.heartbeat_details,
        "task_queue": request.task_queue,
    }


def _leased_activity_row(
    request: ActivityRequest, now: int, token: str, owner: str | None, expires_at: int
) -> tuple[Any, ...]:
    """The parameters of INSERT_LEASED_ACTIVITY, in its order."""
    timeout, heartbeat_timeout = request.timeout, request.heartbeat_timeout
    return (
        request.instance_id,
        request.execution_id,
        request.task_id,
        request.name,
        request.version,
        request.input,
        now,
        request.attempt,
        None if timeout is None else _micros(timeout),
        None if heartbeat_timeout is None else _micros(heartbeat_timeout),
        request.heartbeat_details,
        request.task_queue,
        token,
        owner,
        expires_at,
    )


_UPDATE_INSTANCE_ROW = operator.itemgetter(*q.UPDATE_INSTANCE_KEYS)
_UPDATE_INSTANCE_INDEXED_ROW = operator.itemgetter(*q.UPDATE_INSTANCE_INDEXED_KEYS)


def _duration(micros: int) -> timedelta:
    return timedelta(microseconds=micros)


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)
