"""Durable entities in the ``{hub}Entities`` table, one partition per entity (partition key:
the entity id): an ``entity`` row (its state, lock holder, latest request ids and lease),
message rows ``m-ID``, outbox rows ``o-ID`` and delivery markers ``d-ID``, as an
instance's partition in the History table has.

A batch is committed in one transaction conditional on the entity row's ETag: the new
record (lease released), deletion of the consumed messages and one outbox row listing the
batch's messages to orchestrations and entities, each with its own id. The outbox is then
delivered (markers make a second delivery a no-op) and deleted, as for an episode. A
worker whose lease was taken over fails the condition and writes nothing; an entity also
keeps its latest request ids, so a message delivered twice is applied once.

Entities are not in the control partitions: any worker leases any entity, found by a
sweep of the table's message rows (at every poll on a test clock, else once a second and
at once when this process sent an entity a message).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode

from duratask.backends._shared import (
    as_utc_or_none,
    check_page_size,
    new_lock_token,
    orphaned_lock,
)
from duratask.backends._wakeups import ENTITY, ORCHESTRATION
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._inbox import InboxStore
from duratask.backends.azure._rows import (
    _BATCH,
    _RETRIES,
    _SCAN_CANDIDATES,
    Row,
    _etag,
    _if_match,
    _ignore_missing,
    _normalized_message,
    _Stale,
)
from duratask.backends.base import (
    ENTITY_RECENT_REQUESTS,
    CleanEntityStorageResult,
    EntityCommit,
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
from duratask.errors import LeaseLostError, StoreError

ENTITY_ROW = "entity"
# A batch's consumed messages, its record and its outbox row fit one transaction.
_MAX_BATCH = _BATCH - 4


def _record(row: Row | None, state: str | None) -> EntityRecord:
    if row is None:
        return EntityRecord()
    return EntityRecord(
        state=state,
        locked_by=row.get("LockedBy") or None,
        recent_requests=tuple(json.loads(row.get("Recent") or "[]")),
    )


def _shown(row: Row) -> bool:
    return bool(row.get("HasState")) or bool(row.get("LockedBy"))


class EntityStore(InboxStore):
    """Durable entities, each in its partition of the Entities table."""

    async def _entity_partition(self, entity_id: str) -> tuple[Row | None, str, list[Row]]:
        """The entity row (and its ETag) and message rows of an entity, its outbox
        delivered first."""
        pk = codec.table_key(entity_id)
        for _ in range(5):
            rows = await self._query(
                "entities",
                "PartitionKey eq @pk and RowKey ge @lo",
                {"pk": pk, "lo": ENTITY_ROW},
            )
            outbox = [dict(r) for r in rows if r["RowKey"].startswith(codec.OUTBOX)]
            if outbox:
                await self._deliver_outbox(entity_id, outbox, "entities")
                continue
            entity = next((r for r in rows if r["RowKey"] == ENTITY_ROW), None)
            messages = sorted(
                (dict(r) for r in rows if r["RowKey"].startswith(codec.MESSAGE)),
                key=lambda r: r["RowKey"],
            )
            return (dict(entity) if entity else None), (_etag(entity) if entity else ""), messages
        raise StoreError(f"entity {entity_id!r}: its partition keeps changing")

    # -- entity work items ------
    async def lock_next_entity_work_item(
        self,
        owner: str,
        lease: timedelta,
        max_messages: int = 100,
        work_filter: WorkFilter | None = None,
    ) -> EntityWorkItem | None:
        """Lease the free entity whose oldest deliverable message has waited longest."""
        if not self._sweep_due(ENTITY):
            return None
        names = work_filter.entities if work_filter is not None else None
        for entity_id in await self._entity_candidates(names):
            for _ in range(3):
                try:
                    item = await self._lease_entity(entity_id, owner, lease, max_messages)
                except _Stale:
                    continue
                if item is not None:
                    return item
                break
        return None

    async def _entity_candidates(self, names: frozenset[str] | None) -> list[str]:
        """Entities with a due message (oldest first) or an outbox to deliver."""
        now = codec.to_text(self._now())
        rows = await self._query(
            "entities", "RowKey ge @m and RowKey lt @end", {"m": codec.MESSAGE, "end": "o."}
        )
        best: dict[str, tuple[str, str]] = {}
        for row in rows:
            key, pk = row["RowKey"], row["PartitionKey"]
            if names is not None and split_entity_id(codec.untable_key(pk))[0] not in names:
                continue
            if key.startswith(codec.MESSAGE):
                if row["Due"] > now:
                    self._held_back(ENTITY, codec.from_text(row["Due"]))
                    continue
                rank = (row["Due"], key)
            else:
                rank = ("", key)
            if pk not in best or rank < best[pk]:
                best[pk] = rank
        ordered = sorted(best, key=lambda pk: best[pk])
        return [codec.untable_key(pk) for pk in ordered[:_SCAN_CANDIDATES]]

    async def _lease_entity(
        self, entity_id: str, owner: str, lease: timedelta, max_messages: int
    ) -> EntityWorkItem | None:
        entity, etag, messages = await self._entity_partition(entity_id)
        now = self._now()
        if entity is not None and self._lease_live(entity, now):
            return None
        holder = (entity or {}).get("LockedBy") or None
        ready = [
            m
            for m in messages
            if codec.from_text(m["Due"]) <= now and (holder is None or m["Source"] == holder)
        ][: max(1, min(max_messages, _MAX_BATCH))]
        if not ready:
            return None
        counts: dict[str, int] = json.loads((entity or {}).get("Counts") or "{}")
        counts = {k: v for k, v in counts.items() if any(m["RowKey"] == k for m in messages)}
        for m in ready:
            counts[m["RowKey"]] = counts.get(m["RowKey"], 0) + 1
        token = new_lock_token()
        row = dict(entity or {"PartitionKey": codec.table_key(entity_id), "RowKey": ENTITY_ROW})
        row.update(
            Token=token, Owner=owner, Expires=codec.to_text(now + lease), Counts=json.dumps(counts)
        )
        table = self._table("entities")
        try:
            if entity is None:
                await table.create_entity(row)
            else:
                await table.update_entity(row, mode=UpdateMode.REPLACE, **_if_match(etag))
        except HttpResponseError as exc:
            if exc.status_code in (404, 409, 412):
                raise _Stale from None  # another worker came first
            raise
        state = await self._unpack(row.get("State")) if row.get("HasState") else None
        locked = []
        for m in ready:
            text = await self._unpack(m["Body"])
            assert text is not None
            due = codec.from_text(m["Due"])
            locked.append(
                LockedEntityMessage(
                    codec.row_number(m["RowKey"]),
                    EntityMessage.from_json(entity_id, text, due),
                    counts[m["RowKey"]],
                )
            )
        return EntityWorkItem(entity_id, token, now + lease, _record(row, state), locked)

    async def _held_entity(self, work_item: EntityWorkItem) -> tuple[Row, str, list[Row]]:
        entity, etag, messages = await self._entity_partition(work_item.entity_id)
        if entity is None or entity.get("Token") != work_item.lock_token:
            raise LeaseLostError(f"lease on entity {work_item.entity_id!r} was lost")
        return entity, etag, messages

    async def renew_entity_work_item(self, work_item: EntityWorkItem, lease: timedelta) -> None:
        """Extend the lease to now + ``lease``."""
        now = self._now()
        await self._rewrite_held(work_item, Expires=codec.to_text(now + lease))
        work_item.locked_until = now + lease

    async def _rewrite_held(self, work_item: EntityWorkItem, **changes: str) -> None:
        """Write ``changes`` into the entity row while ``work_item`` holds its lease
        (:class:`LeaseLostError` otherwise); a row changed meanwhile is read again."""
        for _ in range(_RETRIES):
            entity, etag, _messages = await self._held_entity(work_item)
            entity.update(changes)
            try:
                await self._table("entities").update_entity(
                    entity, mode=UpdateMode.REPLACE, **_if_match(etag)
                )
            except HttpResponseError as exc:
                if exc.status_code in (404, 412):
                    continue
                raise
            return
        raise StoreError(f"entity {work_item.entity_id!r}: its row keeps changing")

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        """Write the batch and release the lease in one transaction (see the module
        docstring), then deliver its messages."""
        entity_id = work_item.entity_id
        pk = codec.table_key(entity_id)
        record = commit.record
        recent = list(record.recent_requests[-ENTITY_RECENT_REQUESTS:])
        items: list[dict[str, Any]] = [
            {
                "id": self._new_id(),
                "entity": m.entity_id,
                "body": m.to_json(),
                "due": codec.opt_text(m.visible_at),
            }
            for m in commit.entity_messages
        ]
        for m in commit.entity_messages:
            split_entity_id(m.entity_id)
        items += [
            {"id": self._new_id(), "body": codec.message_to_json(_normalized_message(m))}
            for m in commit.messages
        ]
        state = await self._pack(record.state) if record.state is not None else None
        outbox: Row | None = None
        if items:
            outbox = {
                "PartitionKey": pk,
                "RowKey": codec.row_key(codec.OUTBOX, self._new_id()),
                "List": 1,
                "Body": await self._pack(json.dumps(items)),
            }
        for _ in range(_RETRIES):
            entity, etag, messages = await self._held_entity(work_item)
            consumed = {codec.row_key(codec.MESSAGE, i) for i in commit.consumed_message_ids}
            present = {m["RowKey"] for m in messages}
            counts = {
                k: v
                for k, v in json.loads(entity.get("Counts") or "{}").items()
                if k not in consumed
            }
            entity.update(
                State=state,
                HasState=record.state is not None,
                LockedBy=record.locked_by or "",
                Recent=json.dumps(recent),
                Modified=codec.to_text(self._now()),
                Token="",
                Owner="",
                Expires="",
                Counts=json.dumps(counts),
            )
            ops: list[tuple[Any, ...]] = [("update", entity, _if_match(etag))]
            ops += [
                ("delete", {"PartitionKey": pk, "RowKey": k}) for k in sorted(consumed & present)
            ]
            if outbox is not None:
                ops.append(("create", outbox))
            try:
                await self._table("entities").submit_transaction(ops)
            except HttpResponseError as exc:
                if exc.status_code in (404, 409, 412):
                    continue  # a message arrived meanwhile, or the lease was lost: read again
                raise
            break
        else:
            raise StoreError(f"entity {entity_id!r}: its commit keeps conflicting")
        if outbox is not None:
            await self._deliver_outbox(entity_id, [outbox], "entities")
        self._changed([ENTITY, ORCHESTRATION] if commit.messages else [ENTITY])

    async def abandon_entity_work_item(
        self, work_item: EntityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at`` the entity rests until then."""
        retry_at = as_utc_or_none(retry_at)
        expires = codec.opt_text(retry_at)
        try:
            await self._rewrite_held(work_item, Token="", Owner="", Expires=expires)
        except LeaseLostError:
            return
        if retry_at is not None:
            self._held_back(ENTITY, retry_at)
        else:
            self._changed([ENTITY])

    # -- entity client operations ------
    async def send_entity_message(self, message: EntityMessage) -> None:
        """Enqueue a message to an entity."""
        if message.visible_at is not None:
            message = dataclasses.replace(message, visible_at=as_utc_or_none(message.visible_at))
        await self._deliver_entity(message, self._new_id(), marked=False)

    async def _metadata(
        self, entity_id: str, row: Row, include_state: bool, backlog: int
    ) -> EntityMetadata:
        name, key = split_entity_id(entity_id)
        state = None
        if include_state and row.get("HasState"):
            state = await self._unpack(row.get("State"))
        return EntityMetadata(
            entity_id=entity_id,
            name=name,
            key=key,
            last_modified_at=codec.from_text(row.get("Modified") or "0"),
            serialized_state=state,
            locked_by=row.get("LockedBy") or None,
            backlog=backlog,
        )

    async def get_entity(self, entity_id: str, include_state: bool = True) -> EntityMetadata | None:
        """One entity with a state or a lock holder, or None."""
        split_entity_id(entity_id)
        entity, _, messages = await self._entity_partition(entity_id)
        if entity is None or not _shown(entity):
            return None
        return await self._metadata(entity_id, entity, include_state, len(messages))

    async def _entity_rows(self) -> tuple[dict[str, Any], dict[str, int]]:
        """Every entity row by entity id (with its ETag), and how many messages wait for
        each entity (a scan of the table: it indexes nothing but the keys)."""
        rows = await self._query(
            "entities",
            "RowKey eq @e or ( RowKey ge @m and RowKey lt @end )",
            {"e": ENTITY_ROW, "m": codec.MESSAGE, "end": "m."},
        )
        entities: dict[str, Any] = {}
        backlog: dict[str, int] = {}
        for row in rows:
            entity_id = codec.untable_key(row["PartitionKey"])
            if row["RowKey"] == ENTITY_ROW:
                entities[entity_id] = row
            else:
                backlog[entity_id] = backlog.get(entity_id, 0) + 1
        return entities, backlog

    async def query_entities(self, query: EntityQuery) -> EntityQueryPage:
        """Entities with a state or a lock holder, matching the filters, by id."""
        check_page_size(query.page_size)
        after = decode_entity_token(query.continuation_token) if query.continuation_token else None
        start = as_utc_or_none(query.last_modified_from)
        end = as_utc_or_none(query.last_modified_to)
        prefix = query.entity_id_prefix
        entities, backlog = await self._entity_rows()
        chosen = []
        for entity_id in sorted(entities):
            row = entities[entity_id]
            modified = codec.from_text(row.get("Modified") or "0")
            if (
                _shown(row)
                and (after is None or entity_id > after)
                and (query.name is None or split_entity_id(entity_id)[0] == query.name)
                and (prefix is None or entity_id.startswith(prefix))
                and (start is None or modified >= start)
                and (end is None or modified < end)
            ):
                chosen.append(entity_id)
        page = [
            await self._metadata(e, entities[e], query.include_state, backlog.get(e, 0))
            for e in chosen[: query.page_size]
        ]
        token = encode_entity_token(page[-1].entity_id) if len(chosen) > query.page_size else None
        return EntityQueryPage(page, token)

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Release orphaned locks, then forget empty entities."""
        released = removed = 0
        entities, backlog = await self._entity_rows()
        table = self._table("entities")
        for entity_id, row in entities.items():
            etag = _etag(row)
            holder = row.get("LockedBy") or None
            if release_orphaned_locks and holder is not None and not row.get("Token"):
                sentinel = await self._get("history", codec.table_key(holder), codec.SENTINEL)
                state = await self._state(sentinel) if sentinel is not None else None
                if orphaned_lock(state):
                    row.update(LockedBy="", Modified=codec.to_text(self._now()))
                    try:
                        meta = await table.update_entity(
                            row, mode=UpdateMode.REPLACE, **_if_match(etag)
                        )
                    except HttpResponseError as exc:
                        if exc.status_code not in (404, 412):
                            raise
                        continue  # changed meanwhile: left to the next clean
                    etag = meta["etag"]
                    released += 1
            if (
                remove_empty_entities
                and not _shown(row)
                and not backlog.get(entity_id)
                and not row.get("Token")
            ):
                removed += await self._forget_entity(entity_id, etag)
        if released:
            self._changed([ENTITY])
        return CleanEntityStorageResult(removed, released)

    async def _forget_entity(self, entity_id: str, etag: str) -> int:
        """Delete an empty entity's row (if unchanged) and its delivery markers."""
        pk = codec.table_key(entity_id)
        table = self._table("entities")
        try:
            await table.delete_entity(pk, ENTITY_ROW, **_if_match(etag))
        except HttpResponseError as exc:
            if exc.status_code not in (404, 412):
                raise
            return 0
        markers = await self._query(
            "entities",
            "PartitionKey eq @pk and RowKey ge @d and RowKey lt @end",
            {"pk": pk, "d": codec.DELIVERED, "end": "d."},
        )
        for marker in markers:
            await _ignore_missing(table.delete_entity(pk, marker["RowKey"]))
        return 1
