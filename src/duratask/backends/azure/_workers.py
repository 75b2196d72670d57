"""Workers and their leases: presence rows, who holds which lease, breaking a dead
worker's leases, and the backlog by name."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode

from duratask.backends._wakeups import (
    ACTIVITY,
    ENTITY,
    ORCHESTRATION,
)
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._inbox import InboxStore
from duratask.backends.azure._rows import (
    Row,
    _etag,
    _if_match,
    _ignore_missing,
)
from duratask.backends.base import (
    BacklogEntry,
    LeaseHolder,
    WorkerInfo,
)
from duratask.state import DEFAULT_TASK_QUEUE


class WorkerStore(InboxStore):
    """Workers and their leases."""

    async def heartbeat_worker(self, worker: WorkerInfo) -> None:
        """Record (or refresh) a worker in the Workers table."""
        body = {
            "worker_id": worker.worker_id,
            "host": worker.host,
            "pid": worker.pid,
            "started_at": codec.to_text(worker.started_at),
            "heartbeat_at": codec.to_text(worker.heartbeat_at),
            "orchestrations": sorted(([n, v] for n, v in worker.orchestrations), key=str),
            "activities": sorted(worker.activities),
            "task_queues": sorted(worker.task_queues),
            "in_flight": dict(worker.in_flight),
        }
        await self._table("workers").upsert_entity(
            {
                "PartitionKey": "worker",
                "RowKey": codec.table_key(worker.worker_id),
                "Body": json.dumps(body),
            },
            mode=UpdateMode.REPLACE,
        )

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        await _ignore_missing(
            self._table("workers").delete_entity("worker", codec.table_key(worker_id))
        )

    async def list_workers(self) -> list[WorkerInfo]:
        """The workers that reported themselves, most recently heard from first."""
        workers = []
        for row in await self._query("workers", "PartitionKey eq @pk", {"pk": "worker"}):
            data = json.loads(row["Body"])
            workers.append(
                WorkerInfo(
                    worker_id=data["worker_id"],
                    host=data["host"],
                    pid=data["pid"],
                    started_at=codec.from_text(data["started_at"]),
                    heartbeat_at=codec.from_text(data["heartbeat_at"]),
                    orchestrations=frozenset((n, v) for n, v in data["orchestrations"]),
                    activities=frozenset(data["activities"]),
                    task_queues=frozenset(data.get("task_queues", [DEFAULT_TASK_QUEUE])),
                    in_flight={str(k): int(v) for k, v in data["in_flight"].items()},
                )
            )
        return sorted(workers, key=lambda w: w.heartbeat_at, reverse=True)

    async def _leased_rows(self) -> list[tuple[str, Any]]:
        """The rows holding a lease token (instances and activities, then entities), with
        their table."""
        found = []
        for table in ("history", "entities"):
            rows = await self._query(table, "Token ne @empty", {"empty": ""})
            found += [(table, row) for row in rows]
        return found

    async def lease_holders(self) -> list[LeaseHolder]:
        """Who holds live leases on instances, activities and entities, and until when."""
        now = self._now()
        held: dict[str, tuple[int, datetime]] = {}
        for _, row in await self._leased_rows():
            if not self._lease_live(row, now) or not row.get("Owner"):
                continue
            until = codec.from_text(row["Expires"])
            count, latest = held.get(row["Owner"], (0, until))
            held[row["Owner"]] = (count + 1, max(latest, until))
        return [LeaseHolder(owner, n, until) for owner, (n, until) in sorted(held.items())]

    async def break_leases(self, owner: str) -> int:
        """Expire every lease ``owner`` holds."""
        broken = 0
        for table, row in await self._leased_rows():
            if row.get("Owner") != owner:
                continue
            updated = dict(row)
            if table == "history" and row["RowKey"] == codec.SENTINEL:
                instance_id = codec.untable_key(row["PartitionKey"])
                await self._record_takeover(updated, instance_id, self._now(), None)
            updated.update(Token="", Owner="", Expires="")
            try:
                await self._table(table).update_entity(
                    updated, mode=UpdateMode.REPLACE, **_if_match(_etag(row))
                )
            except HttpResponseError as exc:
                if exc.status_code in (404, 412):
                    continue
                raise
            broken += 1
        if broken:
            self._changed([ORCHESTRATION, ACTIVITY, ENTITY])
        return broken

    async def backlog(self) -> list[BacklogEntry]:
        """The work waiting, by kind and name."""
        now = self._now()
        rows = await self._query(
            "history",
            "( RowKey ge @a and RowKey lt @a_end ) or ( RowKey ge @m and RowKey lt @m_end ) "
            "or RowKey eq @s",
            {
                "a": codec.ACTIVITY,
                "a_end": "a.",
                "m": codec.MESSAGE,
                "m_end": "m.",
                "s": codec.SENTINEL,
            },
        )
        sentinels = {r["PartitionKey"]: r for r in rows if r["RowKey"] == codec.SENTINEL}
        counts: dict[tuple[str, str], list[int]] = {}

        def count(kind: str, name: str, row: Row, due_now: bool) -> None:
            live = self._lease_live(row, now)
            slot = 2 if row["Token"] and live else 0
            if slot == 0 and (live or not due_now):
                slot = 1
            counts.setdefault((kind, name), [0, 0, 0])[slot] += 1

        with_messages: dict[str, bool] = {}
        for row in rows:
            key = row["RowKey"]
            if key.startswith(codec.MESSAGE):
                due = codec.from_text(row["Due"]) <= now
                pk = row["PartitionKey"]
                with_messages[pk] = with_messages.get(pk, False) or due
            elif key.startswith(codec.ACTIVITY):
                count("activity", row["Name"], row, codec.from_text(row["Due"]) <= now)
        for pk, due in with_messages.items():
            sentinel = sentinels.get(pk)
            if sentinel is not None:
                count("orchestration", (await self._state(sentinel)).name, sentinel, due)
        return [
            BacklogEntry(kind, name, *numbers)
            for (kind, name), numbers in sorted(
                counts.items(), key=lambda item: (item[0][0] != "orchestration", item[0][1])
            )
        ]
