"""An instance's partition in the History table: reading its sentinel, inbox and history,
settling a staged episode, and delivering messages to it (idempotently, by a marker row)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode

from duratask.backends._shared import pending_state
from duratask.backends._wakeups import ENTITY, ORCHESTRATION
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._hints import HintStore
from duratask.backends.azure._rows import (
    _LOG,
    _REPLACE,
    _RETRIES,
    Row,
    _etag,
    _if_match,
    _ignore_missing,
    _Partition,
)
from duratask.backends.base import (
    EntityMessage,
    LeaseTakeover,
    OrchestrationMessage,
    split_entity_id,
)
from duratask.errors import StoreError
from duratask.history import (
    ExecutionStarted,
    HistoryEvent,
    event_from_json,
)
from duratask.state import OrchestrationState


class InboxStore(HintStore):
    """An instance's partition in the History table."""

    async def _head(self, instance_id: str) -> _Partition:
        """The sentinel, inbox and outbox of an instance's partition (one query)."""
        pk = codec.table_key(instance_id)
        rows = await self._query(
            "history", "PartitionKey eq @pk and RowKey ge @lo", {"pk": pk, "lo": codec.MESSAGE}
        )
        part = _Partition(None, "")
        for row in rows:
            key = row["RowKey"]
            if key == codec.SENTINEL:
                part.sentinel, part.etag = dict(row), _etag(row)
            elif key.startswith(codec.MESSAGE):
                part.messages.append(dict(row))
            elif key.startswith(codec.OUTBOX):
                part.outbox.append(dict(row))
        return part

    async def _settled_head(self, instance_id: str) -> _Partition:
        """:meth:`_head`, after applying a staged episode and delivering the outbox."""
        for _ in range(5):
            part = await self._head(instance_id)
            sentinel = part.sentinel
            if sentinel is not None and sentinel.get("Staged"):
                await self._apply_staged(instance_id, part)
                continue
            if part.outbox:
                await self._deliver_outbox(instance_id, part.outbox)
                part.outbox = []
            return part
        raise StoreError(f"instance {instance_id!r}: its partition keeps changing")

    async def _read_history(self, instance_id: str, sentinel: Row) -> list[HistoryEvent]:
        lo, hi = codec.history_range(sentinel["Hist"])
        rows = await self._query(
            "history",
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            {"pk": codec.table_key(instance_id), "lo": lo, "hi": hi},
        )
        rows.sort(key=lambda r: r["RowKey"])
        events = []
        for row in rows[: int(sentinel["Length"])]:
            text = await self._unpack(row["Body"])
            assert text is not None
            events.append(event_from_json(text))
        if len(events) != int(sentinel["Length"]):
            raise StoreError(f"instance {instance_id!r}: history rows are missing")
        return events

    async def _message_row(
        self, pk: str, message_id: int, message: OrchestrationMessage, now: datetime
    ) -> Row:
        due = message.visible_at or now
        return {
            "PartitionKey": pk,
            "RowKey": codec.row_key(codec.MESSAGE, message_id),
            "Body": await self._pack(codec.message_to_json(message)),
            "Due": codec.to_text(due),
        }

    async def _deliver(
        self, message: OrchestrationMessage, message_id: int, *, marked: bool
    ) -> bool:
        """Store ``message`` in its instance's inbox (creating the instance for a start);
        False if the instance does not exist. With ``marked``, a ``d-ID`` marker makes a
        second delivery of ``message_id`` a no-op (it counts as delivered)."""
        pk = codec.table_key(message.instance_id)
        now = self._now()
        for _ in range(20):
            sentinel = await self._get("history", pk, codec.SENTINEL)
            ops: list[tuple[Any, ...]] = [
                ("create", await self._message_row(pk, message_id, message, now))
            ]
            if marked:
                ops.append(
                    (
                        "create",
                        {"PartitionKey": pk, "RowKey": codec.row_key(codec.DELIVERED, message_id)},
                    )
                )
            state: OrchestrationState | None = None
            if sentinel is None:
                if not isinstance(message.event, ExecutionStarted):
                    return False
                state = pending_state(message.instance_id, message.event)
                ops.append(("create", await self._new_sentinel(pk, state)))
            else:
                change = message.status_change
                current = await self._state(sentinel)
                if change is not None and current.runtime_status is change.when:
                    state = dataclasses.replace(
                        current, runtime_status=change.becomes, last_updated_at=now
                    )
                    updated = dict(sentinel)
                    updated["State"] = await self._pack(codec.state_to_json(state))
                    ops.append(("update", updated, _if_match(_etag(sentinel)) | _REPLACE))
                else:
                    ops.append(self._touch(pk))
                self._rows.pop((pk, codec.SENTINEL), None)
            try:
                await self._transact(ops)
            except HttpResponseError as exc:
                if exc.status_code == 409 and marked and sentinel is not None:
                    if await self._get("history", pk, ops[1][1]["RowKey"]) is not None:
                        return True  # delivered before
                if exc.status_code in (409, 412):
                    continue
                raise
            if state is not None:
                await self._copy_instance(state)
            self._changed([ORCHESTRATION], [message.instance_id])
            if message.visible_at is not None and message.visible_at > now:
                self._held_back(ORCHESTRATION, message.visible_at)
            await self._hint(
                self._control_queue(message.instance_id),
                json.dumps({"i": message.instance_id}),
                (message.visible_at - now).total_seconds() if message.visible_at else 0.0,
            )
            return True
        raise StoreError(f"instance {message.instance_id!r}: delivery keeps conflicting")

    def _touch(self, pk: str) -> tuple[Any, ...]:
        """A transaction step that changes the sentinel's ETag and nothing else it holds
        (an unconditional merge of one property, so concurrent messages never conflict):
        an episode fenced on an unchanged instance then sees that a message arrived."""
        row = {"PartitionKey": pk, "RowKey": codec.SENTINEL, "Touched": str(self._new_id())}
        return ("update", row, {"mode": UpdateMode.MERGE})

    async def _new_sentinel(self, pk: str, state: OrchestrationState) -> Row:
        return {
            "PartitionKey": pk,
            "RowKey": codec.SENTINEL,
            "State": await self._pack(codec.state_to_json(state)),
            "Exec": state.execution_id or "",
            # Names the current history's rows: a new one at every reset, so the rows of a
            # dropped history never mix with the new one's.
            "Hist": uuid.uuid4().hex,
            "Length": 0,
            "Token": "",
            "Owner": "",
            "Expires": "",
            "Counts": "{}",
            "Staged": "",
        }

    async def _deliver_outbox(
        self, instance_id: str, outbox: list[Row], table: str = "history"
    ) -> None:
        """Deliver the outbox rows of an instance's (or an entity's) partition in order,
        then delete them (see step 2 and 3 of the store's docstring). A row holds one
        message to an orchestration, one to an entity (``Entity``), or a list of both
        (``List``), each list item with its own id for the receiver's marker."""
        pk = codec.table_key(instance_id)
        for row in sorted(outbox, key=lambda r: r["RowKey"]):
            text = await self._unpack(row["Body"])
            assert text is not None
            number = codec.row_number(row["RowKey"])
            if row.get("List"):
                for item in json.loads(text):
                    await self._deliver_item(
                        item["id"], item.get("entity"), item["body"], item.get("due")
                    )
            else:
                await self._deliver_item(number, row.get("Entity"), text, row.get("Due"))
            await _ignore_missing(self._table(table).delete_entity(pk, row["RowKey"]))

    async def _deliver_item(
        self, message_id: int, entity_id: str | None, text: str, due: str | None
    ) -> None:
        if not entity_id:
            await self._deliver(codec.message_from_json(text), message_id, marked=True)
        else:
            entity_message = EntityMessage.from_json(entity_id, text, codec.opt_time(due))
            await self._deliver_entity(entity_message, message_id, marked=True)

    async def _deliver_entity(
        self, message: EntityMessage, message_id: int, *, marked: bool
    ) -> None:
        """Store ``message`` in its entity's inbox (a message row in the Entities table);
        with ``marked``, a ``d-ID`` marker makes a second delivery of ``message_id`` a
        no-op. The entity's own row is made when it is first leased."""
        split_entity_id(message.entity_id)
        pk = codec.table_key(message.entity_id)
        due = message.visible_at or self._now()
        ops: list[tuple[Any, ...]] = [
            (
                "create",
                {
                    "PartitionKey": pk,
                    "RowKey": codec.row_key(codec.MESSAGE, message_id),
                    "Body": await self._pack(message.to_json()),
                    "Due": codec.to_text(due),
                    "Source": message.source or "",
                },
            )
        ]
        marker = codec.row_key(codec.DELIVERED, message_id)
        if marked:
            ops.append(("create", {"PartitionKey": pk, "RowKey": marker}))
        try:
            await self._table("entities").submit_transaction(ops)
        except HttpResponseError as exc:
            if exc.status_code != 409 or not marked:
                raise
            if await self._get("entities", pk, marker) is None:
                raise
            return  # delivered before
        if due > self._now():
            self._held_back(ENTITY, due)
        self._changed([ENTITY])

    async def _entity_outbox_row(self, pk: str, message: EntityMessage) -> Row:
        """An outbox row of one message to an entity (see :meth:`_deliver_outbox`)."""
        split_entity_id(message.entity_id)
        return {
            "PartitionKey": pk,
            "RowKey": codec.row_key(codec.OUTBOX, self._new_id()),
            "Entity": message.entity_id,
            "Body": await self._pack(message.to_json()),
            "Due": codec.opt_text(message.visible_at),
        }

    async def _copy_instance(self, state: OrchestrationState) -> None:
        """Write the ``{hub}Instances`` copy of an instance row (best effort: queries
        re-read unfinished instances' sentinels)."""
        try:
            await self._table("instances").upsert_entity(
                {
                    "PartitionKey": codec.table_key(state.instance_id),
                    "RowKey": "",
                    "State": await self._pack(codec.state_to_json(state)),
                    "Status": state.runtime_status.value,
                },
                mode=UpdateMode.REPLACE,
            )
        except Exception as exc:
            _LOG.warning("instance copy of %r not written: %s", state.instance_id, exc)

    async def _drop_orphans(self, instance_id: str, rows: list[Row]) -> None:
        """Delete message rows left in the partition of an instance that no longer exists."""
        pk = codec.table_key(instance_id)
        for row in rows:
            await _ignore_missing(self._table("history").delete_entity(pk, row["RowKey"]))

    async def _apply_staged(self, instance_id: str, part: _Partition) -> None:
        """Apply the rows of a committed staged episode (idempotent), then clear the mark."""
        sentinel = part.sentinel
        assert sentinel is not None
        name = sentinel["Staged"]
        try:
            stream = await self._c().container.download_blob(name)
            staged = json.loads(codec.gunzip_text(await stream.readall()))
        except ResourceNotFoundError:
            return  # another reader applied it and cleared the mark meanwhile
        table = self._table("history")
        for item in staged:
            row = item["row"]
            if item["op"] == "delete":
                await _ignore_missing(table.delete_entity(row["PartitionKey"], row["RowKey"]))
            else:
                await table.upsert_entity(row, mode=UpdateMode.REPLACE)
        etag = part.etag
        for _ in range(_RETRIES):
            if sentinel is None or sentinel.get("Staged") != name:
                return  # cleared by another reader (or purged)
            updated = dict(sentinel)
            updated["Staged"] = ""
            try:
                await table.update_entity(updated, mode=UpdateMode.REPLACE, **_if_match(etag))
            except HttpResponseError as exc:
                if exc.status_code not in (404, 412):
                    raise
                found = await self._get("history", sentinel["PartitionKey"], codec.SENTINEL)
                sentinel, etag = (dict(found), _etag(found)) if found is not None else (None, "")
                continue
            await _ignore_missing(self._c().container.delete_blob(name))
            return

    async def _record_takeover(
        self, sentinel: Row, instance_id: str, now: datetime, taken_by: str | None
    ) -> None:
        """Add to ``sentinel`` the record of its lease taken over now (see
        :meth:`lease_takeovers`)."""
        kept = codec.takeovers_from_json(instance_id, await self._unpack(sentinel.get("Takeovers")))
        expires = codec.opt_time(sentinel.get("Expires")) or now
        kept.append(
            LeaseTakeover(
                instance_id=instance_id,
                execution_id=sentinel.get("Exec") or None,
                previous_owner=sentinel.get("Owner") or None,
                lease_expired_at=min(expires, now),
                taken_at=now,
                taken_by=taken_by,
            )
        )
        sentinel["Takeovers"] = await self._pack(codec.takeovers_to_json(kept))
