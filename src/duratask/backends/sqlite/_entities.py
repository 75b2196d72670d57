"""Durable entities in the SQLite store: the entity rows, their messages and leases."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from duratask.backends import _sql_entities as sql_entities
from duratask.backends._shared import entity_recent_from_json, new_lock_token
from duratask.backends._wakeups import ENTITY, ORCHESTRATION, HubWakeUps
from duratask.backends.base import (
    CleanEntityStorageResult,
    EntityCommit,
    EntityMessage,
    EntityRecord,
    EntityWorkItem,
    split_entity_id,
)
from duratask.backends.sqlite._codec import DIALECT, from_micros
from duratask.backends.sqlite._database import Database

_FREE = "(e.lock_expires_at IS NULL OR e.lock_expires_at < :now)"
_DELIVERABLE = "(e.locked_by IS NULL OR m.source = e.locked_by)"
SELECT_NEXT_ENTITY = f"""
SELECT e.entity_id FROM entity_messages m JOIN entities e ON e.entity_id = m.entity_id
WHERE m.due_at <= :now AND {_FREE} AND {_DELIVERABLE}
  AND (:names IS NULL OR e.name IN (SELECT value FROM json_each(:names)))
ORDER BY m.due_at, m.message_id LIMIT 1"""
LEASE_ENTITY = """
UPDATE entities SET lock_token = :token, lock_owner = :owner, lock_expires_at = :expires_at
WHERE entity_id = :entity_id"""
SELECT_ENTITY_BATCH = f"""
SELECT m.message_id, m.body, m.visible_at, m.dequeue_count + 1 AS dequeue_count
FROM entity_messages m JOIN entities e ON e.entity_id = m.entity_id
WHERE m.entity_id = :entity_id AND m.due_at <= :now AND {_DELIVERABLE}
ORDER BY m.message_id LIMIT :max"""
COUNT_ENTITY_DEQUEUE = (
    "UPDATE entity_messages SET dequeue_count = dequeue_count + 1 WHERE message_id = ?"
)
SELECT_ENTITY_RECORD = (
    "SELECT state, locked_by, recent_requests FROM entities WHERE entity_id = :entity_id"
)
RENEW_ENTITY_LEASE = """
UPDATE entities SET lock_expires_at = :expires_at
WHERE entity_id = :entity_id AND lock_token = :token"""
COMMIT_ENTITY = """
UPDATE entities SET state = :state, locked_by = :locked_by, recent_requests = :recent,
    last_modified_at = :now, lock_token = NULL, lock_owner = NULL, lock_expires_at = NULL
WHERE entity_id = :entity_id AND lock_token = :token"""
ABANDON_ENTITY = """
UPDATE entities SET lock_token = NULL, lock_owner = NULL, lock_expires_at = :rest_until
WHERE entity_id = :entity_id AND lock_token = :token"""
DELETE_ENTITY_MESSAGE = "DELETE FROM entity_messages WHERE message_id = ? AND entity_id = ?"
INSERT_ENTITY_IF_ABSENT = """
INSERT INTO entities (entity_id, name, last_modified_at) VALUES (:entity_id, :name, :now)
ON CONFLICT (entity_id) DO NOTHING"""
INSERT_ENTITY_MESSAGE = """
INSERT INTO entity_messages (entity_id, source, body, enqueued_at, visible_at, due_at)
VALUES (:entity_id, :source, :body, :now, :visible_at, coalesce(:visible_at, :now))"""
_SHOWN = "(e.state IS NOT NULL OR e.locked_by IS NOT NULL)"
_ENTITY_COLUMNS = """e.entity_id, e.name, e.last_modified_at, e.locked_by,
    CASE WHEN :include_state THEN e.state END AS state,
    (SELECT count(*) FROM entity_messages m WHERE m.entity_id = e.entity_id) AS backlog"""
SELECT_ENTITY = f"""
SELECT {_ENTITY_COLUMNS} FROM entities e WHERE e.entity_id = :entity_id AND {_SHOWN}"""
QUERY_ENTITIES = f"""
SELECT {_ENTITY_COLUMNS} FROM entities e
WHERE {_SHOWN}
  AND (:name IS NULL OR e.name = :name)
  AND (:prefix IS NULL OR (e.entity_id >= :prefix
       AND substr(e.entity_id, 1, length(:prefix)) = :prefix))
  AND (:modified_from IS NULL OR e.last_modified_at >= :modified_from)
  AND (:modified_to IS NULL OR e.last_modified_at < :modified_to)
  AND (:after IS NULL OR e.entity_id > :after)
ORDER BY e.entity_id LIMIT :limit"""
SELECT_LOCKED_ENTITIES = f"""
SELECT e.entity_id, e.locked_by, i.runtime_status FROM entities e
LEFT JOIN instances i ON i.instance_id = e.locked_by
WHERE e.locked_by IS NOT NULL AND {_FREE}"""
RELEASE_ORPHANED_LOCK = """
UPDATE entities SET locked_by = NULL, last_modified_at = :now
WHERE entity_id = :entity_id AND locked_by = :locked_by
  AND (lock_expires_at IS NULL OR lock_expires_at < :now)"""
DELETE_EMPTY_ENTITIES = """
DELETE FROM entities
WHERE state IS NULL AND locked_by IS NULL
  AND (lock_expires_at IS NULL OR lock_expires_at < :now)
  AND NOT EXISTS (SELECT 1 FROM entity_messages m WHERE m.entity_id = entities.entity_id)"""


def enqueue_entity_messages(
    conn: sqlite3.Connection, messages: Iterable[EntityMessage], now: int
) -> None:
    """Insert messages to entities, creating their rows (inside a write transaction)."""
    for message in messages:
        entity, enqueued = sql_entities.entity_message_params(message, now, DIALECT)
        conn.execute(INSERT_ENTITY_IF_ABSENT, entity)
        conn.execute(INSERT_ENTITY_MESSAGE, enqueued)


class SqliteEntities(sql_entities.SqlEntities):
    """The entity half of the SQLite store (mixed into it)."""

    _db: Database
    _hub: HubWakeUps
    _now: Callable[[], int]
    _enqueue_outbound: Callable[[sqlite3.Connection, Any, int], bool]
    _entity_statements = sql_entities.EntityStatements(
        renew=RENEW_ENTITY_LEASE, select=SELECT_ENTITY, query=QUERY_ENTITIES
    )

    async def _lease_entity(
        self, owner: str, lease: timedelta, max_messages: int, names: list[str] | None
    ) -> EntityWorkItem | None:
        filter_json = json.dumps(names) if names is not None else None
        probe = {"now": self._now(), "names": filter_json}
        if not await self._db.read(lambda c: c.execute(SELECT_NEXT_ENTITY, probe).fetchone()):
            return None
        token = new_lock_token()

        def job(conn: sqlite3.Connection) -> EntityWorkItem | None:
            now = self._now()
            row = conn.execute(SELECT_NEXT_ENTITY, {"now": now, "names": filter_json}).fetchone()
            if row is None:
                return None
            entity_id = row[0]
            expires_at = DIALECT.later(now, lease)
            conn.execute(
                LEASE_ENTITY,
                {"entity_id": entity_id, "token": token, "owner": owner, "expires_at": expires_at},
            )
            rows = conn.execute(
                SELECT_ENTITY_BATCH, {"entity_id": entity_id, "now": now, "max": max_messages}
            ).fetchall()
            conn.executemany(COUNT_ENTITY_DEQUEUE, [(r["message_id"],) for r in rows])
            stored = conn.execute(SELECT_ENTITY_RECORD, {"entity_id": entity_id}).fetchone()
            record = EntityRecord(
                stored["state"],
                stored["locked_by"],
                entity_recent_from_json(stored["recent_requests"]),
            )
            return sql_entities.entity_work_item(
                entity_id, token, from_micros(expires_at), record, rows, from_micros
            )

        return await self._db.write(job, durable=False)

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        """Write the batch and release the lease, in one transaction."""
        outbound = list(commit.messages)
        entity_id = work_item.entity_id

        def job(conn: sqlite3.Connection) -> None:
            now = self._now()
            params = sql_entities.entity_commit_params(work_item, commit.record, now)
            if not conn.execute(COMMIT_ENTITY, params).rowcount:
                raise sql_entities.lost_entity_lease(entity_id)
            conn.executemany(
                DELETE_ENTITY_MESSAGE, [(mid, entity_id) for mid in commit.consumed_message_ids]
            )
            enqueue_entity_messages(conn, commit.entity_messages, now)
            for message in outbound:
                self._enqueue_outbound(conn, message, now)

        await self._db.write(job)
        self._hub.work([ENTITY, ORCHESTRATION] if outbound else [ENTITY])
        if outbound:
            self._hub.instances_changed({m.instance_id for m in outbound})

    async def abandon_entity_work_item(
        self, work_item: EntityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at`` the entity rests until then."""
        params = sql_entities.entity_abandon_params(work_item, retry_at, DIALECT)
        await self._db.write(lambda c: c.execute(ABANDON_ENTITY, params))
        if retry_at is None:
            self._hub.work([ENTITY])

    async def send_entity_message(self, message: EntityMessage) -> None:
        """Enqueue a message to an entity."""
        split_entity_id(message.entity_id)
        await self._db.write(lambda c: enqueue_entity_messages(c, [message], self._now()))
        self._hub.work([ENTITY])

    async def _clean_entities(
        self, remove_empty: bool, release_orphaned: bool
    ) -> CleanEntityStorageResult:
        def job(conn: sqlite3.Connection) -> CleanEntityStorageResult:
            now = self._now()
            released = removed = 0
            if release_orphaned:
                for row in conn.execute(SELECT_LOCKED_ENTITIES, {"now": now}).fetchall():
                    params = sql_entities.orphaned_lock_params(row, now)
                    if params is not None:
                        released += conn.execute(RELEASE_ORPHANED_LOCK, params).rowcount
            if remove_empty:
                removed = conn.execute(DELETE_EMPTY_ENTITIES, {"now": now}).rowcount
            return CleanEntityStorageResult(removed, released)

        result: CleanEntityStorageResult = await self._db.write(job)
        if result.orphaned_locks_released:
            self._hub.work([ENTITY])
        return result
