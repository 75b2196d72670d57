"""An in-process task hub: everything in Python objects, nothing durable.

Meant for tests and demos. One process-global store per name (``memory://NAME``) lets a
worker and a client of the same process share a hub. All state sits behind one
``threading.Lock`` that is never held across an ``await``, so the store can be called from
several threads, each with its own event loop.
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from duratask.backends._paging import page_in_memory
from duratask.backends._shared import (
    LeasedCreates,
    StartLease,
    as_utc,
    as_utc_or_none,
    check_page_size,
    ended_executions,
    history_is_known,
    instance_filter,
    new_lock_token,
    normalized_state,
    orphaned_lock,
    pending_state,
    rest_expiry,
    started_event,
    utc_now,
    work_kinds,
)
from duratask.backends._wakeups import (
    ACTIVITY,
    ENTITY,
    ORCHESTRATION,
    SCHEDULE,
    InstanceWatch,
    WakeUps,
)
from duratask.backends.base import (
    ENTITY_RECENT_REQUESTS,
    EXECUTIONS_KEPT,
    ActivityRequest,
    ActivityWorkItem,
    BacklogEntry,
    CleanEntityStorageResult,
    EntityCommit,
    EntityMessage,
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    EntityRecord,
    EntityWorkItem,
    EpisodeFence,
    ExecutionRecord,
    HistoryMark,
    InstanceQuery,
    KnownHistories,
    LeaseHeld,
    LeaseHolder,
    LeaseTakeover,
    LockedEntityMessage,
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
    PurgeFilter,
    QueryPage,
    ScheduleRecord,
    StoreDescription,
    WorkerInfo,
    WorkFilter,
    decode_entity_token,
    encode_entity_token,
    split_entity_id,
)
from duratask.errors import (
    InstanceBusyError,
    LeaseLostError,
    OrchestrationAlreadyExistsError,
    ScheduleAlreadyExistsError,
)
from duratask.history import (
    ExecutionStarted,
    ExecutionTerminated,
    HistoryEvent,
)
from duratask.state import OrchestrationState, OrchestrationStatus


@dataclass(slots=True)
class _Message:
    message_id: int
    message: OrchestrationMessage
    enqueued_at: datetime
    dequeue_count: int = 0

    def visible(self, now: datetime) -> bool:
        return self.message.visible_at is None or self.message.visible_at <= now

    def due(self) -> datetime:
        return self.message.visible_at or self.enqueued_at


@dataclass(slots=True)
class _Lease:
    token: str | None = None
    owner: str | None = None
    expires_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Held, or resting (no token: abandoned until ``expires_at``)."""
        return self.expires_at is not None and self.expires_at >= now

    def take(self, owner: str, expires_at: datetime) -> str:
        self.token, self.owner, self.expires_at = new_lock_token(), owner, expires_at
        return self.token

    def clear(self) -> None:
        self.token = self.owner = self.expires_at = None


@dataclass(slots=True)
class _Instance:
    state: OrchestrationState
    history: list[HistoryEvent] = field(default_factory=list)
    messages: dict[int, _Message] = field(default_factory=dict)
    lease: _Lease = field(default_factory=_Lease)
    takeovers: list[LeaseTakeover] = field(default_factory=list)
    executions: list[ExecutionRecord] = field(default_factory=list)

    def record_ended_executions(self, commit: OrchestrationCommit, now: datetime) -> None:
        """Keep the records of the executions ``commit`` ends: the stored one its reset
        drops (if any), then those it ran back to back."""
        last = self.executions[-1] if self.executions else None
        previous = (last.generation, last.ended_at) if last is not None else None
        stored = self.state if commit.reset_history and self.history else None
        self.executions.extend(ended_executions(stored, commit, previous, now))
        del self.executions[:-EXECUTIONS_KEPT]

    def record_takeover(self, now: datetime, taken_by: str | None) -> None:
        """Keep the lease on the instance as taken over (it ran out unreleased, or was
        broken) before it is replaced or cleared."""
        self.takeovers.append(
            LeaseTakeover(
                instance_id=self.state.instance_id,
                execution_id=self.state.execution_id,
                previous_owner=self.lease.owner,
                lease_expired_at=min(self.lease.expires_at or now, now),
                taken_at=now,
                taken_by=taken_by,
            )
        )


@dataclass(slots=True)
class _Activity:
    work_item_id: int
    request: ActivityRequest
    visible_at: datetime
    lease: _Lease = field(default_factory=_Lease)
    dequeue_count: int = 0


@dataclass(slots=True)
class _EntityMessage:
    message_id: int
    message: EntityMessage
    enqueued_at: datetime
    dequeue_count: int = 0

    def due(self) -> datetime:
        return self.message.visible_at or self.enqueued_at


@dataclass(slots=True)
class _Entity:
    entity_id: str
    last_modified_at: datetime
    record: EntityRecord = field(default_factory=EntityRecord)
    messages: dict[int, _EntityMessage] = field(default_factory=dict)
    lease: _Lease = field(default_factory=_Lease)

    def deliverable(self, now: datetime) -> list[_EntityMessage]:
        """Its visible messages in order (only its lock holder's while it is locked)."""
        holder = self.record.locked_by
        return [
            m
            for m in self.messages.values()
            if m.due() <= now and (holder is None or m.message.source == holder)
        ]

    def shown(self) -> bool:
        return self.record.state is not None or self.record.locked_by is not None


@dataclass(frozen=True, slots=True)
class WorkOutlook:
    """What a memory hub holds at one instant, as a virtual-clock test hub needs to see it.

    ``busy`` names what can run now or is running (instances with due messages or a held
    lease, activities not yet completed). When it is empty, nothing happens until the clock
    reaches ``next_due_at`` (a timer, a retry back-off, a delayed start) or a client acts.
    """

    busy: tuple[str, ...]
    next_due_at: datetime | None


class MemoryOrchestrationService(LeasedCreates):
    """A task hub held in memory. ``named(name)`` gives the process-wide hub of that name."""

    wakes_all_processes = True  # a memory hub lives in one process
    _registry: ClassVar[dict[str, MemoryOrchestrationService]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, clock: Callable[[], datetime] | None = None, name: str = "") -> None:
        self._name = name
        self._clock = clock or utc_now
        self._lock = threading.Lock()
        self._instances: dict[str, _Instance] = {}
        # Every stored message as (due, message_id, instance_id), soonest first. Entries of
        # consumed or deferred messages go stale and are dropped when they reach the top.
        self._due: list[tuple[datetime, int, str]] = []
        self._activities: dict[int, _Activity] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._entities: dict[str, _Entity] = {}
        self._schedules: dict[str, ScheduleRecord] = {}
        self._next_message_id = 1
        self._next_activity_id = 1
        self._wakeups = WakeUps()

    @classmethod
    def named(cls, name: str) -> MemoryOrchestrationService:
        """The process-global store called ``name``, created on first use."""
        with cls._registry_lock:
            store = cls._registry.get(name)
            if store is None:
                store = cls._registry[name] = cls(name=name)
            return store

    def _now(self) -> datetime:
        return as_utc(self._clock())

    # -- push wake-ups (SupportsWakeUps) ------------------------------------------------------
    async def wait_for_notification(self, timeout: float, *, kind: str | None = None) -> bool:
        """Wait up to ``timeout`` s for a sign that work of ``kind`` may be available."""
        return await self._wakeups.wait_for_work(timeout, kind)

    def watch_instance(self, instance_id: str) -> InstanceWatch:
        """Interest in one instance's row changing."""
        return self._wakeups.watch(instance_id)

    # -- virtual time (read by duratask.testing) ----------------------------------------------
    def work_outlook(self) -> WorkOutlook:
        """What can run now, and when held-back work next falls due (see :class:`WorkOutlook`)."""
        now = self._now()
        busy: list[str] = []
        due: list[datetime] = []
        with self._lock:
            for instance in self._instances.values():
                held_back = [m.due() for m in instance.messages.values() if not m.visible(now)]
                lease = instance.lease
                resting = lease.token is None and lease.live(now)
                if resting and not any(
                    _ends_rest(lease, m) for m in instance.messages.values() if m.visible(now)
                ):
                    if lease.expires_at is not None:  # nothing runs before the rest ends
                        due.append(lease.expires_at + timedelta(microseconds=1))
                elif lease.token is not None or len(held_back) < len(instance.messages):
                    busy.append(f"orchestration {instance.state.instance_id!r}")
                due.extend(held_back)
            for activity in self._activities.values():
                if activity.visible_at <= now:
                    request = activity.request
                    busy.append(f"activity {request.name!r} of {request.instance_id!r}")
                else:
                    due.append(activity.visible_at)
            for entity in self._entities.values():
                if entity.lease.token is not None or entity.deliverable(now):
                    busy.append(f"entity {entity.entity_id!r}")
                elif entity.lease.live(now) and entity.lease.expires_at is not None:
                    due.append(entity.lease.expires_at + timedelta(microseconds=1))
                due.extend(m.due() for m in entity.messages.values() if m.due() > now)
            for schedule in self._schedules.values():
                if schedule.next_due_at is None:
                    continue
                if schedule.claimed_by is not None or schedule.next_due_at <= now:
                    busy.append(f"schedule {schedule.schedule_id!r}")
                else:
                    due.append(schedule.next_due_at)
        return WorkOutlook(tuple(busy), min(due, default=None))

    def clock_moved(self) -> None:
        """Wake every waiting worker: the clock jumped, so held-back work may be due now."""
        self._wakeups.work((ORCHESTRATION, ACTIVITY, ENTITY))
        self._wakeups.work((ORCHESTRATION, ACTIVITY, SCHEDULE))

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        """Nothing to connect to (an in-memory hub always exists)."""

    async def create_task_hub(self) -> None:
        """Nothing to create."""

    def describe(self) -> StoreDescription:
        """A named hub of this process, or an anonymous one (this object)."""
        if self._name:
            where = f"Memory store {self._name!r}"
            return StoreDescription("memory", where, ("memory", self._name))
        return StoreDescription("memory", "Memory store", ("memory", f"#{id(self)}"))

    async def close(self) -> None:
        """Keeps the data: other users of a named hub may still be working with it."""

    async def delete_task_hub(self) -> None:
        """Forget every instance, message and activity."""
        with self._lock:
            self._instances.clear()
            self._due.clear()
            self._activities.clear()
            self._entities.clear()
            self._schedules.clear()

    # -- orchestration work items -------------------------------------------------------
    async def lock_next_orchestration_work_item(
        self,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories = None,
        work_filter: WorkFilter | None = None,
    ) -> OrchestrationWorkItem | None:
        """Lease the instance whose oldest visible message has waited longest."""
        now = self._now()
        with self._lock:
            chosen = self._next_free_instance(now, work_filter)
            if chosen is None:
                return None
            return self._lease(chosen, owner, lease, now, known_histories)

    def _lease(
        self,
        chosen: _Instance,
        owner: str,
        lease: timedelta,
        now: datetime,
        known_histories: Mapping[str, HistoryMark] | None,
    ) -> OrchestrationWorkItem:
        if chosen.lease.token is not None:  # a lease that ran out, never released
            chosen.record_takeover(now, owner)
        token = chosen.lease.take(owner, now + lease)
        locked = []
        for m in chosen.messages.values():  # dict order is message_id order
            if m.visible(now):
                m.dequeue_count += 1
                locked.append(LockedMessage(m.message_id, m.message, m.dequeue_count))
        length = len(chosen.history)
        known = history_is_known(
            known_histories, chosen.state.instance_id, chosen.state.execution_id, length
        )
        return OrchestrationWorkItem(
            instance_id=chosen.state.instance_id,
            lock_token=token,
            locked_until=now + lease,
            history=[] if known else list(chosen.history),
            messages=locked,
            state=chosen.state,
            history_length=length,
            history_loaded=not known,
        )

    async def renew_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, lease: timedelta
    ) -> None:
        """Extend the lease to now + ``lease``."""
        now = self._now()
        with self._lock:
            instance = self._instances.get(work_item.instance_id)
            if instance is None or instance.lease.token != work_item.lock_token:
                raise LeaseLostError(f"lease on instance {work_item.instance_id!r} was lost")
            instance.lease.expires_at = now + lease
        work_item.locked_until = now + lease

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        """Commit one episode atomically while ``fence`` holds (releasing a held lease)."""
        instance_id = commit.state.instance_id
        now = self._now()
        state = normalized_state(commit.state)
        outbound = [_normalized_message(m) for m in commit.messages]
        with self._lock:
            instance = self._fenced_instance(instance_id, fence, now)
            finished = commit.finished_activity
            if finished is not None:
                self._held_activity(finished)
                del self._activities[finished.work_item_id]
            for message_id in commit.consumed_message_ids:
                instance.messages.pop(message_id, None)
            leased = self._apply_episode(instance, commit, state, outbound, now)
            for entity_message in commit.entity_messages:
                self._enqueue_entity(entity_message, now)
        self._wakeups.work(work_kinds(commit))
        self._wakeups.instances_changed([instance_id])
        return leased

    def _fenced_instance(self, instance_id: str, fence: EpisodeFence, now: datetime) -> _Instance:
        """The instance, if ``fence`` holds (with the lock held); else the fence's error."""
        instance = self._instances.get(instance_id)
        if isinstance(fence, LeaseHeld):
            if instance is None or instance.lease.token != fence.lock_token:
                raise LeaseLostError(f"lease on instance {instance_id!r} was lost")
            if len(instance.history) != fence.history_length:
                raise LeaseLostError(
                    f"history of instance {instance_id!r} changed under the work item"
                )
            return instance
        if (
            instance is None
            or instance.lease.live(now)
            or len(instance.history) != fence.history_length
            or instance.state.execution_id != fence.execution_id
            or any(stored.due() <= now for stored in instance.messages.values())
        ):
            raise InstanceBusyError(f"instance {instance_id!r} is busy or changed")
        return instance

    def _apply_episode(
        self,
        instance: _Instance,
        commit: OrchestrationCommit,
        state: OrchestrationState,
        outbound: list[OrchestrationMessage],
        now: datetime,
    ) -> list[ActivityWorkItem]:
        """Record an episode and release the instance (with the lock held; ``state`` and
        ``outbound`` already normalised); returns the activities leased to the committer."""
        if (commit.reset_history and instance.history) or commit.continued_executions:
            instance.record_ended_executions(commit, now)
        if commit.reset_history:
            instance.history.clear()
        instance.history.extend(commit.new_events)
        eager = commit.eager_activities
        leased: list[ActivityWorkItem] = []
        for request in commit.activities:
            activity = _Activity(self._next_activity_id, request, visible_at=now)
            self._activities[self._next_activity_id] = activity
            self._next_activity_id += 1
            if eager is not None and len(leased) < eager.max_items:
                token = activity.lease.take(eager.owner, now + eager.duration)
                activity.dequeue_count = 1
                leased.append(
                    ActivityWorkItem(
                        work_item_id=activity.work_item_id,
                        request=request,
                        lock_token=token,
                        locked_until=now + eager.duration,
                        dequeue_count=1,
                    )
                )
        for message in outbound:
            self._enqueue(message, now)
        if commit.changes_instance:
            instance.state = state
        instance.lease.clear()
        return leased

    async def abandon_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at``, the instance rests until then (no message
        of it is delivered before those that were abandoned)."""
        retry_at = as_utc_or_none(retry_at)
        with self._lock:
            instance = self._instances.get(work_item.instance_id)
            if instance is None or instance.lease.token != work_item.lock_token:
                return
            instance.lease.clear()
            if retry_at is not None:
                instance.lease.expires_at = rest_expiry(retry_at)
                return
        self._wakeups.work([ORCHESTRATION])

    def _next_free_instance(self, now: datetime, wanted: WorkFilter | None) -> _Instance | None:
        """The unleased instance whose oldest visible message has waited longest (of what
        ``wanted`` names, unless that is None)."""
        runnable = wanted.orchestrations if wanted is not None else None
        leased: list[tuple[datetime, int, str]] = []
        chosen = None
        while self._due:
            due, message_id, instance_id = self._due[0]
            instance = self._instances.get(instance_id)
            stored = instance.messages.get(message_id) if instance is not None else None
            if instance is None or stored is None or stored.due() != due:
                heapq.heappop(self._due)  # consumed, purged or deferred since
                continue
            if due > now:
                break
            if (
                (instance.lease.live(now) and not _ends_rest(instance.lease, stored))
                or (
                    runnable is not None
                    and (instance.state.name, instance.state.version) not in runnable
                )
                or (wanted is not None and not wanted.serves_queue(instance.state.task_queue))
            ):
                leased.append(heapq.heappop(self._due))
                continue
            chosen = instance
            break
        for entry in leased:
            heapq.heappush(self._due, entry)
        return chosen

    # -- activity work items --------------------------------------------------------------
    async def lock_next_activity_work_items(
        self,
        owner: str,
        lease: timedelta,
        max_items: int = 1,
        work_filter: WorkFilter | None = None,
    ) -> list[ActivityWorkItem]:
        """Lease up to ``max_items`` of the oldest visible activities."""
        now = self._now()
        runnable = work_filter.activities if work_filter is not None else None
        leased: list[ActivityWorkItem] = []
        with self._lock:
            for activity in self._activities.values():
                if len(leased) >= max_items:
                    break
                if runnable is not None and activity.request.name not in runnable:
                    continue
                if work_filter is not None and not work_filter.serves_queue(
                    activity.request.task_queue
                ):
                    continue
                if activity.visible_at <= now and not activity.lease.live(now):
                    if activity.dequeue_count > 0:  # delivered before, unfinished: alone
                        if leased:
                            break
                        max_items = 1
                    token = activity.lease.take(owner, now + lease)
                    activity.dequeue_count += 1
                    leased.append(
                        ActivityWorkItem(
                            work_item_id=activity.work_item_id,
                            request=activity.request,
                            lock_token=token,
                            locked_until=now + lease,
                            dequeue_count=activity.dequeue_count,
                        )
                    )
        return leased

    async def renew_activity_work_item(self, work_item: ActivityWorkItem, lease: timedelta) -> None:
        """Extend the lease to now + ``lease``."""
        now = self._now()
        with self._lock:
            self._held_activity(work_item).lease.expires_at = now + lease
        work_item.locked_until = now + lease

    async def complete_activity_work_item(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> None:
        """Delete the activity and enqueue its result, atomically."""
        now = self._now()
        result = _normalized_message(result)
        with self._lock:
            self._finish_activity(work_item, result, now)
        self._wakeups.work([ORCHESTRATION])

    def _finish_activity(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage, now: datetime
    ) -> None:
        """Delete the held activity and enqueue its result (with the lock held)."""
        self._held_activity(work_item)
        del self._activities[work_item.work_item_id]
        self._enqueue(result, now)

    async def abandon_activity_work_item(
        self, work_item: ActivityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; the activity is visible again at ``retry_at`` (now if None)."""
        visible_at = as_utc(retry_at) if retry_at is not None else self._now()
        with self._lock:
            activity = self._activities.get(work_item.work_item_id)
            if activity is None or activity.lease.token != work_item.lock_token:
                return
            activity.lease.clear()
            activity.visible_at = visible_at
            activity.dequeue_count = max(activity.dequeue_count - 1, 0)  # handed back unrun
        self._wakeups.work([ACTIVITY])

    async def record_activity_heartbeat(
        self, work_item: ActivityWorkItem, details: str | None, lease: timedelta
    ) -> None:
        """Keep the details with the activity and extend its lease."""
        now = self._now()
        with self._lock:
            activity = self._held_activity(work_item)
            activity.request = dataclasses.replace(activity.request, heartbeat_details=details)
            activity.lease.expires_at = now + lease
        work_item.locked_until = now + lease

    # -- entity work items --------------------------------------------------------------------
    async def lock_next_entity_work_item(
        self,
        owner: str,
        lease: timedelta,
        max_messages: int = 100,
        work_filter: WorkFilter | None = None,
    ) -> EntityWorkItem | None:
        """Lease the free entity whose oldest deliverable message has waited longest."""
        now = self._now()
        names = work_filter.entities if work_filter is not None else None
        with self._lock:
            best: tuple[tuple[datetime, int], _Entity, list[_EntityMessage]] | None = None
            for entity in self._entities.values():
                if entity.lease.live(now):
                    continue
                if names is not None and split_entity_id(entity.entity_id)[0] not in names:
                    continue
                ready = entity.deliverable(now)
                if ready:
                    key = (ready[0].due(), ready[0].message_id)
                    if best is None or key < best[0]:
                        best = (key, entity, ready)
            if best is None:
                return None
            _, entity, ready = best
            token = entity.lease.take(owner, now + lease)
            locked = []
            for m in ready[:max_messages]:
                m.dequeue_count += 1
                locked.append(LockedEntityMessage(m.message_id, m.message, m.dequeue_count))
            return EntityWorkItem(entity.entity_id, token, now + lease, entity.record, locked)

    async def renew_entity_work_item(self, work_item: EntityWorkItem, lease: timedelta) -> None:
        """Extend the lease to now + ``lease``."""
        now = self._now()
        with self._lock:
            self._held_entity(work_item).lease.expires_at = now + lease
        work_item.locked_until = now + lease

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        """Write the batch and release the lease, atomically."""
        now = self._now()
        outbound = [_normalized_message(m) for m in commit.messages]
        with self._lock:
            entity = self._held_entity(work_item)
            for message_id in commit.consumed_message_ids:
                entity.messages.pop(message_id, None)
            record = commit.record
            entity.record = dataclasses.replace(
                record, recent_requests=record.recent_requests[-ENTITY_RECENT_REQUESTS:]
            )
            entity.last_modified_at = now
            entity.lease.clear()
            for entity_message in commit.entity_messages:
                self._enqueue_entity(entity_message, now)
            for message in outbound:
                self._enqueue(message, now)
        self._wakeups.work([ENTITY, ORCHESTRATION] if outbound else [ENTITY])
        if outbound:
            self._wakeups.instances_changed({m.instance_id for m in outbound})

    async def abandon_entity_work_item(
        self, work_item: EntityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at`` the entity rests until then."""
        retry_at = as_utc_or_none(retry_at)
        with self._lock:
            entity = self._entities.get(work_item.entity_id)
            if entity is None or entity.lease.token != work_item.lock_token:
                return
            entity.lease.clear()
            if retry_at is not None:
                entity.lease.expires_at = retry_at
                return
        self._wakeups.work([ENTITY])

    def _held_entity(self, work_item: EntityWorkItem) -> _Entity:
        entity = self._entities.get(work_item.entity_id)
        if entity is None or entity.lease.token != work_item.lock_token:
            raise LeaseLostError(f"lease on entity {work_item.entity_id!r} was lost")
        return entity

    def _enqueue_entity(self, message: EntityMessage, now: datetime) -> None:
        """Store a message for an entity, creating its row (with the lock held)."""
        split_entity_id(message.entity_id)
        if message.visible_at is not None:
            message = dataclasses.replace(message, visible_at=as_utc(message.visible_at))
        entity = self._entities.get(message.entity_id)
        if entity is None:
            entity = self._entities[message.entity_id] = _Entity(message.entity_id, now)
        message_id = self._next_message_id
        self._next_message_id += 1
        entity.messages[message_id] = _EntityMessage(message_id, message, now)

    # -- entity client operations ---------------------------------------------------------------
    async def send_entity_message(self, message: EntityMessage) -> None:
        """Enqueue a message to an entity."""
        now = self._now()
        with self._lock:
            self._enqueue_entity(message, now)
        self._wakeups.work([ENTITY])

    async def get_entity(self, entity_id: str, include_state: bool = True) -> EntityMetadata | None:
        """One entity with a state or a lock holder, or None."""
        with self._lock:
            entity = self._entities.get(entity_id)
            if entity is None or not entity.shown():
                return None
            return _entity_metadata(entity, include_state)

    async def query_entities(self, query: EntityQuery) -> EntityQueryPage:
        """Entities with a state or a lock holder, matching the filters, by id."""
        check_page_size(query.page_size)
        after = decode_entity_token(query.continuation_token) if query.continuation_token else None
        start = as_utc_or_none(query.last_modified_from)
        end = as_utc_or_none(query.last_modified_to)
        prefix = query.entity_id_prefix
        with self._lock:
            found = sorted(
                (
                    _entity_metadata(e, query.include_state)
                    for e in self._entities.values()
                    if e.shown()
                    and (after is None or e.entity_id > after)
                    and (query.name is None or split_entity_id(e.entity_id)[0] == query.name)
                    and (prefix is None or e.entity_id.startswith(prefix))
                    and (start is None or e.last_modified_at >= start)
                    and (end is None or e.last_modified_at < end)
                ),
                key=lambda m: m.entity_id,
            )
        page = found[: query.page_size]
        token = encode_entity_token(page[-1].entity_id) if len(found) > query.page_size else None
        return EntityQueryPage(page, token)

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Release orphaned locks, then forget empty entities."""
        released = removed = 0
        now = self._now()
        with self._lock:
            for entity in list(self._entities.values()):
                holder = entity.record.locked_by
                if release_orphaned_locks and holder is not None and entity.lease.token is None:
                    instance = self._instances.get(holder)
                    if orphaned_lock(instance.state if instance is not None else None):
                        entity.record = dataclasses.replace(entity.record, locked_by=None)
                        entity.last_modified_at = now
                        released += 1
                if (
                    remove_empty_entities
                    and not entity.shown()
                    and not entity.messages
                    and entity.lease.token is None
                ):
                    del self._entities[entity.entity_id]
                    removed += 1
        if released:
            self._wakeups.work([ENTITY])
        return CleanEntityStorageResult(removed, released)

    # -- workers and their leases -----------------------------------------------------------
    async def heartbeat_worker(self, worker: WorkerInfo) -> None:
        """Record (or refresh) a worker."""
        with self._lock:
            self._workers[worker.worker_id] = worker

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        with self._lock:
            self._workers.pop(worker_id, None)

    async def list_workers(self) -> list[WorkerInfo]:
        """The workers, most recently heard from first."""
        with self._lock:
            workers = list(self._workers.values())
        return sorted(workers, key=lambda w: w.heartbeat_at, reverse=True)

    async def backlog(self) -> list[BacklogEntry]:
        """The work waiting, by kind and name."""
        now = self._now()
        counts: dict[tuple[str, str], list[int]] = {}

        def count(kind: str, name: str, lease: _Lease, due_now: bool) -> None:
            slot = 2 if lease.token is not None and lease.live(now) else 0
            if slot == 0 and (lease.live(now) or not due_now):
                slot = 1
            counts.setdefault((kind, name), [0, 0, 0])[slot] += 1

        with self._lock:
            for instance in self._instances.values():
                if instance.messages:
                    due = any(m.visible(now) for m in instance.messages.values())
                    count("orchestration", instance.state.name, instance.lease, due)
            for act in self._activities.values():
                count("activity", act.request.name, act.lease, act.visible_at <= now)
        return [
            BacklogEntry(kind, name, *numbers)
            for (kind, name), numbers in sorted(counts.items(), key=_backlog_order)
        ]

    async def lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        """The instance's leases that ran out unreleased or were broken, oldest first."""
        with self._lock:
            instance = self._instances.get(instance_id)
            return list(instance.takeovers) if instance is not None else []

    async def list_executions(self, instance_id: str) -> list[ExecutionRecord]:
        """The records of the instance's earlier executions, oldest first."""
        with self._lock:
            instance = self._instances.get(instance_id)
            return list(instance.executions) if instance is not None else []

    async def lease_holders(self) -> list[LeaseHolder]:
        """Who holds live leases, and until when."""
        now = self._now()
        held: dict[str, tuple[int, datetime]] = {}
        with self._lock:
            leases = [i.lease for i in self._instances.values()]
            leases += [a.lease for a in self._activities.values()]
            leases += [e.lease for e in self._entities.values()]
            for lease in leases:
                if lease.token is None or lease.owner is None or not lease.live(now):
                    continue
                assert lease.expires_at is not None
                count, until = held.get(lease.owner, (0, lease.expires_at))
                held[lease.owner] = (count + 1, max(until, lease.expires_at))
        return [LeaseHolder(owner, n, until) for owner, (n, until) in sorted(held.items())]

    async def break_leases(self, owner: str) -> int:
        """Free every instance and activity ``owner`` holds."""
        broken = 0
        now = self._now()
        with self._lock:
            for instance in self._instances.values():
                if instance.lease.token is not None and instance.lease.owner == owner:
                    instance.record_takeover(now, None)
                    instance.lease.clear()
                    broken += 1
            for activity in self._activities.values():
                if activity.lease.token is not None and activity.lease.owner == owner:
                    activity.lease.clear()
                    broken += 1
            for entity in self._entities.values():
                if entity.lease.token is not None and entity.lease.owner == owner:
                    entity.lease.clear()
                    broken += 1
        if broken:
            self._wakeups.work([ORCHESTRATION, ACTIVITY, ENTITY])
        return broken

    def _held_activity(self, work_item: ActivityWorkItem) -> _Activity:
        activity = self._activities.get(work_item.work_item_id)
        if activity is None or activity.lease.token != work_item.lock_token:
            raise LeaseLostError(f"lease on activity {work_item.work_item_id} was lost")
        return activity

    # -- schedules ---------------------------------------------------------------------------
    async def create_schedule(self, record: ScheduleRecord) -> None:
        """Store a new schedule; :class:`ScheduleAlreadyExistsError` if the id is taken."""
        with self._lock:
            if record.schedule_id in self._schedules:
                raise ScheduleAlreadyExistsError(record.schedule_id)
            self._schedules[record.schedule_id] = _normalized_schedule(record)
        self._wakeups.work([SCHEDULE])

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """One schedule, or None."""
        with self._lock:
            return self._schedules.get(schedule_id)

    async def list_schedules(self, prefix: str | None = None) -> list[ScheduleRecord]:
        """The schedules whose id starts with ``prefix``, by id."""
        with self._lock:
            found = [r for r in self._schedules.values() if r.schedule_id.startswith(prefix or "")]
        return sorted(found, key=lambda r: r.schedule_id)

    async def update_schedule(self, record: ScheduleRecord) -> bool:
        """Write the schedule if its stored revision is still ``record.revision``."""
        with self._lock:
            stored = self._schedules.get(record.schedule_id)
            if stored is None or stored.revision != record.revision:
                return False
            self._schedules[record.schedule_id] = dataclasses.replace(
                _normalized_schedule(record), revision=record.revision + 1
            )
        self._wakeups.work([SCHEDULE])
        return True

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False if there was none."""
        with self._lock:
            deleted = self._schedules.pop(schedule_id, None) is not None
        self._wakeups.work([SCHEDULE])
        return deleted

    async def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` schedules due at ``now``, soonest first."""
        now = as_utc(now)
        with self._lock:
            due = [
                r
                for r in self._schedules.values()
                if r.next_due_at is not None and r.next_due_at <= now
            ]
        due.sort(key=lambda r: (r.next_due_at, r.schedule_id))
        return due[:limit]

    async def next_schedule_due_at(self) -> datetime | None:
        """The earliest time a schedule is due."""
        with self._lock:
            times = [r.next_due_at for r in self._schedules.values() if r.next_due_at is not None]
        return min(times, default=None)

    # -- client operations -----------------------------------------------------------------
    async def _create(
        self,
        message: OrchestrationMessage,
        replaceable: frozenset[OrchestrationStatus],
        start_lease: StartLease | None,
        *,
        durable: bool = True,
    ) -> OrchestrationWorkItem | None:
        state = pending_state(message.instance_id, started_event(message))
        message = _normalized_message(message)
        now = self._now()
        if start_lease is not None and not start_lease.allows(message, now):
            start_lease = None
        leased = None
        with self._lock:
            existing = self._instances.get(message.instance_id)
            if existing is not None:
                status = existing.state.runtime_status
                if status not in replaceable:
                    raise OrchestrationAlreadyExistsError(message.instance_id, status)
                self._forget(message.instance_id)
                start_lease = None  # a replaced instance is left to the fetchers
            instance = self._instances[message.instance_id] = _Instance(state)
            self._enqueue(message, now)
            if start_lease is not None:
                leased = self._lease(instance, start_lease.owner, start_lease.duration, now, None)
        if leased is None:
            self._wakeups.work([ORCHESTRATION])
        self._wakeups.instances_changed([message.instance_id])
        return leased

    async def send_message(self, message: OrchestrationMessage) -> bool:
        """Enqueue a message; False if its instance does not exist."""
        message = _normalized_message(message)
        now = self._now()
        with self._lock:
            sent = self._enqueue(message, now)
        self._wakeups.work([ORCHESTRATION])
        return sent

    async def get_instance(self, instance_id: str) -> OrchestrationState | None:
        """The stored state of one instance, or None."""
        with self._lock:
            instance = self._instances.get(instance_id)
            return instance.state if instance is not None else None

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The instance's history in order (empty if unknown)."""
        with self._lock:
            instance = self._instances.get(instance_id)
            return list(instance.history) if instance is not None else []

    async def query_instances(self, query: InstanceQuery) -> QueryPage:
        """Matching instances in the query's order (ties by instance id); ``created_to`` is
        exclusive; the token resumes after the last row of a full page."""
        check_page_size(query.page_size)
        with self._lock:
            states = [i.state for i in self._instances.values()]
        return page_in_memory(query, states, instance_filter(query))

    async def count_instances(self, query: InstanceQuery) -> dict[OrchestrationStatus, int]:
        """Counts by status of the instances matching ``query``'s filters."""
        matches = instance_filter(query)
        with self._lock:
            return dict(
                Counter(
                    i.state.runtime_status for i in self._instances.values() if matches(i.state)
                )
            )

    async def purge_instance(self, instance_id: str) -> bool:
        """Delete a terminal instance and all it owns; False if absent or not terminal."""
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None or not instance.state.runtime_status.is_terminal:
                return False
            self._forget(instance_id)
            return True

    async def purge_instances(self, purge_filter: PurgeFilter) -> int:
        """Delete every terminal instance matching the filter; returns how many."""
        before = as_utc_or_none(purge_filter.created_before)
        start = as_utc_or_none(purge_filter.created_from)
        completed_before = as_utc_or_none(purge_filter.completed_before)
        with self._lock:
            doomed = [
                i.state.instance_id
                for i in self._instances.values()
                if i.state.runtime_status.is_terminal
                and (
                    purge_filter.statuses is None or i.state.runtime_status in purge_filter.statuses
                )
                and (before is None or i.state.created_at < before)
                and (start is None or i.state.created_at >= start)
                and (
                    completed_before is None
                    or (
                        i.state.completed_at is not None and i.state.completed_at < completed_before
                    )
                )
            ]
            self._forget_all(doomed)
            return len(doomed)

    # -- internals (call with self._lock held) ------------------------------------------------
    def _enqueue(self, message: OrchestrationMessage, now: datetime) -> bool:
        instance = self._instances.get(message.instance_id)
        if instance is None:
            if not isinstance(message.event, ExecutionStarted):
                return False
            instance = self._instances[message.instance_id] = _Instance(
                pending_state(message.instance_id, message.event)
            )
        message_id = self._next_message_id
        self._next_message_id += 1
        instance.messages[message_id] = _Message(message_id, message, enqueued_at=now)
        stored = instance.messages[message_id]
        heapq.heappush(self._due, (stored.due(), message_id, message.instance_id))
        change = message.status_change
        if change is not None and instance.state.runtime_status is change.when:
            instance.state = dataclasses.replace(
                instance.state, runtime_status=change.becomes, last_updated_at=now
            )
        return True

    def _forget(self, instance_id: str) -> None:
        self._forget_all([instance_id])

    def _forget_all(self, instance_ids: Iterable[str]) -> None:
        gone = set(instance_ids)
        for instance_id in gone:
            self._instances.pop(instance_id, None)
        for activity_id in [
            a.work_item_id for a in self._activities.values() if a.request.instance_id in gone
        ]:
            del self._activities[activity_id]


def _entity_metadata(entity: _Entity, include_state: bool) -> EntityMetadata:
    name, key = split_entity_id(entity.entity_id)
    return EntityMetadata(
        entity_id=entity.entity_id,
        name=name,
        key=key,
        last_modified_at=entity.last_modified_at,
        serialized_state=entity.record.state if include_state else None,
        locked_by=entity.record.locked_by,
        backlog=len(entity.messages),
    )


def _ends_rest(lease: _Lease, message: _Message) -> bool:
    """Whether ``message`` frees an instance resting after an abandon: a terminate does."""
    return lease.token is None and isinstance(message.message.event, ExecutionTerminated)


def _normalized_message(message: OrchestrationMessage) -> OrchestrationMessage:
    if message.visible_at is None:
        return message
    return dataclasses.replace(message, visible_at=as_utc(message.visible_at))


def _backlog_order(item: tuple[tuple[str, str], list[int]]) -> tuple[bool, str]:
    (kind, name), _ = item
    return (kind != "orchestration", name)


def _normalized_schedule(record: ScheduleRecord) -> ScheduleRecord:
    return dataclasses.replace(
        record,
        next_due_at=as_utc_or_none(record.next_due_at),
        created_at=as_utc(record.created_at),
        updated_at=as_utc(record.updated_at),
    )
