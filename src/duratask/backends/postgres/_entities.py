"""Durable entities in the PostgreSQL store: the entity rows, their messages and leases.

Two workers never run one entity at once: leasing locks the entity's row (``FOR UPDATE
SKIP LOCKED``) and sets its lease token; a batch commits only while that token holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask.backends import _sql_entities as sql_entities
from duratask.backends._shared import entity_recent_from_json, new_lock_token
from duratask.backends._sql import Dialect
from duratask.backends._wakeups import ENTITY, ORCHESTRATION
from duratask.backends.base import (
    CleanEntityStorageResult,
    EntityCommit,
    EntityMessage,
    EntityRecord,
    EntityWorkItem,
    OrchestrationMessage,
    split_entity_id,
)
from duratask.backends.postgres._database import STATE, Connection, Database

_FREE = "(e.lock_expires_at IS NULL OR e.lock_expires_at < %(now)s)"
_DELIVERABLE = "(e.locked_by IS NULL OR m.source = e.locked_by)"
CHOOSE_ENTITY = f"""
SELECT e.entity_id, e.state, e.locked_by, e.recent_requests
FROM {{schema}}.entity_messages AS m JOIN {{schema}}.entities AS e ON e.entity_id = m.entity_id
WHERE m.due_at <= %(now)s AND {_FREE} AND {_DELIVERABLE}
  AND (%(names)s::text[] IS NULL OR e.name = ANY(%(names)s::text[]))
ORDER BY m.due_at, m.message_id LIMIT 1
FOR UPDATE OF e SKIP LOCKED"""
LEASE_ENTITY = """
UPDATE {schema}.entities
SET lock_token = %(token)s, lock_owner = %(owner)s, lock_expires_at = %(expires_at)s
WHERE entity_id = %(entity_id)s"""
LEASE_ENTITY_BATCH = f"""
WITH batch AS (
    SELECT m.message_id FROM {{schema}}.entity_messages AS m
    JOIN {{schema}}.entities AS e ON e.entity_id = m.entity_id
    WHERE m.entity_id = %(entity_id)s AND m.due_at <= %(now)s AND {_DELIVERABLE}
    ORDER BY m.message_id LIMIT %(max)s
)
UPDATE {{schema}}.entity_messages AS m SET dequeue_count = m.dequeue_count + 1
FROM batch WHERE m.message_id = batch.message_id
RETURNING m.message_id, m.body, m.visible_at, m.dequeue_count"""
RENEW_ENTITY_LEASE = """
UPDATE {schema}.entities SET lock_expires_at = %(expires_at)s
WHERE entity_id = %(entity_id)s AND lock_token = %(token)s"""
COMMIT_ENTITY = """
UPDATE {schema}.entities
SET state = %(state)s, locked_by = %(locked_by)s, recent_requests = %(recent)s::jsonb,
    last_modified_at = %(now)s, lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE entity_id = %(entity_id)s AND lock_token = %(token)s"""
ABANDON_ENTITY = """
UPDATE {schema}.entities
SET lock_token = NULL, lock_owner = NULL, lock_expires_at = %(rest_until)s
WHERE entity_id = %(entity_id)s AND lock_token = %(token)s"""
DELETE_ENTITY_MESSAGES = """
DELETE FROM {schema}.entity_messages
WHERE entity_id = %(entity_id)s AND message_id = ANY(%(ids)s::bigint[])"""
INSERT_ENTITY_IF_ABSENT = """
INSERT INTO {schema}.entities (entity_id, name, last_modified_at)
VALUES (%(entity_id)s, %(name)s, %(now)s) ON CONFLICT (entity_id) DO NOTHING"""
INSERT_ENTITY_MESSAGE = """
INSERT INTO {schema}.entity_messages (entity_id, source, body, enqueued_at, visible_at, due_at)
VALUES (%(entity_id)s, %(source)s, %(body)s, %(now)s, %(visible_at)s,
        COALESCE(%(visible_at)s, %(now)s))"""
_SHOWN = "(e.state IS NOT NULL OR e.locked_by IS NOT NULL)"
_ENTITY_COLUMNS = """e.entity_id, e.name, e.last_modified_at, e.locked_by,
    CASE WHEN %(include_state)s THEN e.state END AS state,
    (SELECT count(*) FROM {schema}.entity_messages AS m WHERE m.entity_id = e.entity_id)
        AS backlog"""
SELECT_ENTITY = f"""
SELECT {_ENTITY_COLUMNS} FROM {{schema}}.entities AS e
WHERE e.entity_id = %(entity_id)s AND {_SHOWN}"""
QUERY_ENTITIES = f"""
SELECT {_ENTITY_COLUMNS} FROM {{schema}}.entities AS e
WHERE {_SHOWN}
  AND (%(name)s::text IS NULL OR e.name = %(name)s::text)
  AND (%(prefix)s::text IS NULL OR (e.entity_id >= %(prefix)s::text
       AND starts_with(e.entity_id, %(prefix)s::text)))
  AND (%(modified_from)s::timestamptz IS NULL OR e.last_modified_at >= %(modified_from)s)
  AND (%(modified_to)s::timestamptz IS NULL OR e.last_modified_at < %(modified_to)s)
  AND (%(after)s::text IS NULL OR e.entity_id > %(after)s::text)
ORDER BY e.entity_id LIMIT %(limit)s"""
SELECT_LOCKED_ENTITIES = f"""
SELECT e.entity_id, e.locked_by, i.runtime_status FROM {{schema}}.entities AS e
LEFT JOIN {{schema}}.instances AS i ON i.instance_id = e.locked_by
WHERE e.locked_by IS NOT NULL AND {_FREE}"""
RELEASE_ORPHANED_LOCK = """
UPDATE {schema}.entities SET locked_by = NULL, last_modified_at = %(now)s
WHERE entity_id = %(entity_id)s AND locked_by = %(locked_by)s
  AND (lock_expires_at IS NULL OR lock_expires_at < %(now)s)"""
DELETE_EMPTY_ENTITIES = """
DELETE FROM {schema}.entities AS e
WHERE e.state IS NULL AND e.locked_by IS NULL
  AND (e.lock_expires_at IS NULL OR e.lock_expires_at < %(now)s)
  AND NOT EXISTS (SELECT 1 FROM {schema}.entity_messages AS m WHERE m.entity_id = e.entity_id)"""
NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"


def entity_message_json(message: EntityMessage) -> dict[str, Any]:
    """A message to an entity as the schema's ``commit_episode`` takes it (see logic.sql)."""
    name, _ = split_entity_id(message.entity_id)
    visible_at = message.visible_at
    return {
        "entity_id": message.entity_id,
        "name": name,
        "source": message.source,
        "body": message.to_json(),
        "visible_at": visible_at.astimezone(UTC).isoformat() if visible_at else None,
    }


class PostgresEntities(sql_entities.SqlEntities):
    """The entity half of the PostgreSQL store (mixed into it)."""

    _db: Database
    _now: Callable[[], datetime]
    _enqueue_outbound: Callable[[Connection, OrchestrationMessage, datetime], Awaitable[bool]]
    _entity_statements = sql_entities.EntityStatements(
        renew=RENEW_ENTITY_LEASE, select=SELECT_ENTITY, query=QUERY_ENTITIES
    )

    async def _lease_entity(
        self, owner: str, lease: timedelta, max_messages: int, names: list[str] | None
    ) -> EntityWorkItem | None:
        db, dialect = self._db, self._dialect
        token = new_lock_token()

        async def job(conn: Connection) -> EntityWorkItem | None:
            now = self._now()
            params = {"now": now, "names": names}
            row = await (await conn.execute(db.q(CHOOSE_ENTITY), params)).fetchone()
            if row is None:
                return None
            entity_id, expires_at = row["entity_id"], now + lease
            await conn.execute(
                db.q(LEASE_ENTITY),
                {"entity_id": entity_id, "token": token, "owner": owner, "expires_at": expires_at},
            )
            cursor = await conn.execute(
                db.q(LEASE_ENTITY_BATCH), {"entity_id": entity_id, "now": now, "max": max_messages}
            )
            rows = sorted(await cursor.fetchall(), key=lambda r: r["message_id"])
            recent = row["recent_requests"]
            record = EntityRecord(
                row["state"],
                row["locked_by"],
                tuple(recent) if isinstance(recent, list) else entity_recent_from_json(recent),
            )
            return sql_entities.entity_work_item(
                entity_id, token, expires_at, record, rows, dialect.from_time
            )

        return await db.transaction(job)

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        """Write the batch and release the lease, in one transaction."""
        db, dialect, entity_id = self._db, self._dialect, work_item.entity_id

        async def job(conn: Connection) -> None:
            now = self._now()
            params = sql_entities.entity_commit_params(work_item, commit.record, now)
            if not (await conn.execute(db.q(COMMIT_ENTITY), params)).rowcount:
                raise sql_entities.lost_entity_lease(entity_id)
            if commit.consumed_message_ids:
                await conn.execute(
                    db.q(DELETE_ENTITY_MESSAGES),
                    {"entity_id": entity_id, "ids": list(commit.consumed_message_ids)},
                )
            await _enqueue_entity_messages(db, dialect, conn, commit.entity_messages, now)
            for message in commit.messages:
                await self._enqueue_outbound(conn, message, now)
            kinds = [ENTITY, ORCHESTRATION] if commit.messages else [ENTITY]
            await db.notify(conn, kinds)
            for instance_id in {m.instance_id for m in commit.messages}:
                await conn.execute(NOTIFY, {"channel": db.channel, "payload": STATE + instance_id})

        await db.transaction(job)

    async def abandon_entity_work_item(
        self, work_item: EntityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at`` the entity rests until then."""
        db = self._db
        params = sql_entities.entity_abandon_params(work_item, retry_at, self._dialect)

        async def job(conn: Connection) -> None:
            await conn.execute(db.q(ABANDON_ENTITY), params)
            if retry_at is None:
                await db.notify(conn, [ENTITY])

        await db.transaction(job)

    async def send_entity_message(self, message: EntityMessage) -> None:
        """Enqueue a message to an entity."""
        split_entity_id(message.entity_id)
        db, dialect = self._db, self._dialect

        async def job(conn: Connection) -> None:
            await _enqueue_entity_messages(db, dialect, conn, [message], self._now())
            await db.notify(conn, [ENTITY])

        await db.transaction(job)

    async def _clean_entities(
        self, remove_empty: bool, release_orphaned: bool
    ) -> CleanEntityStorageResult:
        db = self._db

        async def job(conn: Connection) -> CleanEntityStorageResult:
            now = self._now()
            released = removed = 0
            if release_orphaned:
                cursor = await conn.execute(db.q(SELECT_LOCKED_ENTITIES), {"now": now})
                for row in await cursor.fetchall():
                    params = sql_entities.orphaned_lock_params(row, now)
                    if params is not None:
                        done = await conn.execute(db.q(RELEASE_ORPHANED_LOCK), params)
                        released += done.rowcount
            if remove_empty:
                removed = (await conn.execute(db.q(DELETE_EMPTY_ENTITIES), {"now": now})).rowcount
            if released:
                await db.notify(conn, [ENTITY])
            return CleanEntityStorageResult(removed, released)

        return await db.transaction(job)


async def _enqueue_entity_messages(
    db: Database,
    dialect: Dialect,
    conn: Connection,
    messages: Iterable[EntityMessage],
    now: datetime,
) -> None:
    for message in messages:
        entity, enqueued = sql_entities.entity_message_params(message, now, dialect)
        await conn.execute(db.q(INSERT_ENTITY_IF_ABSENT), entity)
        await conn.execute(db.q(INSERT_ENTITY_MESSAGE), enqueued)
