"""Durable entities in the PostgreSQL store: the entity rows, their messages and leases.

Two workers never run one entity at once: leasing locks the entity's row (``FOR UPDATE
SKIP LOCKED``) and sets its lease token; a batch commits only while that token holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask.backends._shared import (
    check_page_size,
    entity_recent_from_json,
    entity_record_json,
    new_lock_token,
)
from duratask.backends._wakeups import ENTITY, ORCHESTRATION
from duratask.backends.base import (
    CleanEntityStorageResult,
    EntityCommit,
    EntityMessage,
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    EntityRecord,
    EntityWorkItem,
    LockedEntityMessage,
    OrchestrationMessage,
    WorkFilter,
    decode_entity_token,
    encode_entity_token,
    split_entity_id,
)
from duratask.backends.postgres._database import STATE, Connection, Database
from duratask.errors import LeaseLostError
from duratask.state import OrchestrationStatus

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


class PostgresEntities:
    """The entity half of the PostgreSQL store (mixed into it)."""

    _db: Database
    _now: Callable[[], datetime]
    _enqueue_outbound: Callable[[Connection, OrchestrationMessage, datetime], Awaitable[bool]]

    async def lock_next_entity_work_item(
        self,
        owner: str,
        lease: timedelta,
        max_messages: int = 100,
        work_filter: WorkFilter | None = None,
    ) -> EntityWorkItem | None:
        """Lease the free entity whose oldest deliverable message has waited longest."""
        names = work_filter.entities if work_filter is not None else None
        if names is not None and not names:
            return None
        db = self._db
        token = new_lock_token()

        async def job(conn: Connection) -> EntityWorkItem | None:
            now = self._now()
            params = {"now": now, "names": sorted(names) if names is not None else None}
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
            return EntityWorkItem(
                entity_id,
                token,
                expires_at,
                EntityRecord(
                    row["state"],
                    row["locked_by"],
                    tuple(recent) if isinstance(recent, list) else entity_recent_from_json(recent),
                ),
                [
                    LockedEntityMessage(
                        r["message_id"],
                        EntityMessage.from_json(
                            entity_id, r["body"], _utc_or_none(r["visible_at"])
                        ),
                        r["dequeue_count"],
                    )
                    for r in rows
                ],
            )

        return await db.transaction(job)

    async def renew_entity_work_item(self, work_item: EntityWorkItem, lease: timedelta) -> None:
        """Extend the lease to now + ``lease``."""
        expires_at = self._now() + lease
        params = {
            "entity_id": work_item.entity_id,
            "token": work_item.lock_token,
            "expires_at": expires_at,
        }
        sql = self._db.q(RENEW_ENTITY_LEASE)

        async def job(conn: Connection) -> int:
            return (await conn.execute(sql, params)).rowcount

        if not await self._db.autocommit(job):
            raise LeaseLostError(f"lease on entity {work_item.entity_id!r} was lost")
        work_item.locked_until = expires_at

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        """Write the batch and release the lease, in one transaction."""
        db, record, entity_id = self._db, commit.record, work_item.entity_id

        async def job(conn: Connection) -> None:
            now = self._now()
            written = await conn.execute(
                db.q(COMMIT_ENTITY),
                {
                    "entity_id": entity_id,
                    "token": work_item.lock_token,
                    "state": record.state,
                    "locked_by": record.locked_by,
                    "recent": entity_record_json(record),
                    "now": now,
                },
            )
            if not written.rowcount:
                raise LeaseLostError(f"lease on entity {entity_id!r} was lost")
            if commit.consumed_message_ids:
                await conn.execute(
                    db.q(DELETE_ENTITY_MESSAGES),
                    {"entity_id": entity_id, "ids": list(commit.consumed_message_ids)},
                )
            await _enqueue_entity_messages(db, conn, commit.entity_messages, now)
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
        params = {
            "entity_id": work_item.entity_id,
            "token": work_item.lock_token,
            "rest_until": retry_at,
        }

        async def job(conn: Connection) -> None:
            await conn.execute(db.q(ABANDON_ENTITY), params)
            if retry_at is None:
                await db.notify(conn, [ENTITY])

        await db.transaction(job)

    async def send_entity_message(self, message: EntityMessage) -> None:
        """Enqueue a message to an entity."""
        split_entity_id(message.entity_id)
        db = self._db

        async def job(conn: Connection) -> None:
            await _enqueue_entity_messages(db, conn, [message], self._now())
            await db.notify(conn, [ENTITY])

        await db.transaction(job)

    async def get_entity(self, entity_id: str, include_state: bool = True) -> EntityMetadata | None:
        """One entity with a state or a lock holder, or None."""
        sql = self._db.q(SELECT_ENTITY)
        params = {"entity_id": entity_id, "include_state": include_state}

        async def job(conn: Connection) -> dict[str, Any] | None:
            return await (await conn.execute(sql, params)).fetchone()

        row = await self._db.autocommit(job)
        return _metadata(row) if row is not None else None

    async def query_entities(self, query: EntityQuery) -> EntityQueryPage:
        """Entities with a state or a lock holder, matching the filters, by id."""
        check_page_size(query.page_size)
        token = query.continuation_token
        params = {
            "include_state": query.include_state,
            "name": query.name,
            "prefix": query.entity_id_prefix,
            "modified_from": query.last_modified_from,
            "modified_to": query.last_modified_to,
            "after": decode_entity_token(token) if token else None,
            "limit": query.page_size + 1,
        }
        sql = self._db.q(QUERY_ENTITIES)

        async def job(conn: Connection) -> list[dict[str, Any]]:
            return await (await conn.execute(sql, params)).fetchall()

        found = [_metadata(r) for r in await self._db.autocommit(job)]
        page = found[: query.page_size]
        more = len(found) > query.page_size
        return EntityQueryPage(page, encode_entity_token(page[-1].entity_id) if more else None)

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Release orphaned locks, then delete empty entities."""
        db = self._db

        async def job(conn: Connection) -> CleanEntityStorageResult:
            now = self._now()
            released = removed = 0
            if release_orphaned_locks:
                cursor = await conn.execute(db.q(SELECT_LOCKED_ENTITIES), {"now": now})
                for row in await cursor.fetchall():
                    status = row["runtime_status"]
                    if status is None or OrchestrationStatus(status).is_terminal:
                        params = {
                            "entity_id": row["entity_id"],
                            "locked_by": row["locked_by"],
                            "now": now,
                        }
                        done = await conn.execute(db.q(RELEASE_ORPHANED_LOCK), params)
                        released += done.rowcount
            if remove_empty_entities:
                removed = (await conn.execute(db.q(DELETE_EMPTY_ENTITIES), {"now": now})).rowcount
            if released:
                await db.notify(conn, [ENTITY])
            return CleanEntityStorageResult(removed, released)

        return await db.transaction(job)


async def _enqueue_entity_messages(
    db: Database, conn: Connection, messages: Iterable[EntityMessage], now: datetime
) -> None:
    for message in messages:
        name, _ = split_entity_id(message.entity_id)
        await conn.execute(
            db.q(INSERT_ENTITY_IF_ABSENT),
            {"entity_id": message.entity_id, "name": name, "now": now},
        )
        await conn.execute(
            db.q(INSERT_ENTITY_MESSAGE),
            {
                "entity_id": message.entity_id,
                "source": message.source,
                "body": message.to_json(),
                "now": now,
                "visible_at": message.visible_at,
            },
        )


def _metadata(row: dict[str, Any]) -> EntityMetadata:
    name, key = split_entity_id(row["entity_id"])
    return EntityMetadata(
        entity_id=row["entity_id"],
        name=name,
        key=key,
        last_modified_at=row["last_modified_at"].astimezone(UTC),
        serialized_state=row["state"],
        locked_by=row["locked_by"],
        backlog=row["backlog"],
    )


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)
