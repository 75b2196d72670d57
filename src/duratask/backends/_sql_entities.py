"""Durable entities in the two SQL stores: what they do alike, written once over a dialect.

Both keep an ``entities`` table (one row an entity: its state, its lock holder, its lease)
and an ``entity_messages`` table. How an entity is leased and a batch committed is each
store's own (hooks of :class:`SqlEntities`); the seam's entry points, renewing, reading
and querying, and the values the statements bind and the rows they return, are here.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from duratask.backends._shared import check_page_size, entity_record_json
from duratask.backends._sql import Dialect, SqlRows
from duratask.backends.base import (
    CleanEntityStorageResult,
    EntityMessage,
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    EntityRecord,
    EntityWorkItem,
    LockedEntityMessage,
    WorkFilter,
    decode_entity_token,
    encode_entity_token,
    split_entity_id,
)
from duratask.errors import LeaseLostError
from duratask.state import OrchestrationStatus


@dataclass(frozen=True, slots=True)
class EntityStatements:
    """A store's statements for :class:`SqlEntities` (named parameters)."""

    renew: str  # entity_id, token, expires_at
    select: str  # entity_id, include_state: one row of entity_metadata's columns
    query: str  # include_state, name, prefix, modified_from, modified_to, after, limit


class SqlEntities(SqlRows):
    """The entity operations of the seam for a SQL store (mixed into it)."""

    _entity_statements: EntityStatements

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
        chosen = sorted(names) if names is not None else None
        return await self._lease_entity(owner, lease, max_messages, chosen)

    @abstractmethod
    async def _lease_entity(
        self, owner: str, lease: timedelta, max_messages: int, names: list[str] | None
    ) -> EntityWorkItem | None:
        """Lease the next entity named one of ``names`` (None: any) with its batch."""

    async def renew_entity_work_item(self, work_item: EntityWorkItem, lease: timedelta) -> None:
        """Extend the lease to now + ``lease``."""
        params = {"entity_id": work_item.entity_id, "token": work_item.lock_token}
        renewed = await self._extend_lease(self._entity_statements.renew, params, lease)
        if renewed is None:
            raise lost_entity_lease(work_item.entity_id)
        work_item.locked_until = renewed

    async def get_entity(self, entity_id: str, include_state: bool = True) -> EntityMetadata | None:
        """One entity with a state or a lock holder, or None."""
        params = {"entity_id": entity_id, "include_state": include_state}
        rows = await self._read_rows(self._entity_statements.select, params)
        return entity_metadata(rows[0], self._dialect.from_time) if rows else None

    async def query_entities(self, query: EntityQuery) -> EntityQueryPage:
        """Entities with a state or a lock holder, matching the filters, by id."""
        check_page_size(query.page_size)
        token, dialect = query.continuation_token, self._dialect
        params = {
            "include_state": query.include_state,
            "name": query.name,
            "prefix": query.entity_id_prefix,
            "modified_from": dialect.time_or_none(query.last_modified_from),
            "modified_to": dialect.time_or_none(query.last_modified_to),
            "after": decode_entity_token(token) if token else None,
            "limit": query.page_size + 1,
        }
        rows = await self._read_rows(self._entity_statements.query, params)
        found = [entity_metadata(r, dialect.from_time) for r in rows]
        page = found[: query.page_size]
        more = len(found) > query.page_size
        return EntityQueryPage(page, encode_entity_token(page[-1].entity_id) if more else None)

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Release orphaned locks, then delete empty entities."""
        return await self._clean_entities(remove_empty_entities, release_orphaned_locks)

    @abstractmethod
    async def _clean_entities(
        self, remove_empty: bool, release_orphaned: bool
    ) -> CleanEntityStorageResult:
        """Release the locks whose holder has ended or gone, then delete empty entities,
        in one transaction (each as asked)."""


def lost_entity_lease(entity_id: str) -> LeaseLostError:
    """The error of a renewal or a commit whose entity lease was lost."""
    return LeaseLostError(f"lease on entity {entity_id!r} was lost")


def entity_work_item(
    entity_id: str,
    token: str,
    locked_until: datetime,
    record: EntityRecord,
    rows: Sequence[Mapping[str, Any]],
    from_time: Callable[[Any], datetime],
) -> EntityWorkItem:
    """A leased entity with the batch of messages ``rows`` (message_id, body, visible_at,
    dequeue_count)."""
    messages = [
        LockedEntityMessage(
            r["message_id"],
            EntityMessage.from_json(
                entity_id,
                r["body"],
                None if r["visible_at"] is None else from_time(r["visible_at"]),
            ),
            r["dequeue_count"],
        )
        for r in rows
    ]
    return EntityWorkItem(entity_id, token, locked_until, record, messages)


def entity_commit_params(
    work_item: EntityWorkItem, record: EntityRecord, now: Any
) -> dict[str, Any]:
    """The parameters of the statement that writes a batch's record and releases the lease."""
    return {
        "entity_id": work_item.entity_id,
        "token": work_item.lock_token,
        "state": record.state,
        "locked_by": record.locked_by,
        "recent": entity_record_json(record),
        "now": now,
    }


def entity_abandon_params(
    work_item: EntityWorkItem, retry_at: datetime | None, dialect: Dialect
) -> dict[str, Any]:
    """The parameters of the statement that releases a lease, resting until ``retry_at``."""
    return {
        "entity_id": work_item.entity_id,
        "token": work_item.lock_token,
        "rest_until": dialect.time_or_none(retry_at),
    }


def entity_message_params(
    message: EntityMessage, now: Any, dialect: Dialect
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters that create the entity's row if absent, and that enqueue ``message``."""
    name, _ = split_entity_id(message.entity_id)
    return (
        {"entity_id": message.entity_id, "name": name, "now": now},
        {
            "entity_id": message.entity_id,
            "source": message.source,
            "body": message.to_json(),
            "now": now,
            "visible_at": dialect.time_or_none(message.visible_at),
        },
    )


def orphaned_lock_params(row: Mapping[str, Any], now: Any) -> dict[str, Any] | None:
    """The parameters that release a locked entity's lock, if its holder (``row``'s
    ``runtime_status``) has ended or is gone; else None."""
    status = row["runtime_status"]
    if status is not None and not OrchestrationStatus(status).is_terminal:
        return None
    return {"entity_id": row["entity_id"], "locked_by": row["locked_by"], "now": now}


def entity_metadata(row: Mapping[str, Any], from_time: Callable[[Any], datetime]) -> EntityMetadata:
    """An entity's metadata from its row (entity_id, last_modified_at, state, locked_by,
    backlog)."""
    name, key = split_entity_id(row["entity_id"])
    return EntityMetadata(
        entity_id=row["entity_id"],
        name=name,
        key=key,
        last_modified_at=from_time(row["last_modified_at"]),
        serialized_state=row["state"],
        locked_by=row["locked_by"],
        backlog=row["backlog"],
    )
