"""A store wrapper that fails on purpose, to test what the worker does when its store fails.

:class:`FaultyStore` implements the store protocol by delegation. A :class:`FaultPlan` says
which calls fail (counted per method) and how:

- ``before``: the call raises without reaching the store (a lost connection, a busy
  database): nothing happened;
- ``after``: the call reaches the store, which does the work (a commit commits), and then it
  raises anyway: the ambiguous commit, where the caller cannot tell whether it happened.

Lifecycle calls (open, close, delete_task_hub) never fail: the plan is about the worker's
steady state.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from duratask.backends.base import (
    ActivityWorkItem,
    BacklogEntry,
    CleanEntityStorageResult,
    EntityCommit,
    EntityMessage,
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    EntityWorkItem,
    EpisodeFence,
    ExecutionRecord,
    HistoryMark,
    InstanceQuery,
    LeaseHolder,
    LeaseTakeover,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
    PurgeFilter,
    QueryPage,
    ScheduleRecord,
    StoreDescription,
    TaskHubStore,
    WorkerInfo,
    WorkFilter,
)
from duratask.errors import StoreError
from duratask.history import HistoryEvent
from duratask.state import OrchestrationState, OrchestrationStatus

T = TypeVar("T")

# Exceptions a store, its driver or the network raise when they fail.
_ERRORS: list[Callable[[str], Exception]] = [
    lambda what: StoreError(f"injected fault: {what}"),
    lambda what: TimeoutError(f"injected timeout: {what}"),
    lambda what: ConnectionResetError(f"injected connection reset: {what}"),
]


@dataclass
class FaultPlan:
    """Fail call number ``c`` (1-based, per method) of the methods in ``methods`` when
    ``c % period == offset``; ``mode`` is "before" or "after"."""

    period: int
    offset: int
    mode: str
    methods: frozenset[str]
    calls: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)

    def fails(self, method: str) -> bool:
        if method not in self.methods:
            return False
        self.calls[method] += 1
        failing = self.calls[method] % self.period == self.offset
        if failing:
            self.injected[method] += 1
        return failing

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())


class FaultyStore:
    """A :class:`TaskHubStore` that fails as its :class:`FaultPlan` says."""

    def __init__(self, inner: TaskHubStore, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self._errors = itertools.cycle(_ERRORS)

    async def _call(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        if not self.plan.fails(method):
            return await call()
        error = next(self._errors)(method)
        if self.plan.mode == "after":
            await call()
        raise error

    # -- lifecycle (never failed) ----------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        await self.inner.open(create=create)

    def describe(self) -> StoreDescription:
        return self.inner.describe()

    async def close(self) -> None:
        await self.inner.close()

    async def create_task_hub(self) -> None:
        await self.inner.create_task_hub()

    async def delete_task_hub(self) -> None:
        await self.inner.delete_task_hub()

    # -- orchestration work items ----------------------------------------------------------------
    async def lock_next_orchestration_work_item(
        self,
        owner: str,
        lease: timedelta,
        known_histories: Mapping[str, HistoryMark] | None = None,
        work_filter: WorkFilter | None = None,
    ) -> OrchestrationWorkItem | None:
        return await self._call(
            "lock_next_orchestration_work_item",
            lambda: self.inner.lock_next_orchestration_work_item(
                owner, lease, known_histories, work_filter
            ),
        )

    async def renew_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, lease: timedelta
    ) -> None:
        await self._call(
            "renew_orchestration_work_item",
            lambda: self.inner.renew_orchestration_work_item(work_item, lease),
        )

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        return await self._call(
            "commit_episode",
            lambda: self.inner.commit_episode(fence, commit),
        )

    async def abandon_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, retry_at: datetime | None = None
    ) -> None:
        await self._call(
            "abandon_orchestration_work_item",
            lambda: self.inner.abandon_orchestration_work_item(work_item, retry_at),
        )

    # -- activity work items ---------------------------------------------------------------------
    async def lock_next_activity_work_items(
        self,
        owner: str,
        lease: timedelta,
        max_items: int = 1,
        work_filter: WorkFilter | None = None,
    ) -> list[ActivityWorkItem]:
        return await self._call(
            "lock_next_activity_work_items",
            lambda: self.inner.lock_next_activity_work_items(owner, lease, max_items, work_filter),
        )

    async def record_activity_heartbeat(
        self, work_item: ActivityWorkItem, details: str | None, lease: timedelta
    ) -> None:
        await self._call(
            "record_activity_heartbeat",
            lambda: self.inner.record_activity_heartbeat(work_item, details, lease),
        )

    # -- workers (never failed: bookkeeping, not the worker's steady state) -------------------
    async def heartbeat_worker(self, worker: WorkerInfo) -> None:
        await self.inner.heartbeat_worker(worker)

    async def remove_worker(self, worker_id: str) -> None:
        await self.inner.remove_worker(worker_id)

    async def list_workers(self) -> list[WorkerInfo]:
        return await self.inner.list_workers()

    async def backlog(self) -> list[BacklogEntry]:
        return await self.inner.backlog()

    async def lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        return await self.inner.lease_takeovers(instance_id)

    async def list_executions(self, instance_id: str) -> list[ExecutionRecord]:
        return await self.inner.list_executions(instance_id)

    # -- entities ---------------------------------------------------------------------------
    async def lock_next_entity_work_item(
        self,
        owner: str,
        lease: timedelta,
        max_messages: int = 100,
        work_filter: WorkFilter | None = None,
    ) -> EntityWorkItem | None:
        return await self._call(
            "lock_next_entity_work_item",
            lambda: self.inner.lock_next_entity_work_item(owner, lease, max_messages, work_filter),
        )

    async def renew_entity_work_item(self, work_item: EntityWorkItem, lease: timedelta) -> None:
        await self._call(
            "renew_entity_work_item", lambda: self.inner.renew_entity_work_item(work_item, lease)
        )

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        await self._call(
            "complete_entity_work_item",
            lambda: self.inner.complete_entity_work_item(work_item, commit),
        )

    async def abandon_entity_work_item(
        self, work_item: EntityWorkItem, retry_at: datetime | None = None
    ) -> None:
        await self.inner.abandon_entity_work_item(work_item, retry_at)

    async def send_entity_message(self, message: EntityMessage) -> None:
        await self.inner.send_entity_message(message)

    async def get_entity(self, entity_id: str, include_state: bool = True) -> EntityMetadata | None:
        return await self.inner.get_entity(entity_id, include_state)

    async def query_entities(self, query: EntityQuery) -> EntityQueryPage:
        return await self.inner.query_entities(query)

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        return await self.inner.clean_entity_storage(remove_empty_entities, release_orphaned_locks)

    # Schedules pass through unfaulted: the fault plans aim at instances and activities.
    async def create_schedule(self, record: ScheduleRecord) -> None:
        await self.inner.create_schedule(record)

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        return await self.inner.get_schedule(schedule_id)

    async def list_schedules(self, prefix: str | None = None) -> list[ScheduleRecord]:
        return await self.inner.list_schedules(prefix)

    async def update_schedule(self, record: ScheduleRecord) -> bool:
        return await self.inner.update_schedule(record)

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self.inner.delete_schedule(schedule_id)

    async def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        return await self.inner.due_schedules(now, limit)

    async def next_schedule_due_at(self) -> datetime | None:
        return await self.inner.next_schedule_due_at()

    async def lease_holders(self) -> list[LeaseHolder]:
        return await self.inner.lease_holders()

    async def break_leases(self, owner: str) -> int:
        return await self.inner.break_leases(owner)

    async def renew_activity_work_item(self, work_item: ActivityWorkItem, lease: timedelta) -> None:
        await self._call(
            "renew_activity_work_item",
            lambda: self.inner.renew_activity_work_item(work_item, lease),
        )

    async def complete_activity_work_item(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> None:
        await self._call(
            "complete_activity_work_item",
            lambda: self.inner.complete_activity_work_item(work_item, result),
        )

    async def abandon_activity_work_item(
        self, work_item: ActivityWorkItem, retry_at: datetime | None = None
    ) -> None:
        await self._call(
            "abandon_activity_work_item",
            lambda: self.inner.abandon_activity_work_item(work_item, retry_at),
        )

    # -- client operations -------------------------------------------------------------------------
    async def create_instance(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> None:
        await self._call(
            "create_instance", lambda: self.inner.create_instance(message, replaceable)
        )

    async def send_message(self, message: OrchestrationMessage) -> bool:
        return await self._call("send_message", lambda: self.inner.send_message(message))

    async def get_instance(self, instance_id: str) -> OrchestrationState | None:
        return await self._call("get_instance", lambda: self.inner.get_instance(instance_id))

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        return await self._call("get_history", lambda: self.inner.get_history(instance_id))

    async def query_instances(self, query: InstanceQuery) -> QueryPage:
        return await self._call("query_instances", lambda: self.inner.query_instances(query))

    async def count_instances(self, query: InstanceQuery) -> dict[OrchestrationStatus, int]:
        return await self._call("count_instances", lambda: self.inner.count_instances(query))

    async def purge_instance(self, instance_id: str) -> bool:
        return await self._call("purge_instance", lambda: self.inner.purge_instance(instance_id))

    async def purge_instances(self, purge_filter: PurgeFilter) -> int:
        return await self._call("purge_instances", lambda: self.inner.purge_instances(purge_filter))


# Every method a worker calls in its steady state.
WORKER_METHODS = frozenset(
    {
        "lock_next_orchestration_work_item",
        "renew_orchestration_work_item",
        "commit_episode",
        "abandon_orchestration_work_item",
        "lock_next_activity_work_items",
        "renew_activity_work_item",
        "complete_activity_work_item",
        "abandon_activity_work_item",
        "get_history",
        "get_instance",
        "send_message",
    }
)
