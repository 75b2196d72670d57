"""The PostgreSQL task hub store: one schema per task hub, shared by any number of worker and
client processes."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from duratask.backends._shared import (
    LeasedCreates,
    StartLease,
    as_utc,
    backlog_from_row,
    execution_from_row,
    handed_on_input,
    history_is_known,
    leased_activities,
    new_lock_token,
    schedule_from_row,
    schedule_params,
    started_work_item,
    state_from_row,
    takeover_from_row,
    utc_now,
)
from duratask.backends._sql import (
    Dialect,
    OutboundMessage,
    SqlInstanceQueries,
    created_row,
    rest_until,
    state_params,
)
from duratask.backends._sql_leases import SqlLeases
from duratask.backends._wakeups import (
    ACTIVITY,
    ENTITY,
    ORCHESTRATION,
    InstanceWatch,
    hub_wakeups,
)
from duratask.backends.base import (
    ActivityWorkItem,
    BacklogEntry,
    EpisodeFence,
    ExecutionRecord,
    InstanceUnchanged,
    KnownHistories,
    LeaseHeld,
    LeaseTakeover,
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
    ScheduleRecord,
    StoreDescription,
)
from duratask.backends.postgres import _queries as q
from duratask.backends.postgres._database import (
    STATE,
    Connection,
    Database,
    split_schema,
)
from duratask.backends.postgres._entities import PostgresEntities, entity_message_json
from duratask.backends.postgres._group_commit import GroupCommit
from duratask.errors import (
    InstanceBusyError,
    LeaseLostError,
    OrchestrationAlreadyExistsError,
    ScheduleAlreadyExistsError,
)
from duratask.history import (
    HistoryEvent,
    event_from_json,
    event_to_json,
    event_type_name,
)
from duratask.state import OrchestrationState, OrchestrationStatus

DEFAULT_SCHEMA = "duratask"


def _in_list(column: str, values: list[object]) -> tuple[str, list[object]]:
    return f"{column} = ANY(%s)", [values]


def _starts_with(column: str, prefix: str) -> tuple[str, list[object]]:
    # starts_with avoids LIKE wildcards; the range test lets the primary key index help.
    return f"{column} >= %s AND starts_with({column}, %s)", [prefix, prefix]


def _contains(column: str, text: str) -> tuple[str, list[object]]:
    return f"strpos({column}, %s) > 0", [text]


DIALECT = Dialect(
    placeholder="%s",
    instances="{schema}.instances",
    from_time=lambda value: value.astimezone(UTC),  # timestamptz comes in the session's zone
    to_time=as_utc,
    in_list=_in_list,
    starts_with=_starts_with,
    contains=_contains,
    later=operator.add,
)


class PostgresOrchestrationService(PostgresEntities, SqlLeases, SqlInstanceQueries, LeasedCreates):
    """A task hub in one schema of a PostgreSQL database, safe to share between processes.

    ``url_or_conninfo`` is a libpq URL (``postgresql://user@host:port/db``, optionally with
    ``?schema=NAME``) or key/value connection string. ``schema`` names the hub's schema
    (a ``?schema=`` in the URL takes its place when ``schema`` is left at its default); two
    hubs in one database are isolated by their schemas. ``clock`` (aware UTC) decides
    visibility and lease expiry, replaceable in tests. The pool keeps between
    ``min_pool_size`` and ``max_pool_size`` connections.
    """

    wakes_all_processes = True  # NOTIFY reaches every listening connection
    _dialect = DIALECT
    _statements = q

    def __init__(
        self,
        url_or_conninfo: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        clock: Callable[[], datetime] | None = None,
        min_pool_size: int = 1,
        max_pool_size: int = 10,
    ) -> None:
        conninfo, url_schema = split_schema(url_or_conninfo)
        if url_schema is not None:
            if schema not in (DEFAULT_SCHEMA, url_schema):
                raise ValueError(
                    f"schema {schema!r} given twice, differently: the URL says {url_schema!r}"
                )
            schema = url_schema
        self._db = Database(
            conninfo, schema, min_pool_size=min_pool_size, max_pool_size=max_pool_size
        )
        self._clock = clock or utc_now
        db = self._db
        self._commits = GroupCommit(
            lambda document, _: _call_function(db, q.COMMIT_EPISODE, document),
            lambda documents: _call_function_many(db, q.COMMIT_EPISODES, documents),
        )
        # A create sent again may meet its own earlier attempt (see create_instance).
        self._creates = GroupCommit(
            lambda document, resent: _call_function(db, q.CREATE_INSTANCE, document, resent=resent),
            lambda documents: _call_function_many(db, q.CREATE_INSTANCES, documents, resent=False),
        )
        # The store objects of this hub in this process (a worker's, a client's) hear of an
        # instance's change from the commit that made it, before the NOTIFY comes round.
        self._hub = hub_wakeups(repr(self._db.hub_key))
        self._hub.join(self._db.wakeups)

    @property
    def schema(self) -> str:
        """The PostgreSQL schema of the task hub."""
        return self._db.schema

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of the task hub's wake-ups."""
        return self._db.channel

    def _now(self) -> datetime:
        return as_utc(self._clock())

    async def _enqueue_outbound(
        self, conn: Connection, message: OrchestrationMessage, now: datetime
    ) -> bool:
        return await _enqueue(self._db, conn, OutboundMessage(message, DIALECT), now)

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        """Connect and apply pending migrations (idempotent). With ``create`` a missing
        schema is created as a task hub; without, :class:`TaskHubNotFoundError` is raised
        unless the schema holds one."""
        started = await self._db.start()
        try:
            await self._db.migrate(create=create)
        except BaseException:
            if started:  # leave a store that was already open to its other users
                await self._db.stop()
            raise

    async def close(self) -> None:
        """Close every connection; :meth:`open` may be called again."""
        await self._db.stop()

    async def create_task_hub(self) -> None:
        """Create the hub's schema, or bring it up to date; the store is left open."""
        await self.open(create=True)

    def describe(self) -> StoreDescription:
        """The server, database and schema (no password)."""
        return StoreDescription("postgresql", self._db.location, self._db.hub_key)

    async def delete_task_hub(self) -> None:
        """Drop the hub's own tables and functions, never another application's, and its
        schema if duratask made it and nothing else is left there; a later :meth:`open`
        recreates the hub."""
        await self._db.drop_own()

    async def wait_for_notification(self, timeout: float, *, kind: str | None = None) -> bool:
        """Wait up to ``timeout`` seconds for a sign that work may be available.

        Every transaction that makes work available (a message visible now, an activity, a
        released lease) sends a NOTIFY on :attr:`channel` with the kind of work,
        ``"orchestration"`` or ``"activity"``. ``kind`` waits for one kind; None for either.
        Returns True when a notification arrived since the last call that consumed that kind
        (notifications are remembered, so one sent while the caller was busy is not lost),
        or when the listening connection was just (re)established (notifications sent before
        could have been missed); False on timeout. A True is a hint: look for work, there may
        be none. Must be called on the event loop that opened the store; the first call opens
        a dedicated listening connection.
        """
        return await self._db.wait_for_notification(timeout, kind)

    def watch_instance(self, instance_id: str) -> InstanceWatch:
        """Interest in one instance's row changing, pushed by NOTIFY from any process."""
        self._db.ensure_listening()
        return self._db.wakeups.watch(instance_id)

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
        expires_at = now + lease
        token = new_lock_token()
        db = self._db
        document = {
            "now": now.isoformat(),
            "token": token,
            "owner": owner,
            "expires_at": expires_at.isoformat(),
            "keys": keys,
            "queues": queues,
        }
        params = (_json_text(document),)
        rows = await db.autocommit(
            lambda conn: _fetch_all(conn, db.q(q.LEASE_NEXT_INSTANCE), params)
        )
        if not rows:
            return None
        first = rows[0]
        instance_id: str = first["instance_id"]
        state = _state(first)
        length: int = first["history_length"]
        known = history_is_known(known_histories, instance_id, state.execution_id, length)
        return OrchestrationWorkItem(
            instance_id=instance_id,
            lock_token=token,
            locked_until=expires_at,
            # The lease keeps every other writer off the history until it is released.
            history=[] if known or length == 0 else await self.get_history(instance_id),
            messages=[_locked_message(row, "message_execution_id") for row in rows],
            state=state,
            history_length=length,
            history_loaded=not known,
        )

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        """Commit one episode in one transaction while ``fence`` holds (see the seam): one
        call of the schema's ``commit_episode`` function, which locks the instance row,
        checks the fence and writes everything, or nothing."""
        instance_id = commit.state.instance_id
        write = _EpisodeWrite(self._db, commit, self._now(), fence.history_length)
        finished = commit.finished_activity
        outcome, ids = await write.send(self._commits, fence, finished)
        if outcome == "committed":
            self._hub.instances_changed([instance_id])
            return write.leased_items(ids)
        if outcome == "lease_lost":
            raise LeaseLostError(f"lease on instance {instance_id!r} was lost")
        if outcome == "history_changed":
            raise LeaseLostError(f"history of instance {instance_id!r} changed under the work item")
        if outcome == "activity_lost":
            assert finished is not None
            raise LeaseLostError(f"lease on activity {finished.work_item_id} was lost")
        raise InstanceBusyError(f"instance {instance_id!r} is busy or changed")

    async def abandon_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at``, the instance rests until then."""
        release = {"instance_id": work_item.instance_id, "token": work_item.lock_token}
        rested = rest_until(retry_at, DIALECT)
        wake = {
            "channel": self._db.channel,
            "payload": ORCHESTRATION,
            "instance_id": work_item.instance_id,
            "now": self._now(),
        }
        db = self._db

        async def job(conn: Connection) -> None:
            if rested is not None:
                rest = {**release, "retry_at": rested}
                await conn.execute(db.q(q.REST_INSTANCE), rest)
                return
            released = (await conn.execute(db.q(q.RELEASE_INSTANCE_LEASE), release)).rowcount
            if released:
                await conn.execute(db.q(q.NOTIFY_IF_VISIBLE), wake)

        await db.transaction(job)

    # -- activity work items --------------------------------------------------------------
    async def _lease_activities(
        self,
        owner: str,
        lease: timedelta,
        max_items: int,
        names: list[str] | None,
        queues: list[str] | None,
    ) -> list[ActivityWorkItem]:
        # One statement leases them all.
        now = self._now()
        expires_at = now + lease
        token = new_lock_token()
        params = {
            "now": now,
            "token": token,
            "owner": owner,
            "expires_at": expires_at,
            "max_items": max_items,
            "names": names,
            "queues": queues,
        }
        rows = await self._db.autocommit(
            lambda conn: _fetch_all(conn, self._db.q(q.LOCK_NEXT_ACTIVITIES), params)
        )
        return leased_activities(rows, token, expires_at, _same)

    async def complete_activity_work_item(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> None:
        """Delete the activity and enqueue its result, in one transaction."""
        now = self._now()
        outbound = OutboundMessage(result, DIALECT)
        db = self._db

        async def job(conn: Connection) -> None:
            sent = await _finish_activity(db, conn, work_item, outbound, now)
            if sent and _visible_by(outbound, now):
                await db.notify(conn, [ORCHESTRATION])

        await db.transaction(job)

    async def abandon_activity_work_item(
        self, work_item: ActivityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; the activity is visible again at ``retry_at`` (now if None)."""
        now = self._now()
        visible_at = as_utc(retry_at) if retry_at is not None else now
        params = {"id": work_item.work_item_id, "token": work_item.lock_token}
        db = self._db

        async def job(conn: Connection) -> None:
            released = await conn.execute(
                db.q(q.RELEASE_ACTIVITY_LEASE), {**params, "visible_at": visible_at}
            )
            if released.rowcount and visible_at <= now:
                await db.notify(conn, [ACTIVITY])

        await db.transaction(job)

    # -- schedules ---------------------------------------------------------------------------
    async def create_schedule(self, record: ScheduleRecord) -> None:
        """Store a new schedule; :class:`ScheduleAlreadyExistsError` if the id is taken."""
        if not await self._execute(q.INSERT_SCHEDULE, schedule_params(record, as_utc)):
            raise ScheduleAlreadyExistsError(record.schedule_id)

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """One schedule, or None."""
        rows = await self._read_rows(q.SELECT_SCHEDULE, {"schedule_id": schedule_id})
        return schedule_from_row(rows[0], _utc) if rows else None

    async def list_schedules(self, prefix: str | None = None) -> list[ScheduleRecord]:
        """The schedules whose id starts with ``prefix``, by id."""
        params = {"prefix": prefix or "", "prefix_length": len(prefix or "")}
        return [
            schedule_from_row(r, _utc) for r in await self._read_rows(q.SELECT_SCHEDULES, params)
        ]

    async def update_schedule(self, record: ScheduleRecord) -> bool:
        """Write the schedule if its stored revision is still ``record.revision``."""
        return bool(await self._execute(q.UPDATE_SCHEDULE, schedule_params(record, as_utc)))

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False if there was none."""
        return bool(await self._execute(q.DELETE_SCHEDULE, {"schedule_id": schedule_id}))

    async def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` schedules due at ``now``, soonest first."""
        params = {"now": as_utc(now), "limit": limit}
        return [schedule_from_row(r, _utc) for r in await self._read_rows(q.DUE_SCHEDULES, params)]

    async def next_schedule_due_at(self) -> datetime | None:
        """The earliest time a schedule is due."""
        rows = await self._read_rows(q.NEXT_SCHEDULE_DUE_AT, {})
        return _utc(rows[0]["due"]) if rows and rows[0]["due"] is not None else None

    # -- workers and their leases -----------------------------------------------------------
    async def backlog(self) -> list[BacklogEntry]:
        """The work waiting, by kind and name."""
        sql = self._db.q(q.BACKLOG)
        params = {"now": self._now()}
        rows = await self._db.autocommit(lambda conn: _fetch_all(conn, sql, params))
        return [backlog_from_row(row) for row in rows]

    async def lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        """The instance's leases that ran out unreleased or were broken, oldest first."""
        rows = await self._read_rows(q.SELECT_TAKEOVERS, [instance_id])
        return [takeover_from_row(row, DIALECT.from_time) for row in rows]

    async def list_executions(self, instance_id: str) -> list[ExecutionRecord]:
        """The records of the instance's earlier executions, oldest first."""
        rows = await self._read_rows(q.SELECT_EXECUTIONS, [instance_id])
        return [execution_from_row(row, DIALECT.from_time) for row in rows]

    async def break_leases(self, owner: str) -> int:
        """Free every instance and activity ``owner`` holds."""
        params = {"owner": owner, "now": self._now()}
        db = self._db

        async def job(conn: Connection) -> int:
            await conn.execute(db.q(q.RECORD_BROKEN_LEASES), params)
            broken = (await conn.execute(db.q(q.BREAK_INSTANCE_LEASES), params)).rowcount
            broken += (await conn.execute(db.q(q.BREAK_ACTIVITY_LEASES), params)).rowcount
            broken += (await conn.execute(db.q(q.BREAK_ENTITY_LEASES), params)).rowcount
            if broken:
                await db.notify(conn, [ORCHESTRATION, ACTIVITY, ENTITY])
            return broken

        return await db.transaction(job)

    # -- client operations -----------------------------------------------------------------
    async def _create(
        self,
        message: OrchestrationMessage,
        replaceable: frozenset[OrchestrationStatus],
        start_lease: StartLease | None,
        *,
        durable: bool = True,
    ) -> OrchestrationWorkItem | None:
        """One call of the schema's ``create_instance`` function (creates that are ready at
        the same time share a call), which takes the lease too."""
        now, db = self._now(), self._db
        instance_id = message.instance_id
        outbound = OutboundMessage(message, DIALECT)
        row = created_row(message, DIALECT)
        notify = [STATE + instance_id]
        document: dict[str, Any] = {
            "row": _json_ready(row),
            "message": _json_ready(outbound.params),
            "now": now.isoformat(),
            "replaceable": [status.value for status in replaceable],
            "channel": db.channel,
            "notify": notify,
        }
        expires_at = now
        if start_lease is not None and start_lease.allows(message, now):
            expires_at = now + start_lease.duration
            document["lease"] = {
                "token": new_lock_token(),
                "owner": start_lease.owner,
                "expires_at": expires_at.isoformat(),
            }
            document["notify_unleased"] = ORCHESTRATION  # workers need not look: it is leased
        elif _visible_by(outbound, now):
            notify.append(ORCHESTRATION)
        found = await self._creates.send(json.dumps(document))
        if found["outcome"] != "created":
            status = found["existing_status"]
            shown = OrchestrationStatus(status) if status is not None else "unknown"
            raise OrchestrationAlreadyExistsError(instance_id, shown)
        message_id = found["leased_message_id"]
        if message_id is None:
            return None
        return started_work_item(message, message_id, document["lease"]["token"], expires_at)

    async def send_message(self, message: OrchestrationMessage) -> bool:
        """Enqueue a message; False if its instance does not exist."""
        now = self._now()
        outbound = OutboundMessage(message, DIALECT)
        db = self._db

        async def job(conn: Connection) -> bool:
            sent = await _enqueue(db, conn, outbound, now)
            if sent and _visible_by(outbound, now):
                await db.notify(conn, [ORCHESTRATION])
            return sent

        return await db.transaction(job)

    async def get_instance(self, instance_id: str) -> OrchestrationState | None:
        """The stored state of one instance, or None."""
        sql = self._db.q(q.SELECT_INSTANCE)
        row = await self._db.autocommit(lambda conn: _fetch_one(conn, sql, (instance_id,)))
        return _state(row) if row is not None else None

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The instance's history in order (empty if unknown)."""
        return await self._db.autocommit(lambda conn: _history(self._db, conn, instance_id))

    async def _read_rows(self, sql: str, params: Any) -> list[Mapping[str, Any]]:
        statement = self._db.q(sql)

        async def job(conn: Connection) -> list[dict[str, Any]]:
            return await (await conn.execute(statement, params)).fetchall()

        return list(await self._db.autocommit(job))

    async def _write_rows(self, sql: str, params: Any, *, durable: bool = True) -> int:
        return await self._execute(sql, params)  # every PostgreSQL commit is durable

    async def _execute(self, template: str, params: Any) -> int:
        """Run one statement in its own transaction; the number of rows it touched."""
        sql = self._db.q(template)

        async def job(conn: Connection) -> int:
            return (await conn.execute(sql, params)).rowcount

        return await self._db.autocommit(job)


def _visible_by(outbound: OutboundMessage, now: datetime) -> bool:
    visible_at: datetime | None = outbound.params["visible_at"]
    return visible_at is None or visible_at <= now


def _message_json(outbound: OutboundMessage) -> dict[str, Any]:
    """The message as ``commit_episode`` takes it (see logic.sql)."""
    starts = _json_ready(outbound.starts) if outbound.starts is not None else None
    return {**_json_ready(outbound.params), "starts": starts}


async def _enqueue(
    db: Database, conn: Connection, outbound: OutboundMessage, now: datetime
) -> bool:
    """Insert a message; an ExecutionStarted creates its instance row if absent, any other
    message to a missing instance is dropped (False)."""
    if outbound.starts is not None:
        await conn.execute(db.q(q.INSERT_INSTANCE_IF_ABSENT), outbound.starts)
    params = {**outbound.params, "now": now}
    inserted = await conn.execute(db.q(q.INSERT_MESSAGE), params)
    if inserted.rowcount and params["status_when"] is not None:
        await conn.execute(db.q(q.CHANGE_STATUS), params)
    return bool(inserted.rowcount)


class _EpisodeWrite:
    """An episode's commit, encoded before it is sent; :meth:`send` sends it as one call of
    the schema's ``commit_episode`` function (see logic.sql), which checks the fence and
    writes everything in one transaction, or writes nothing."""

    def __init__(
        self, db: Database, commit: OrchestrationCommit, now: datetime, history_length: int
    ) -> None:
        self.db = db
        self.instance_id = instance_id = commit.state.instance_id
        eager = commit.eager_activities
        self.leased = list(commit.activities[: eager.max_items]) if eager else []
        self.tokens = [new_lock_token() for _ in self.leased]
        self.expires_at = now + eager.duration if eager else now
        outbound = [OutboundMessage(m, DIALECT) for m in commit.messages]
        wake_orchestrations = any(_visible_by(m, now) for m in outbound)
        notify = []
        if len(commit.activities) > len(self.leased):
            notify.append(ACTIVITY)
        if commit.entity_messages:
            notify.append(ENTITY)
        if wake_orchestrations:
            notify.append(ORCHESTRATION)
        tokens = self.tokens + [None] * (len(commit.activities) - len(self.tokens))
        self.document: dict[str, Any] = {
            "instance_id": instance_id,
            "now": now.isoformat(),
            "history_length": history_length,
            "reset_history": commit.reset_history,
            # For the record of the execution a reset ends (see logic.sql).
            "ended": (
                {
                    "continued": commit.state.runtime_status
                    is OrchestrationStatus.CONTINUED_AS_NEW,
                    "handed_on": handed_on_input(commit),
                }
                if commit.reset_history
                else None
            ),
            "continued": [
                {
                    "execution_id": e.execution_id,
                    "name": e.name,
                    "version": e.version,
                    "input": e.input_summary,
                    "output": e.output_summary,
                }
                for e in commit.continued_executions
            ],
            "events": [[event_type_name(e), event_to_json(e)] for e in commit.new_events],
            "consumed": list(commit.consumed_message_ids),
            "activities": [
                {
                    "instance_id": a.instance_id,
                    "execution_id": a.execution_id,
                    "task_id": a.task_id,
                    "name": a.name,
                    "version": a.version,
                    "input": a.input,
                    "token": token,
                    "attempt": a.attempt,
                    "timeout": _interval(a.timeout),
                    "heartbeat_timeout": _interval(a.heartbeat_timeout),
                    "heartbeat_details": a.heartbeat_details,
                    "task_queue": a.task_queue,
                }
                for a, token in zip(commit.activities, tokens, strict=True)
            ],
            "owner": eager.owner if eager else None,
            "lease_expires_at": self.expires_at.isoformat(),
            "messages": [_message_json(m) for m in outbound],
            "entity_messages": [entity_message_json(m) for m in commit.entity_messages],
            "state": (
                _json_ready(state_params(commit.state, DIALECT))
                if commit.changes_instance
                else None
            ),
            "channel": db.channel,
            "notify": notify,
            "notify_if_visible": None if wake_orchestrations else ORCHESTRATION,
            # Watchers (clients waiting for a start or an end) care about the status alone:
            # the function notifies this when the commit changes it.
            "notify_if_status_changes": STATE + instance_id,
        }

    async def send(
        self, commits: GroupCommit, fence: EpisodeFence, finished: ActivityWorkItem | None
    ) -> tuple[str, dict[str, int]]:
        """Send the commit through ``commits`` under ``fence``, with the ``finished``
        activity deleted too. Returns the function's outcome (``"committed"`` or why not)
        and the ids of the activities leased to the committer, by token."""
        document = {
            **self.document,
            "lock_token": fence.lock_token if isinstance(fence, LeaseHeld) else None,
            "execution_id": fence.execution_id if isinstance(fence, InstanceUnchanged) else None,
            "activity_id": finished.work_item_id if finished is not None else None,
            "activity_token": finished.lock_token if finished is not None else None,
        }
        row = await commits.send(_json_text(document))
        ids = dict(zip(row["leased_tokens"] or (), row["leased_ids"] or (), strict=True))
        return row["outcome"], ids

    def leased_items(self, ids: dict[str, int]) -> list[ActivityWorkItem]:
        return [
            ActivityWorkItem(
                work_item_id=ids[token],
                request=request,
                lock_token=token,
                locked_until=self.expires_at,
                dequeue_count=1,
            )
            for request, token in zip(self.leased, self.tokens, strict=True)
        ]


async def _finish_activity(
    db: Database,
    conn: Connection,
    work_item: ActivityWorkItem,
    result: OutboundMessage,
    now: datetime,
) -> bool:
    """Delete the leased activity and enqueue its result; False if the instance is gone."""
    key = (work_item.work_item_id, work_item.lock_token)
    if not (await conn.execute(db.q(q.DELETE_LEASED_ACTIVITY), key)).rowcount:
        raise LeaseLostError(f"lease on activity {work_item.work_item_id} was lost")
    return await _enqueue(db, conn, result, now)


async def _call_function(
    db: Database, template: str, document: str, *, resent: bool | None = None
) -> dict[str, Any]:
    """Call a function of logic.sql with its jsonb document; its one row. With
    ``resent`` (not None), the call also says whether it may have been made before: when
    ``resent`` is True, or when a failed attempt is retried."""
    sql = db.q(template)
    attempts = 0

    async def job(conn: Connection) -> dict[str, Any] | None:
        nonlocal attempts
        attempts += 1
        params = (document,) if resent is None else (document, resent or attempts > 1)
        return await _fetch_one(conn, sql, params)

    row = await db.autocommit(job)
    assert row is not None, "the function returns one row"
    return row


async def _call_function_many(
    db: Database, template: str, documents: list[str], *, resent: bool | None = None
) -> list[dict[str, Any]]:
    """Call a function of logic.sql with a jsonb array of documents; a row for each
    (``resent``: as for :func:`_call_function`)."""
    sql, batch = db.q(template), f"[{','.join(documents)}]"
    attempts = 0

    async def job(conn: Connection) -> list[dict[str, Any]]:
        nonlocal attempts
        attempts += 1
        params = (batch,) if resent is None else (batch, resent or attempts > 1)
        return await _fetch_all(conn, sql, params)

    return await db.autocommit(job)


async def _fetch_one(conn: Connection, sql: Any, params: Any) -> dict[str, Any] | None:
    return await (await conn.execute(sql, params)).fetchone()


async def _fetch_all(conn: Connection, sql: Any, params: Any) -> list[dict[str, Any]]:
    return await (await conn.execute(sql, params)).fetchall()


async def _history(db: Database, conn: Connection, instance_id: str) -> list[HistoryEvent]:
    cursor = await conn.execute(db.q(q.SELECT_HISTORY), (instance_id,))
    return [event_from_json(row["event"]) for row in await cursor.fetchall()]


# -- row conversions ------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    # timestamptz comes back in the session's time zone; the stores speak UTC.
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _same(value: timedelta) -> timedelta:
    return value  # psycopg reads an interval as a timedelta


def _interval(value: timedelta | None) -> str | None:
    """A duration as PostgreSQL reads an interval from JSON text."""
    return None if value is None else f"{value.total_seconds()} seconds"


def _json_text(document: Mapping[str, Any]) -> str:
    """A document for a jsonb parameter as JSON text: by orjson, several times faster than
    the standard library on an episode's commit (non-ASCII text goes as UTF-8, not escaped:
    the server reads the same values); by the standard library for what orjson refuses."""
    try:
        return orjson.dumps(document).decode()
    except TypeError:  # an integer past 64 bits, say: the server says what it makes of it
        return json.dumps(document, separators=(",", ":"))


def _json_ready(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with times as ISO 8601 text, for a jsonb parameter."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}


def _state(row: Mapping[str, Any]) -> OrchestrationState:
    """Rebuild a state from a row of the instance columns."""
    return state_from_row(row, _utc)


def _locked_message(
    row: Mapping[str, Any], execution_column: str = "execution_id"
) -> LockedMessage:
    """Rebuild a leased message from a row of ``queries.DEQUEUE_VISIBLE_MESSAGES``, or of
    the ``lease_next_instance`` function (``execution_column="message_execution_id"``)."""
    message = OrchestrationMessage(
        instance_id=row["instance_id"],
        event=event_from_json(row["event"]),
        execution_id=row[execution_column],
        visible_at=_utc_or_none(row["visible_at"]),
    )
    return LockedMessage(row["message_id"], message, row["dequeue_count"])
