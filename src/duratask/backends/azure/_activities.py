"""Activity work items: rows of their instance's partition, leased one by one, completed by
one transaction that deletes the row and stores the result as a message."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode

from duratask.backends._shared import (
    as_utc,
    new_lock_token,
)
from duratask.backends._wakeups import (
    ACTIVITY,
    ORCHESTRATION,
)
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._inbox import InboxStore
from duratask.backends.azure._rows import (
    Row,
    _etag,
    _if_match,
    _normalized_message,
)
from duratask.backends.base import (
    ActivityWorkItem,
    OrchestrationMessage,
    WorkFilter,
)
from duratask.errors import (
    LeaseLostError,
    StoreError,
)
from duratask.state import DEFAULT_TASK_QUEUE


class ActivityStore(InboxStore):
    """Activity work items."""

    async def lock_next_activity_work_items(
        self,
        owner: str,
        lease: timedelta,
        max_items: int = 1,
        work_filter: WorkFilter | None = None,
    ) -> list[ActivityWorkItem]:
        """Lease up to ``max_items`` of the oldest visible activities."""

        def runs(row: Mapping[str, Any]) -> bool:
            if work_filter is None:
                return True
            names = work_filter.activities
            queue = row.get("Queue") or DEFAULT_TASK_QUEUE
            return work_filter.serves_queue(queue) and (names is None or row["Name"] in names)

        leased: list[ActivityWorkItem] = []
        alone = False
        if not self._activity_hints and self._queue_due(self._workitems_name):
            self._activity_hints = await self._receive_hints(self._workitems_name)
        kept: list[tuple[str, Any, dict[str, Any]]] = []
        for hint in self._activity_hints:
            if len(leased) >= max_items or alone:
                kept.append(hint)
                continue
            body = hint[2]
            row = await self._get(
                "history",
                codec.table_key(str(body.get("i", ""))),
                codec.row_key(codec.ACTIVITY, int(body.get("a", 0))),
            )
            if row is not None and not runs(row):
                kept.append(hint)  # another worker's: seen again when its hiding ends
                continue
            if row is not None:
                if int(row["Count"]) > 0 and leased:
                    kept.append(hint)
                    alone = True
                    continue
                item = await self._lease_activity(row, owner, lease)
                if item is not None:
                    leased.append(item)
                    alone = item.dequeue_count > 1
            await self._drop_hint(hint)
        self._activity_hints = kept
        if len(leased) >= max_items or alone or not self._sweep_due(ACTIVITY):
            return leased
        now = self._now()
        rows = await self._query(
            "history", "RowKey ge @lo and RowKey lt @hi", {"lo": codec.ACTIVITY, "hi": "a."}
        )
        rows.sort(key=lambda r: r["RowKey"])
        for row in rows:
            if len(leased) >= max_items:
                break
            if not runs(row):
                continue
            if codec.from_text(row["Due"]) > now or self._lease_live(row, now):
                continue
            if int(row["Count"]) > 0:  # delivered before, unfinished: alone
                if leased:
                    break
                max_items = 1
            item = await self._lease_activity(row, owner, lease)
            if item is not None:
                leased.append(item)
        return leased

    async def _lease_activity(
        self, row: Any, owner: str, lease: timedelta
    ) -> ActivityWorkItem | None:
        """Lease one activity row if it is due and free (a write conditional on its ETag)."""
        now = self._now()
        if codec.from_text(row["Due"]) > now or self._lease_live(row, now):
            return None
        count = int(row["Count"])
        token = new_lock_token()
        updated = dict(row)
        updated.update(
            Token=token, Owner=owner, Expires=codec.to_text(now + lease), Count=count + 1
        )
        try:
            meta = await self._table("history").update_entity(
                updated, mode=UpdateMode.REPLACE, **_if_match(_etag(row))
            )
            self._remember(row["PartitionKey"], row["RowKey"], meta["etag"], updated)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                return None
            raise
        text = await self._unpack(row["Body"])
        assert text is not None
        return ActivityWorkItem(
            codec.row_number(row["RowKey"]),
            codec.request_from_json(text),
            token,
            now + lease,
            count + 1,
        )

    async def _held_activity(self, work_item: ActivityWorkItem) -> Row:
        row = await self._get(
            "history",
            codec.table_key(work_item.request.instance_id),
            codec.row_key(codec.ACTIVITY, work_item.work_item_id),
        )
        if row is None or row["Token"] != work_item.lock_token:
            raise LeaseLostError(f"lease on activity {work_item.work_item_id} was lost")
        return dict(row) | {"__etag": _etag(row)}

    async def _write_activity(self, row: Row, lost: ActivityWorkItem) -> None:

        etag = row.pop("__etag")
        try:
            meta = await self._table("history").update_entity(
                row, mode=UpdateMode.REPLACE, **_if_match(etag)
            )
            self._remember(row["PartitionKey"], row["RowKey"], meta["etag"], row)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                raise LeaseLostError(f"lease on activity {lost.work_item_id} was lost") from None
            raise

    async def renew_activity_work_item(self, work_item: ActivityWorkItem, lease: timedelta) -> None:
        """Extend the lease to now + ``lease``."""
        now = self._now()
        row = await self._held_activity(work_item)
        row["Expires"] = codec.to_text(now + lease)
        await self._write_activity(row, work_item)
        work_item.locked_until = now + lease

    async def complete_activity_work_item(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> None:
        """Delete the activity and store its result, in one transaction."""
        now = self._now()
        result = _normalized_message(result)
        elsewhere = result.instance_id != work_item.request.instance_id
        for _ in range(20):
            row = await self._held_activity(work_item)  # LeaseLostError once it is not
            etag = row.pop("__etag")
            pk = row["PartitionKey"]
            ops: list[tuple[Any, ...]] = [("delete", row, _if_match(etag))]
            sentinel = None if elsewhere else await self._get("history", pk, codec.SENTINEL)
            if sentinel is not None:  # (none: the instance was purged meanwhile)
                ops.append(("create", await self._message_row(pk, self._new_id(), result, now)))
                ops.append(self._touch(pk))
            self._rows.pop((pk, codec.SENTINEL), None)
            self._rows.pop((pk, row["RowKey"]), None)
            try:
                await self._transact(ops)
            except HttpResponseError as exc:
                if exc.status_code in (404, 409, 412):
                    continue  # the instance's sentinel changed, or the activity's lease
                raise
            break
        else:
            raise StoreError(f"activity {work_item.work_item_id}: completion keeps conflicting")
        if elsewhere:  # not an orchestration's own activity: delivered after the deletion
            await self._deliver(result, self._new_id(), marked=False)
            return
        self._changed([ORCHESTRATION], [result.instance_id])
        await self._hint(
            self._control_queue(result.instance_id), json.dumps({"i": result.instance_id})
        )

    async def abandon_activity_work_item(
        self, work_item: ActivityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Hand the activity back unrun, visible again at ``retry_at`` (now if None)."""
        visible_at = as_utc(retry_at) if retry_at is not None else self._now()
        try:
            row = await self._held_activity(work_item)
        except LeaseLostError:
            return
        row.update(
            Token="",
            Owner="",
            Expires="",
            Due=codec.to_text(visible_at),
            Count=max(int(row["Count"]) - 1, 0),
        )
        try:
            await self._write_activity(row, work_item)
        except LeaseLostError:
            return
        self._changed([ACTIVITY])
        body = {"i": work_item.request.instance_id, "a": work_item.work_item_id}
        delay = (visible_at - self._now()).total_seconds()
        if delay > 0:
            self._held_back(ACTIVITY, visible_at)
        await self._hint(self._workitems_name, json.dumps(body), delay)

    async def record_activity_heartbeat(
        self, work_item: ActivityWorkItem, details: str | None, lease: timedelta
    ) -> None:
        """Keep ``details`` with the activity and extend its lease."""
        now = self._now()
        row = await self._held_activity(work_item)
        text = await self._unpack(row["Body"])
        assert text is not None
        request = dataclasses.replace(codec.request_from_json(text), heartbeat_details=details)
        row["Body"] = await self._pack(codec.request_to_json(request))
        row["Expires"] = codec.to_text(now + lease)
        await self._write_activity(row, work_item)
        work_item.locked_until = now + lease
