"""Client operations on instances: creating, messaging, reading, querying (a scan of the
Instances table: the table service indexes nothing but the keys) and purging."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from azure.core.exceptions import HttpResponseError

from duratask.backends._paging import page_in_memory, resume_after
from duratask.backends._shared import (
    as_utc_or_none,
    check_page_size,
    instance_filter,
    pending_state,
    started_event,
)
from duratask.backends._wakeups import ORCHESTRATION
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._inbox import InboxStore
from duratask.backends.azure._rows import (
    _BATCH,
    _etag,
    _if_match,
    _ignore_missing,
    _normalized_message,
)
from duratask.backends.base import (
    InstanceQuery,
    OrchestrationMessage,
    PurgeFilter,
    QueryPage,
)
from duratask.errors import (
    OrchestrationAlreadyExistsError,
    StoreError,
)
from duratask.state import OrchestrationState, OrchestrationStatus


class InstanceStore(InboxStore):
    """Client operations on instances."""

    async def create_instance(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> None:
        """Create an instance, replacing an existing one whose status is ``replaceable``."""
        state = pending_state(message.instance_id, started_event(message))
        message = _normalized_message(message)
        pk = codec.table_key(message.instance_id)
        now = self._now()
        for _ in range(20):
            sentinel = await self._get("history", pk, codec.SENTINEL)
            row = await self._message_row(pk, self._new_id(), message, now)
            new = await self._new_sentinel(pk, state)
            if sentinel is None:
                ops: list[tuple[Any, ...]] = [("create", new), ("create", row)]
            else:
                status = (await self._state(sentinel)).runtime_status
                if status not in replaceable:
                    raise OrchestrationAlreadyExistsError(message.instance_id, status)
                await self._wipe(pk, keep_sentinel=True)
                ops = [("update", new, _if_match(_etag(sentinel))), ("create", row)]
            try:
                await self._transact(ops)
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):
                    continue
                raise
            await self._copy_instance(state)
            self._changed([ORCHESTRATION], [message.instance_id])
            await self._hint(
                self._control_queue(message.instance_id), json.dumps({"i": message.instance_id})
            )
            return
        raise StoreError(f"instance {message.instance_id!r}: creation keeps conflicting")

    async def _wipe(self, pk: str, *, keep_sentinel: bool) -> None:
        """Delete the rows of a partition (the sentinel last, or not at all)."""
        rows = await self._query("history", "PartitionKey eq @pk", {"pk": pk})
        keys = sorted(r["RowKey"] for r in rows if r["RowKey"] != codec.SENTINEL)
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            await self._transact_or_each(
                [("delete", {"PartitionKey": pk, "RowKey": key}) for key in chunk]
            )
        if not keep_sentinel:
            await _ignore_missing(self._table("history").delete_entity(pk, codec.SENTINEL))

    async def _transact_or_each(self, ops: list[tuple[Any, ...]]) -> None:

        try:
            await self._transact(ops)
        except HttpResponseError:
            for op in ops:
                row = op[1]
                await _ignore_missing(
                    self._table("history").delete_entity(row["PartitionKey"], row["RowKey"])
                )

    async def send_message(self, message: OrchestrationMessage) -> bool:
        """Store a message in its instance's inbox; False if there is no such instance."""
        return await self._deliver(_normalized_message(message), self._new_id(), marked=False)

    async def get_instance(self, instance_id: str) -> OrchestrationState | None:
        """The instance row, read from its sentinel (exact)."""
        sentinel = await self._get("history", codec.table_key(instance_id), codec.SENTINEL)
        return None if sentinel is None else await self._state(sentinel)

    async def _all_states(self) -> list[OrchestrationState]:
        """Every instance, from the Instances copy; an unfinished one is re-read from its
        sentinel, a copy whose sentinel is gone is left out."""
        states = []
        for row in await self._query("instances", "RowKey eq @rk", {"rk": ""}):
            text = await self._unpack(row["State"])
            assert text is not None
            state = codec.state_from_json(text)
            if not state.runtime_status.is_terminal:
                exact = await self.get_instance(state.instance_id)
                if exact is None:
                    continue
                state = exact
            states.append(state)
        return states

    async def query_instances(self, query: InstanceQuery) -> QueryPage:
        """Matching instances in the query's order; reads the whole Instances table (the
        table service has no index but the keys)."""
        check_page_size(query.page_size)
        resume_after(query)  # a malformed token is refused before the table is read
        return page_in_memory(query, await self._all_states(), instance_filter(query))

    async def count_instances(self, query: InstanceQuery) -> dict[OrchestrationStatus, int]:
        """Counts by status of the instances matching ``query``'s filters."""
        matches = instance_filter(query)
        return dict(Counter(s.runtime_status for s in await self._all_states() if matches(s)))

    async def purge_instance(self, instance_id: str) -> bool:
        """Delete a terminal instance's partition and copy; False if absent or not terminal."""
        pk = codec.table_key(instance_id)
        sentinel = await self._get("history", pk, codec.SENTINEL)
        if sentinel is None or not (await self._state(sentinel)).runtime_status.is_terminal:
            return False
        await self._wipe(pk, keep_sentinel=False)
        await _ignore_missing(self._table("instances").delete_entity(pk, ""))
        return True

    async def purge_instances(self, purge_filter: PurgeFilter) -> int:
        """Delete every terminal instance matching the filter; returns how many."""
        before = as_utc_or_none(purge_filter.created_before)
        start = as_utc_or_none(purge_filter.created_from)
        completed_before = as_utc_or_none(purge_filter.completed_before)
        purged = 0
        for s in await self._all_states():
            if (
                s.runtime_status.is_terminal
                and (purge_filter.statuses is None or s.runtime_status in purge_filter.statuses)
                and (before is None or s.created_at < before)
                and (start is None or s.created_at >= start)
                and (
                    completed_before is None
                    or (s.completed_at is not None and s.completed_at < completed_before)
                )
            ):
                purged += await self.purge_instance(s.instance_id)
        return purged
