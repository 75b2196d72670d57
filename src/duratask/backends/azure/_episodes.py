"""Committing an episode: one ETag-fenced transaction on the instance's partition (or a
staged blob when too large), then the outbox delivered (see the store's docstring)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode

from duratask.backends._shared import (
    as_utc_or_none,
    ended_executions,
    new_lock_token,
    normalized_state,
    rest_expiry,
)
from duratask.backends._wakeups import (
    ACTIVITY,
    ORCHESTRATION,
)
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._dequeue import DequeueStore
from duratask.backends.azure._rows import (
    _BATCH,
    _BATCH_BYTES,
    _RETRIES,
    Row,
    _etag,
    _if_match,
    _normalized_message,
    _Partition,
    _size,
    _Stale,
)
from duratask.backends.base import (
    EXECUTIONS_KEPT,
    ActivityWorkItem,
    EpisodeFence,
    ExecutionRecord,
    LeaseHeld,
    LeaseTakeover,
    OrchestrationCommit,
    OrchestrationWorkItem,
)
from duratask.errors import (
    InstanceBusyError,
    LeaseLostError,
    StoreError,
)
from duratask.history import (
    HistoryEvent,
    event_to_json,
)


class EpisodeStore(DequeueStore):
    """Committing an episode."""

    async def lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        """The instance's leases that ran out unreleased or were broken, oldest first."""
        sentinel = await self._get("history", codec.table_key(instance_id), codec.SENTINEL)
        if sentinel is None:
            return []
        return codec.takeovers_from_json(instance_id, await self._unpack(sentinel.get("Takeovers")))

    async def list_executions(self, instance_id: str) -> list[ExecutionRecord]:
        """The records of the instance's earlier executions, oldest first."""
        sentinel = await self._get("history", codec.table_key(instance_id), codec.SENTINEL)
        if sentinel is None:
            return []
        text = await self._unpack(sentinel.get("Executions"))
        return codec.executions_from_json(instance_id, text)

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The history of the instance's current execution (empty if unknown)."""
        part = await self._settled_head(instance_id)
        if part.sentinel is None:
            return []
        return await self._read_history(instance_id, part.sentinel)

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        """Commit one episode in one transaction fenced by the sentinel's ETag, then deliver
        its outbox (see the module docstring).

        The sentinel this store object wrote or read last is remembered with its ETag: when
        the fence holds on it, the episode is committed without reading the partition first
        (any other writer, a delivered message included, changes the ETag, and the
        transaction is then refused and retried after a read)."""
        instance_id = commit.state.instance_id
        pk = codec.table_key(instance_id)
        cached = self._cached_sentinel(pk, fence)
        if cached is not None:
            try:
                return await self._commit(fence, commit, cached, fast=True)
            except _Stale:
                self._rows.pop((pk, codec.SENTINEL), None)
                finished = commit.finished_activity
                if finished is not None:
                    key = codec.row_key(codec.ACTIVITY, finished.work_item_id)
                    self._rows.pop((pk, key), None)
        for _ in range(_RETRIES):
            part = await self._settled_head(instance_id)
            self._check_fence(fence, instance_id, part, self._now())
            try:
                return await self._commit(fence, commit, part, fast=False)
            except _Stale:
                continue  # changed since read (a message arrived): read and check again
        raise StoreError(f"instance {instance_id!r}: its commit keeps conflicting")

    def _cached_sentinel(self, pk: str, fence: EpisodeFence) -> _Partition | None:
        entry = self._rows.get((pk, codec.SENTINEL))
        if entry is None:
            return None
        etag, row, quiet = entry
        if isinstance(fence, LeaseHeld):
            holds = row["Token"] == fence.lock_token and row["Length"] == fence.history_length
        else:
            holds = (
                quiet
                and not row["Token"]
                and not self._lease_live(row, self._now())
                and row["Length"] == fence.history_length
                and row["Exec"] == fence.execution_id
            )
        return _Partition(dict(row), etag) if holds else None

    async def _commit(
        self, fence: EpisodeFence, commit: OrchestrationCommit, part: _Partition, *, fast: bool
    ) -> list[ActivityWorkItem]:
        instance_id = commit.state.instance_id
        pk = codec.table_key(instance_id)
        now = self._now()
        sentinel = part.sentinel
        assert sentinel is not None
        ops: list[tuple[Any, ...]] = []
        finished = commit.finished_activity
        if finished is not None:
            apk = codec.table_key(finished.request.instance_id)
            akey = codec.row_key(codec.ACTIVITY, finished.work_item_id)
            known = self._rows.get((apk, akey)) if fast else None
            if known is not None and known[1]["Token"] == finished.lock_token:
                row, etag = known[1], known[0]
            else:
                found = await self._get("history", apk, akey)
                if found is None or found["Token"] != finished.lock_token:
                    raise LeaseLostError(f"lease on activity {finished.work_item_id} was lost")
                row, etag = dict(found), _etag(found)
            ops.append(("delete", {"PartitionKey": apk, "RowKey": akey}, _if_match(etag)))
        consumed = {codec.row_key(codec.MESSAGE, i) for i in commit.consumed_message_ids}
        # The inbox as last read: at the lease (a commit on the remembered sentinel; any
        # message since changed the ETag, and the transaction is refused), or just now.
        inbox = self._leased_inbox.pop(pk, frozenset())
        present = consumed | inbox if fast else {m["RowKey"] for m in part.messages}
        for key in sorted(consumed & present):
            ops.append(("delete", {"PartitionKey": pk, "RowKey": key}))
        stored = await self._state(sentinel)
        state = normalized_state(commit.state) if commit.changes_instance else stored
        execution = (state.execution_id or "") if commit.changes_instance else sentinel["Exec"]
        hist = uuid.uuid4().hex if commit.reset_history else sentinel["Hist"]
        base = 0 if commit.reset_history else int(sentinel["Length"])
        for offset, event in enumerate(commit.new_events):
            ops.append(
                (
                    "upsert",
                    {
                        "PartitionKey": pk,
                        "RowKey": codec.history_key(hist, base + offset),
                        "Body": await self._pack(event_to_json(event)),
                    },
                    {"mode": UpdateMode.REPLACE},
                )
            )
        leased: list[ActivityWorkItem] = []
        eager = commit.eager_activities
        for request in commit.activities:
            activity_id = self._new_id()
            row = {
                "PartitionKey": pk,
                "RowKey": codec.row_key(codec.ACTIVITY, activity_id),
                "Body": await self._pack(codec.request_to_json(request)),
                "Name": request.name,
                "Queue": request.task_queue,
                "Due": codec.to_text(now),
                "Token": "",
                "Owner": "",
                "Expires": "",
                "Count": 0,
            }
            if eager is not None and len(leased) < eager.max_items:
                token = new_lock_token()
                row.update(
                    Token=token,
                    Owner=eager.owner,
                    Expires=codec.to_text(now + eager.duration),
                    Count=1,
                )
                leased.append(
                    ActivityWorkItem(activity_id, request, token, now + eager.duration, 1)
                )
            ops.append(("upsert", row, {"mode": UpdateMode.REPLACE}))
        outbound = False
        for message in commit.messages:
            message = _normalized_message(message)
            if message.instance_id == instance_id:
                change = message.status_change
                if change is not None and state.runtime_status is change.when:
                    state = dataclasses.replace(
                        state, runtime_status=change.becomes, last_updated_at=now
                    )
                row = await self._message_row(pk, self._new_id(), message, now)
                if message.visible_at is not None and message.visible_at > now:
                    self._held_back(ORCHESTRATION, message.visible_at)
            else:
                outbound = True
                row = {
                    "PartitionKey": pk,
                    "RowKey": codec.row_key(codec.OUTBOX, self._new_id()),
                    "Body": await self._pack(codec.message_to_json(message)),
                }
            ops.append(("upsert", row, {"mode": UpdateMode.REPLACE}))
        for entity_message in commit.entity_messages:
            outbound = True
            row = await self._entity_outbox_row(pk, entity_message)
            ops.append(("upsert", row, {"mode": UpdateMode.REPLACE}))
        counts = {
            k: v for k, v in json.loads(sentinel.get("Counts") or "{}").items() if k not in consumed
        }
        updated = dict(sentinel)
        if (commit.reset_history and int(sentinel["Length"])) or commit.continued_executions:
            kept = codec.executions_from_json(
                instance_id, await self._unpack(sentinel.get("Executions"))
            )
            last = kept[-1] if kept else None
            previous = (last.generation, last.ended_at) if last is not None else None
            dropped = stored if commit.reset_history and int(sentinel["Length"]) else None
            kept.extend(ended_executions(dropped, commit, previous, now))
            updated["Executions"] = await self._pack(
                codec.executions_to_json(kept[-EXECUTIONS_KEPT:])
            )
        updated.update(
            State=await self._pack(codec.state_to_json(state)),
            Exec=execution,
            Hist=hist,
            Length=base + len(commit.new_events),
            Token="",
            Owner="",
            Expires="",
            Counts=json.dumps(counts),
        )
        results: Sequence[Any] = ()
        try:
            if len(ops) < _BATCH and _size(ops) < _BATCH_BYTES:
                results = await self._table("history").submit_transaction(
                    [("update", updated, _if_match(part.etag)), *ops]
                )
            else:
                await self._commit_staged(updated, part.etag, ops)
        except HttpResponseError as exc:
            if exc.status_code not in (404, 409, 412):
                raise
            raise _Stale from None
        left = present - consumed
        self._rows.pop((pk, codec.SENTINEL), None)
        if results:
            quiet = not left and not any(
                op[0] == "upsert" and op[1]["RowKey"].startswith(codec.MESSAGE) for op in ops
            )
            self._remember(pk, codec.SENTINEL, results[0]["etag"], updated, quiet)
            for op, result in zip(ops, results[1:], strict=True):
                if op[0] == "upsert" and op[1]["RowKey"].startswith(codec.ACTIVITY):
                    if op[1]["Token"]:
                        self._remember(pk, op[1]["RowKey"], result["etag"], op[1])
        if finished is not None:
            self._rows.pop(
                (codec.table_key(finished.request.instance_id), ops[0][1]["RowKey"]), None
            )
        if updated.get("Staged"):
            await self._settled_head(instance_id)
        elif outbound:
            await self._deliver_outbox(
                instance_id, [op[1] for op in ops if op[1]["RowKey"].startswith(codec.OUTBOX)]
            )
        if state.runtime_status is not stored.runtime_status:
            # Queries re-read the sentinels of unfinished instances, but other readers of
            # the layout see the copy: it is rewritten whenever the status changes
            # (started, suspended, resumed, finished), not at every episode.
            await self._copy_instance(state)
        kinds = [ACTIVITY] if commit.activities else []
        self._changed([*kinds, ORCHESTRATION] if commit.messages else kinds, [instance_id])
        leased_ids = {w.work_item_id for w in leased}
        for op in ops:
            key = op[1]["RowKey"]
            new = op[0] == "upsert" and key.startswith(codec.ACTIVITY)
            if new and codec.row_number(key) not in leased_ids:
                body = {"i": instance_id, "a": codec.row_number(key)}
                await self._hint(self._workitems_name, json.dumps(body))
        if left or any(m.instance_id == instance_id for m in commit.messages):
            await self._hint(self._control_queue(instance_id), json.dumps({"i": instance_id}))
        return leased

    def _check_fence(
        self, fence: EpisodeFence, instance_id: str, part: _Partition, now: datetime
    ) -> None:
        sentinel = part.sentinel
        if isinstance(fence, LeaseHeld):
            if sentinel is None or sentinel["Token"] != fence.lock_token:
                raise LeaseLostError(f"lease on instance {instance_id!r} was lost")
            if int(sentinel["Length"]) != fence.history_length:
                raise LeaseLostError(
                    f"history of instance {instance_id!r} changed under the work item"
                )
            return
        if (
            sentinel is None
            or self._lease_live(sentinel, now)
            or int(sentinel["Length"]) != fence.history_length
            or sentinel["Exec"] != fence.execution_id
            or any(codec.from_text(m["Due"]) <= now for m in part.messages)
        ):
            raise InstanceBusyError(f"instance {instance_id!r} is busy or changed")

    async def _commit_staged(self, sentinel: Row, etag: str, ops: list[tuple[Any, ...]]) -> None:
        """Commit an episode too large for one transaction: stage its rows in a blob, then
        write the sentinel naming it (the commit point); the rows are applied afterwards."""
        staged = [{"op": op[0], "row": {k: v for k, v in op[1].items()}} for op in ops]
        name = f"staged/{uuid.uuid4().hex}"
        await self._c().container.upload_blob(
            name, codec.gzip_text(json.dumps(staged)), overwrite=True
        )
        sentinel["Staged"] = name

        await self._table("history").update_entity(
            sentinel,
            mode=UpdateMode.REPLACE,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )

    async def abandon_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at`` the instance rests until then."""
        retry_at = as_utc_or_none(retry_at)
        pk = codec.table_key(work_item.instance_id)
        self._rows.pop((pk, codec.SENTINEL), None)
        for _ in range(_RETRIES):
            sentinel = await self._get("history", pk, codec.SENTINEL)
            if sentinel is None or sentinel["Token"] != work_item.lock_token:
                return
            updated = dict(sentinel)
            updated.update(
                Token="",
                Owner="",
                Expires="" if retry_at is None else codec.to_text(rest_expiry(retry_at)),
            )
            try:
                await self._table("history").update_entity(
                    updated, mode=UpdateMode.REPLACE, **_if_match(_etag(sentinel))
                )
            except HttpResponseError as exc:
                if exc.status_code not in (404, 412):
                    raise
                continue
            break
        else:
            return
        if retry_at is None:
            self._changed([ORCHESTRATION])
        delay = 0.0 if retry_at is None else (retry_at - self._now()).total_seconds()
        if retry_at is not None:
            self._held_back(ORCHESTRATION, retry_at)
        body = json.dumps({"i": work_item.instance_id})
        await self._hint(self._control_queue(work_item.instance_id), body, delay)
