"""Finding and leasing orchestration work: the hints of the control queues this worker's
partitions own, the sweep of the rows, and the lease on an instance's sentinel."""

from __future__ import annotations

import json
from datetime import timedelta

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode

from duratask.backends._shared import (
    history_is_known,
    new_lock_token,
)
from duratask.backends._wakeups import ORCHESTRATION
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._inbox import InboxStore
from duratask.backends.azure._partitions import partition_owners
from duratask.backends.azure._rows import (
    _RETRIES,
    _SCAN_CANDIDATES,
    Row,
    _etag,
    _if_match,
    _Stale,
)
from duratask.backends.base import (
    KnownHistories,
    LockedMessage,
    OrchestrationWorkItem,
    WorkFilter,
)
from duratask.errors import (
    LeaseLostError,
    StoreError,
)
from duratask.history import ExecutionTerminated

# Seconds after which a due message of a partition this store object does not serve is
# taken anyway: its owner takes its own within milliseconds (hints), so a message this old
# is one the owner cannot run (a work filter: registrations, task queues) or is stuck on.
OVERDUE_AFTER = 2.0


class DequeueStore(InboxStore):
    """Finding and leasing orchestration work."""

    async def lock_next_orchestration_work_item(
        self,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories = None,
        work_filter: WorkFilter | None = None,
    ) -> OrchestrationWorkItem | None:
        """Lease the free instance whose oldest visible message has waited longest."""
        runnable = work_filter
        served = await self._served()
        for _ in range(_SCAN_CANDIDATES):
            hinted = await self._hinted_instances(served)
            if not hinted:
                break
            item = await self._try_lease(hinted[0], owner, lease, known_histories, runnable)
            if item is not None:
                return item
        if not self._sweep_due(ORCHESTRATION):
            return None
        for instance_id in await self._instance_candidates(served):
            item = await self._try_lease(instance_id, owner, lease, known_histories, runnable)
            if item is not None:
                return item
        return None

    async def _served(self) -> frozenset[str] | None:
        """The control partitions this store object serves (see ``_partitions``); None (all)
        on a test clock, where the leases' real time would not match the store's."""
        if not self._wall_clock:
            return None
        clients = self._c()
        return await self._partitions.serve(clients.leases, clients.tables["workers"])

    async def partition_owners(self) -> dict[str, str | None]:
        """Who holds each ``{hub}-control-NN`` partition's lease now (``None``: nobody)."""
        return await partition_owners(self._c().leases, self._control_names)

    @property
    def partition_member(self) -> str:
        """This store object's name as a partition owner (see :meth:`partition_owners`)."""
        return self._partitions.member

    async def _hinted_instances(self, served: frozenset[str] | None) -> list[str]:
        """The instances the next hints of the ``served`` control queues name (hints read
        ahead are kept for the next call; the hints of the returned instances are deleted)."""
        if self._orchestration_hints and served is not None:
            self._orchestration_hints = [h for h in self._orchestration_hints if h[0] in served]
        if not self._orchestration_hints:
            queue = self._next_control_queue(served)
            if queue is None:
                return []
            self._orchestration_hints = await self._receive_hints(queue)
            if not self._orchestration_hints:
                self._control_turn += 1
                return []
        first = self._orchestration_hints[0][2].get("i", "")
        same = [h for h in self._orchestration_hints if h[2].get("i") == first]
        self._orchestration_hints = [h for h in self._orchestration_hints if h not in same]
        for hint in same:
            await self._drop_hint(hint)
        return [first] if isinstance(first, str) and first else []

    def _next_control_queue(self, served: frozenset[str] | None) -> str | None:
        """The ``served`` control queue to read now: one this process hinted since it was
        last read, else the next in turn whose idle interval passed (None: none is due)."""
        queues = [q for q in self._control_names if served is None or q in served]
        for queue in queues:
            if self._hinted_here(queue):
                return queue
        for n in range(len(queues)):
            queue = queues[(self._control_turn + n) % len(queues)]
            if self._queue_due(queue):
                self._control_turn += n
                return queue
        return None

    async def _instance_candidates(self, served: frozenset[str] | None) -> list[str]:
        """Instances of the ``served`` partitions with a due message (oldest first) that no
        worker holds, or with work to settle. A message of another partition that waited
        longer than ``OVERDUE_AFTER`` is a candidate too: its owner may not run that
        orchestration (a work filter) or may be stuck; the instance's own lease still keeps
        it to one worker."""
        now_time = self._now()
        now = codec.to_text(now_time)
        overdue = codec.to_text(now_time - timedelta(seconds=OVERDUE_AFTER))
        rows = await self._query(
            "history",
            "( RowKey ge @m and RowKey lt @end ) or "
            "( RowKey eq @s and ( Staged ne @empty or Token ne @empty ) )",
            {"m": codec.MESSAGE, "end": "o.", "s": codec.SENTINEL, "empty": ""},
        )
        # Instances a worker holds now: their messages wait for its commit, which hints
        # them again (trying them would cost a read each and crowd out the others).
        held = {
            row["PartitionKey"]
            for row in rows
            if row["RowKey"] == codec.SENTINEL and row["Token"] and self._lease_live(row, now_time)
        }
        best: dict[str, tuple[str, str]] = {}
        for row in rows:
            key = row["RowKey"]
            pk = row["PartitionKey"]
            mine = served is None or self._control_queue(codec.untable_key(pk)) in served
            if key == codec.SENTINEL and not row.get("Staged"):
                continue
            if key.startswith(codec.MESSAGE):
                if row["Due"] > now:
                    self._held_back(ORCHESTRATION, codec.from_text(row["Due"]))
                    continue
                if pk in held:
                    continue
                if not mine and row["Due"] > overdue:
                    continue
                rank = (row["Due"], key)
            elif mine:
                rank = ("", key)  # outbox or staged rows: settle first
            else:
                continue
            if pk not in best or rank < best[pk]:
                best[pk] = rank
        ordered = sorted(best, key=lambda pk: best[pk])
        return [codec.untable_key(pk) for pk in ordered[:_SCAN_CANDIDATES]]

    async def _try_lease(
        self,
        instance_id: str,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories,
        runnable: WorkFilter | None,
    ) -> OrchestrationWorkItem | None:
        """Lease the instance if it has due messages and is free; a sentinel that changed
        between the read and the write (a message arrived) is read again."""
        for _ in range(3):
            try:
                return await self._lease_once(instance_id, owner, lease, known_histories, runnable)
            except _Stale:
                continue
        return None

    async def _lease_once(
        self,
        instance_id: str,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories,
        runnable: WorkFilter | None,
    ) -> OrchestrationWorkItem | None:

        part = await self._settled_head(instance_id)
        now = self._now()
        sentinel = part.sentinel
        if sentinel is None:
            await self._drop_orphans(instance_id, part.messages)
            return None
        visible = sorted(
            (m for m in part.messages if codec.from_text(m["Due"]) <= now),
            key=lambda m: m["RowKey"],
        )
        for m in part.messages:
            if codec.from_text(m["Due"]) > now:
                self._held_back(ORCHESTRATION, codec.from_text(m["Due"]))
        if not visible:
            return None
        if self._lease_live(sentinel, now):
            resting = not sentinel["Token"]
            if not resting or not await self._any_terminate(visible):
                return None
        state = await self._state(sentinel)
        if runnable is not None and not runnable.runs_orchestration(
            state.name, state.version, state.task_queue
        ):
            return None
        counts: dict[str, int] = json.loads(sentinel.get("Counts") or "{}")
        counts = {k: v for k, v in counts.items() if any(m["RowKey"] == k for m in part.messages)}
        for m in visible:
            counts[m["RowKey"]] = counts.get(m["RowKey"], 0) + 1
        token = new_lock_token()
        updated = dict(sentinel)
        if sentinel["Token"]:  # a lease that ran out unreleased: taken over
            await self._record_takeover(updated, instance_id, now, owner)
        updated.update(
            Token=token,
            Owner=owner,
            Expires=codec.to_text(now + lease),
            Counts=json.dumps(counts),
        )
        try:
            meta = await self._table("history").update_entity(
                updated,
                mode=UpdateMode.REPLACE,
                etag=part.etag,
                match_condition=MatchConditions.IfNotModified,
            )
            pk = codec.table_key(instance_id)
            self._remember(pk, codec.SENTINEL, meta["etag"], updated)
            self._leased_inbox[pk] = frozenset(m["RowKey"] for m in part.messages)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                raise _Stale from None  # another worker, or a message, came first
            raise
        length = int(sentinel["Length"])
        known = history_is_known(known_histories, instance_id, sentinel["Exec"] or None, length)
        fresh = length == 0  # nothing to read
        history = [] if known or fresh else await self._read_history(instance_id, sentinel)
        messages = []
        for m in visible:
            text = await self._unpack(m["Body"])
            assert text is not None
            messages.append(
                LockedMessage(
                    codec.row_number(m["RowKey"]),
                    codec.message_from_json(text),
                    counts[m["RowKey"]],
                )
            )
        return OrchestrationWorkItem(
            instance_id=instance_id,
            lock_token=token,
            locked_until=now + lease,
            history=history,
            messages=messages,
            state=state,
            history_length=length,
            history_loaded=not known,
        )

    async def _any_terminate(self, rows: list[Row]) -> bool:
        for row in rows:
            text = await self._unpack(row["Body"])
            assert text is not None
            if isinstance(codec.message_from_json(text).event, ExecutionTerminated):
                return True
        return False

    async def renew_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, lease: timedelta
    ) -> None:
        """Extend the lease to now + ``lease`` (a write conditional on the sentinel's ETag)."""
        now = self._now()
        pk = codec.table_key(work_item.instance_id)
        for _ in range(_RETRIES):
            sentinel = await self._get("history", pk, codec.SENTINEL)
            if sentinel is None or sentinel["Token"] != work_item.lock_token:
                raise LeaseLostError(f"lease on instance {work_item.instance_id!r} was lost")
            updated = dict(sentinel)
            updated["Expires"] = codec.to_text(now + lease)
            try:
                meta = await self._table("history").update_entity(
                    updated, mode=UpdateMode.REPLACE, **_if_match(_etag(sentinel))
                )
            except HttpResponseError as exc:
                if exc.status_code in (404, 412):
                    continue  # changed since read: read and check again
                raise
            self._remember(pk, codec.SENTINEL, meta["etag"], updated)
            work_item.locked_until = now + lease
            return
        raise StoreError(f"instance {work_item.instance_id!r}: renewal keeps conflicting")
