"""The leases and worker rows of the work-item half of the seam, written once for the two SQL
stores over their own statements (:class:`LeaseStatements`) and dialect.

How a store leases the next work item differs (one function call on PostgreSQL; a cheap
read, then a write on SQLite), so that part stays a hook: this module turns the seam's
call into the store's (``_lease_next_instance``, ``_lease_activities``), and does the
rest, renewing leases, heartbeats and the workers' rows, in one way.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from datetime import datetime, timedelta
from typing import Protocol

from duratask.backends._shared import worker_from_row, worker_registrations
from duratask.backends._sql import SqlRows
from duratask.backends.base import (
    ActivityWorkItem,
    KnownHistories,
    LeaseHolder,
    OrchestrationWorkItem,
    WorkerInfo,
    WorkFilter,
)
from duratask.errors import LeaseLostError


class LeaseStatements(Protocol):
    """The statements a SQL store's query module defines for :class:`SqlLeases`."""

    RENEW_INSTANCE_LEASE: str  # instance_id, token, expires_at
    RENEW_ACTIVITY_LEASE: str  # id, token, expires_at
    RECORD_HEARTBEAT: str  # id, token, details, now, expires_at
    UPSERT_WORKER: str  # the columns of worker_params
    DELETE_WORKER: str  # one positional parameter: the worker id
    SELECT_WORKERS: str
    LEASE_HOLDERS: str  # now; rows of owner, items, expires_at


class SqlLeases(SqlRows):
    """Leasing, renewing and the workers' rows, for a store over :class:`LeaseStatements`."""

    _statements: LeaseStatements

    async def lock_next_orchestration_work_item(
        self,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories = None,
        work_filter: WorkFilter | None = None,
    ) -> OrchestrationWorkItem | None:
        """Lease the free instance whose oldest visible message has waited longest."""
        keys = work_filter.orchestration_keys() if work_filter is not None else None
        queues = work_filter.queue_list() if work_filter is not None else None
        return await self._lease_next_instance(owner, lease, known_histories, keys, queues)

    @abstractmethod
    async def _lease_next_instance(
        self,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories,
        keys: list[str] | None,
        queues: list[str] | None,
    ) -> OrchestrationWorkItem | None:
        """Lease the next instance whose orchestration is one of ``keys``, on one of the task
        queues ``queues`` (None: any)."""

    async def renew_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, lease: timedelta
    ) -> None:
        """Extend the lease to now + ``lease``."""
        params = {"instance_id": work_item.instance_id, "token": work_item.lock_token}
        renewed = await self._extend_lease(self._statements.RENEW_INSTANCE_LEASE, params, lease)
        if renewed is None:
            raise LeaseLostError(f"lease on instance {work_item.instance_id!r} was lost")
        work_item.locked_until = renewed

    async def lock_next_activity_work_items(
        self,
        owner: str,
        lease: timedelta,
        max_items: int = 1,
        work_filter: WorkFilter | None = None,
    ) -> list[ActivityWorkItem]:
        """Lease up to ``max_items`` of the oldest visible activities (the items leased
        together share a lock token)."""
        names = work_filter.activities if work_filter is not None else None
        queues = work_filter.queue_list() if work_filter is not None else None
        return await self._lease_activities(
            owner, lease, max_items, sorted(names) if names is not None else None, queues
        )

    @abstractmethod
    async def _lease_activities(
        self,
        owner: str,
        lease: timedelta,
        max_items: int,
        names: list[str] | None,
        queues: list[str] | None,
    ) -> list[ActivityWorkItem]:
        """Lease up to ``max_items`` activities named one of ``names``, on one of the task
        queues ``queues`` (None: any)."""

    async def renew_activity_work_item(self, work_item: ActivityWorkItem, lease: timedelta) -> None:
        """Extend the lease to now + ``lease``."""
        params = {"id": work_item.work_item_id, "token": work_item.lock_token}
        renewed = await self._extend_lease(self._statements.RENEW_ACTIVITY_LEASE, params, lease)
        self._extended(work_item, renewed)

    async def record_activity_heartbeat(
        self, work_item: ActivityWorkItem, details: str | None, lease: timedelta
    ) -> None:
        """Keep the details with the activity and extend its lease."""
        params = {"id": work_item.work_item_id, "token": work_item.lock_token, "details": details}
        statement = self._statements.RECORD_HEARTBEAT
        self._extended(work_item, await self._extend_lease(statement, params, lease, durable=True))

    @staticmethod
    def _extended(work_item: ActivityWorkItem, locked_until: datetime | None) -> None:
        if locked_until is None:
            raise LeaseLostError(f"lease on activity {work_item.work_item_id} was lost")
        work_item.locked_until = locked_until

    # -- workers and their leases -----------------------------------------------------------
    async def heartbeat_worker(self, worker: WorkerInfo) -> None:
        """Record (or refresh) a worker."""
        to_time = self._dialect.to_time
        params = {
            "worker_id": worker.worker_id,
            "host": worker.host,
            "pid": worker.pid,
            "started_at": to_time(worker.started_at),
            "heartbeat_at": to_time(worker.heartbeat_at),
            "registrations": worker_registrations(worker),
            "status": json.dumps({"in_flight": dict(worker.in_flight)}),
        }
        await self._write_rows(self._statements.UPSERT_WORKER, params, durable=False)

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        await self._write_rows(self._statements.DELETE_WORKER, (worker_id,), durable=False)

    async def list_workers(self) -> list[WorkerInfo]:
        """The workers, most recently heard from first."""
        rows = await self._read_rows(self._statements.SELECT_WORKERS, ())
        return [worker_from_row(row, self._dialect.from_time) for row in rows]

    async def lease_holders(self) -> list[LeaseHolder]:
        """Who holds live leases, and until when."""
        rows = await self._read_rows(self._statements.LEASE_HOLDERS, {"now": self._now()})
        from_time = self._dialect.from_time
        return [
            LeaseHolder(row["owner"], row["items"], from_time(row["expires_at"]))
            for row in rows
            if row["owner"] is not None
        ]
