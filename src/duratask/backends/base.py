"""The storage seam: what a task hub store must do, and the values that cross it.

The seam has two halves, as in the Durable Task Framework:

- :class:`OrchestrationService`, the work-item half a worker uses: lease, renew, commit and
  abandon orchestration episodes and activities;
- :class:`OrchestrationServiceClient`, the client half the client, the CLI, the dashboard
  and the integrity check use: create, send, get, query, count, purge, describe, delete.

A store (:class:`TaskHubStore`) is one object implementing both over one task hub, which it
keeps per instance as:

- an instance row (status, name, times, payloads: an index over its history), plus the lease
  (lock token and expiry) of the worker processing it;
- its history: the ordered events of the current execution;
- messages: events waiting to be delivered to it (activity results, timers with their due
  time, external events, sub-orchestration starts and results, terminate...);
- activity work items: activities waiting to run, leased to one worker at a time.

and per durable entity (``@name@key``): its committed record (state, the orchestration
holding its lock, the request ids it applied last) and its messages (operations, lock
requests and releases), leased to one worker at a time as an :class:`EntityWorkItem`.

Stores know nothing of the replay engine: they move and keep events, and apply what the
worker decided. Every store must pass the conformance suite in ``tests/conformance``;
CONTRIBUTING.md says what that suite demands of a new one.

Rules every store follows (the conformance suite checks them):

- A commit that resets a non-empty history (continue-as-new, a finished instance started
  again) keeps an :class:`ExecutionRecord` of the stored execution it ends, then of each of
  its ``continued_executions``, as :func:`duratask.backends._shared.ended_executions`
  builds them (from the instance row as stored before the commit).
- :meth:`OrchestrationService.commit_episode` writes an episode (appended history, deletion
  of the consumed messages, new activity work items, outbound messages, the instance row,
  and the deletion of an activity whose result the episode consumed) in ONE transaction,
  only while its fence holds (:class:`LeaseHeld` or :class:`InstanceUnchanged`); otherwise
  it writes nothing and raises.
- A message carrying :class:`ExecutionStarted` creates the instance row (status PENDING)
  when the instance does not exist; any other message to an instance with no row is
  dropped. A message with a :class:`StatusChange` changes the status of its instance as it
  is enqueued, if the status is still the one it names.
- Messages are delivered in the order they were enqueued, never before ``visible_at``; an
  instance abandoned with a retry time rests until then (no message of it is delivered
  before those that were abandoned), unless a terminate waits for it.
- ``complete_activity_work_item`` deletes the activity and enqueues its result in one
  transaction, refused with :class:`LeaseLostError` if the lease was lost.
- A lease that expires makes the work item available to any worker again. When an instance
  is leased while its previous lease is still on it, expired (never released), or when
  :meth:`OrchestrationService.break_leases` breaks one, the store keeps a
  :class:`LeaseTakeover` for operators.
- An entity message creates the entity's row when it has none. While an entity is locked by
  an orchestration, only that orchestration's messages are delivered to it; the others wait,
  in order. ``complete_entity_work_item`` writes the record, deletes the consumed messages
  and sends the outbound ones in ONE transaction, refused with :class:`LeaseLostError` if
  the lease was lost.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from duratask.backends._wakeups import InstanceWatch
from duratask.history import HistoryEvent
from duratask.state import (
    DEFAULT_TASK_QUEUE,
    OrchestrationState,
    OrchestrationStatus,
    decode_payload,
)

if TYPE_CHECKING:
    from duratask.converter import DataConverter


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A status an instance takes when a message reaches it, if it still has ``when``: a
    rewind makes a FAILED instance PENDING, so that it waits for a worker again.

    Attributes:
        when: The status the instance must have for the change to apply.
        becomes: The status it takes then.
    """

    when: OrchestrationStatus
    becomes: OrchestrationStatus


@dataclass(frozen=True, slots=True)
class OrchestrationMessage:
    """One history event on its way to an orchestration instance.

    Attributes:
        instance_id: The instance the message is for.
        event: The event to deliver.
        execution_id: The execution the message belongs to; None reaches whichever
            execution is current.
        visible_at: Deliver no earlier than this (timers, retries); None means now.
        status_change: Applied to the instance row as the message is enqueued (see
            :class:`StatusChange`).
    """

    instance_id: str
    event: HistoryEvent
    execution_id: str | None = None
    visible_at: datetime | None = None
    status_change: StatusChange | None = None


@dataclass(frozen=True, slots=True)
class LockedMessage:
    """A message handed to a worker inside an orchestration work item.

    Attributes:
        message_id: The store's id of the message, consumed by the episode's commit.
        message: The message.
        dequeue_count: How many times the message has been leased, this time included.
    """

    message_id: int
    message: OrchestrationMessage
    dequeue_count: int = 1


@dataclass(frozen=True, slots=True)
class ActivityRequest:
    """An activity to run, as decided by an orchestration.

    Attributes:
        instance_id: The orchestration instance that scheduled it.
        execution_id: The execution that scheduled it.
        task_id: Its sequence number in that execution's history.
        name: The registered name of the activity.
        version: The activity version asked for, if any.
        input: The input as JSON text.
        attempt: Which try of a retried call this is (1 for the first).
        timeout: How long one delivery may run, start to close; None: no limit.
        heartbeat_timeout: How long the activity may go without a heartbeat; None: no limit.
        heartbeat_details: The details the activity last reported with a heartbeat (JSON):
            on an earlier delivery of this try, or on the try before it.
        task_queue: The task queue it was sent to: only workers serving it lease it.
    """

    instance_id: str
    execution_id: str
    task_id: int
    name: str
    version: str | None = None
    input: str | None = None
    attempt: int = 1
    timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    heartbeat_details: str | None = None
    task_queue: str = DEFAULT_TASK_QUEUE


@dataclass(frozen=True, slots=True)
class HistoryMark:
    """How far a worker's cached copy of an instance's history goes: which execution, how
    many events. Within one execution a history only grows, and every reset starts a new
    execution id, so an equal mark means an identical history.

    Attributes:
        execution_id: The execution the copy is of.
        length: How many events the copy has.
    """

    execution_id: str
    length: int


KnownHistories = Mapping[str, HistoryMark] | None
"""The instances whose history a worker has a copy of (see :class:`HistoryMark`)."""


@dataclass(slots=True)
class OrchestrationWorkItem:
    """An instance leased to one worker: its current history and its pending messages.

    Attributes:
        instance_id: The leased instance.
        lock_token: The lease's token; the commit is refused once another worker holds it.
        locked_until: When the lease expires unless renewed.
        history: The history of the instance's current execution (empty when
            ``history_loaded`` is False).
        messages: The messages to deliver in this episode, in order.
        state: The stored instance row when the lease was taken (None only if the row is
            missing).
        history_length: The stored history's length (-1 given: ``len(history)``).
        history_loaded: False when the store left ``history`` empty because the caller's
            cached copy is current.
    """

    instance_id: str
    lock_token: str
    locked_until: datetime
    history: list[HistoryEvent]
    messages: list[LockedMessage]
    # The stored instance row when the lease was taken (None only if the row is missing).
    state: OrchestrationState | None = None
    # The stored history's length; -1 means len(history).
    history_length: int = -1
    # False when the store left ``history`` empty because the caller's copy is current.
    history_loaded: bool = True

    def __post_init__(self) -> None:
        if self.history_length < 0:
            self.history_length = len(self.history)

    def fence(self) -> LeaseHeld:
        """The fence of an episode committed under this lease."""
        return LeaseHeld(self.lock_token, self.history_length)


@dataclass(slots=True)
class ActivityWorkItem:
    """An activity leased to one worker.

    Attributes:
        work_item_id: The store's id of the activity.
        request: What to run.
        lock_token: The lease's token; completing is refused once another worker holds it.
        locked_until: When the lease expires unless renewed.
        dequeue_count: How many times the activity has been leased, this time included.
    """

    work_item_id: int
    request: ActivityRequest
    lock_token: str
    locked_until: datetime
    dequeue_count: int = 1


@dataclass(frozen=True, slots=True)
class WorkFilter:
    """What a worker can run, so that it leases nothing else; None: anything of that kind.

    Attributes:
        orchestrations: The (name, version) pairs it registered.
        activities: The activity names it registered.
        entities: The entity names it registered.
        task_queues: The task queues it serves: it leases only instances and activities on
            one of them (entities have no queue).
    """

    orchestrations: frozenset[tuple[str, str | None]] | None = None
    activities: frozenset[str] | None = None
    entities: frozenset[str] | None = None
    task_queues: frozenset[str] | None = None

    def queue_list(self) -> list[str] | None:
        """The task queues, sorted (how SQL stores bind them), or None for any."""
        return None if self.task_queues is None else sorted(self.task_queues)

    def serves_queue(self, task_queue: str) -> bool:
        """Whether work on ``task_queue`` passes the filter's queues."""
        return self.task_queues is None or task_queue in self.task_queues

    def runs_orchestration(self, name: str, version: str | None, task_queue: str) -> bool:
        """Whether an instance of orchestration ``name`` at ``version`` on ``task_queue``
        passes the filter."""
        return self.serves_queue(task_queue) and (
            self.orchestrations is None or (name, version) in self.orchestrations
        )

    def orchestration_keys(self) -> list[str] | None:
        """The orchestrations as :func:`orchestration_key` values (how SQL stores match
        them), or None for any."""
        if self.orchestrations is None:
            return None
        return [orchestration_key(name, version) for name, version in self.orchestrations]


def orchestration_key(name: str, version: str | None) -> str:
    """One string for an orchestration's name and version: ``name``, the unit separator
    (U+001F), then the version (U+001E for none); names and versions hold no control
    characters."""
    return name + "\x1f" + ("\x1e" if version is None else version)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker connected to the hub, as it last reported itself.

    Attributes:
        worker_id: The worker's id (host, process and a random part).
        host: The host it runs on.
        pid: Its process id there.
        started_at: When it started.
        heartbeat_at: When it last reported (every few seconds while it runs).
        orchestrations: The (name, version) pairs it registered.
        activities: The activity names it registered.
        task_queues: The task queues it serves.
        in_flight: How many episodes and activities it was running, by kind.
    """

    worker_id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    orchestrations: frozenset[tuple[str, str | None]] = frozenset()
    activities: frozenset[str] = frozenset()
    task_queues: frozenset[str] = frozenset({DEFAULT_TASK_QUEUE})
    in_flight: Mapping[str, int] = field(default_factory=dict)

    def runs_orchestration(self, name: str, version: str | None) -> bool:
        """Whether it registered the orchestration ``name`` at ``version``."""
        return (name, version) in self.orchestrations

    def runs_activity(self, name: str) -> bool:
        """Whether it registered the activity ``name``."""
        return name in self.activities

    def serves_queue(self, task_queue: str) -> bool:
        """Whether it leases work on ``task_queue``."""
        return task_queue in self.task_queues


@dataclass(frozen=True, slots=True)
class BacklogEntry:
    """The work waiting in the hub for one orchestration or activity name.

    Attributes:
        kind: ``"orchestration"`` or ``"activity"``.
        name: The orchestration or activity name.
        ready: Instances with messages due, or activities, that a worker could take now.
        later: Those whose work is due later (timers, retries, deferred starts, rests).
        leased: Those a worker holds now.
    """

    kind: str
    name: str
    ready: int = 0
    later: int = 0
    leased: int = 0


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Someone holding leases in the hub.

    Attributes:
        owner: The lease owner (a worker id).
        items: How many instances and activities it holds.
        expires_at: When the last of its leases expires.
    """

    owner: str
    items: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LeaseTakeover:
    """An instance whose worker let its lease run out without releasing it (it crashed, hung
    or lost the store), or whose lease was broken because its worker was known gone: the
    gap between ``lease_expired_at`` and ``taken_at`` is time the instance lost.

    Attributes:
        instance_id: The instance.
        execution_id: Its execution then.
        previous_owner: The worker whose lease it was.
        lease_expired_at: When that lease ran out (or was broken).
        taken_at: When another lease replaced it (for a broken lease: when it was broken).
        taken_by: The worker that leased the instance then; None for a broken lease.
    """

    instance_id: str
    execution_id: str | None
    previous_owner: str | None
    lease_expired_at: datetime
    taken_at: datetime
    taken_by: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseHeld:
    """Fence of an episode run on a leased work item: commit only while the instance still
    carries this lease's ``lock_token`` and its history still has ``history_length`` events
    (else :class:`~duratask.LeaseLostError`). The commit releases the lease.

    Attributes:
        lock_token: The token of the lease the worker holds.
        history_length: The length of the stored history the episode ran on.
    """

    lock_token: str
    history_length: int


@dataclass(frozen=True, slots=True)
class InstanceUnchanged:
    """Fence of an episode a worker ran on its own copy of an instance (the next step after
    an activity it ran itself, with the activity's result): commit only while nobody holds
    the instance, it is still on execution ``execution_id`` with ``history_length`` events,
    and no message waits for it (else :class:`~duratask.errors.InstanceBusyError`).

    Attributes:
        execution_id: The execution the worker's copy is of.
        history_length: The length of the stored history the worker's copy has.
    """

    execution_id: str
    history_length: int


EpisodeFence = LeaseHeld | InstanceUnchanged
"""What must still hold for an episode's commit: :class:`LeaseHeld` or
:class:`InstanceUnchanged`."""


@dataclass(frozen=True, slots=True)
class EagerLease:
    """Lease up to ``max_items`` of a commit's new activities to ``owner`` as they are
    stored: the committing worker has room to run them, so no one needs to fetch them.

    Attributes:
        owner: The committing worker.
        duration: How long the leases last.
        max_items: How many of the activities, at most (the first ones).
    """

    owner: str
    duration: timedelta
    max_items: int


@dataclass(frozen=True, slots=True)
class OrchestrationCommit:
    """Everything one orchestration episode writes, committed atomically.

    A commit with no ``new_events`` that does not reset the history leaves the stored
    instance row as it is (its ``state`` is the row the work item was leased with), so a
    change made meanwhile, such as a rewind marking the instance PENDING, is kept.

    Attributes:
        state: The instance row to write.
        new_events: The events to append to the history.
        consumed_message_ids: The messages the episode consumed, deleted by the commit.
        activities: The activities to schedule.
        messages: The messages to send: timers, events, sub-orchestration starts and
            results, and the instance's own continue-as-new start.
        reset_history: Drop the stored history before appending ``new_events``
            (continue-as-new, restart).
        eager_activities: Lease the first activities to the committing worker in the same
            transaction.
        finished_activity: An activity whose result the episode consumed straight from the
            worker that ran it (the result is in ``new_events``, never stored as a
            message): deleted with the commit.
        entity_messages: The messages to send to entities: signals, calls, lock requests
            and releases.
        continued_executions: The executions the episode began and ended itself, running
            them back to back as each continued as new (oldest first; never stored): the
            store keeps their records after the one of the execution the reset ends, and
            numbers them (their ``generation`` here is 0).
    """

    state: OrchestrationState  # its instance_id names the instance
    new_events: Sequence[HistoryEvent] = ()
    consumed_message_ids: Sequence[int] = ()
    activities: Sequence[ActivityRequest] = ()
    messages: Sequence[OrchestrationMessage] = ()
    reset_history: bool = False
    eager_activities: EagerLease | None = None
    finished_activity: ActivityWorkItem | None = None
    entity_messages: Sequence[EntityMessage] = ()
    continued_executions: Sequence[ExecutionRecord] = ()

    @property
    def changes_instance(self) -> bool:
        """Whether the instance row must be written (see the class docstring)."""
        return bool(self.new_events) or self.reset_history


class InstanceSort(StrEnum):
    """What :class:`InstanceQuery` orders instances by; ties are broken by instance id.

    Paging by ``LAST_UPDATED`` or ``STATUS`` follows values that change: an instance updated
    between two pages may be shown twice or not at all.
    """

    CREATED = "created"
    LAST_UPDATED = "last_updated"
    STATUS = "status"
    NAME = "name"


ENTITY_SIGNAL = "signal"
ENTITY_CALL = "call"
ENTITY_LOCK = "lock"
ENTITY_RELEASE = "release"
ENTITY_MESSAGE_KINDS = frozenset({ENTITY_SIGNAL, ENTITY_CALL, ENTITY_LOCK, ENTITY_RELEASE})


@dataclass(frozen=True, slots=True)
class EntityMessage:
    """One message on its way to a durable entity.

    Attributes:
        entity_id: The entity, as ``@name@key``.
        kind: ``"signal"`` (an operation, no answer), ``"call"`` (an operation whose result
            goes back to the calling orchestration), ``"lock"`` (a critical section asks
            for the entity) or ``"release"`` (it lets go).
        request_id: Unique per request; an entity applies a request id once.
        operation: The operation's name (signals and calls).
        input: The operation's input as JSON text.
        source: Who sent it: an orchestration instance id, an entity id, or None for a
            client. While an entity is locked, only its lock holder's messages reach it.
        source_execution_id: The sending orchestration's execution (for answers).
        task_id: The sender's sequence number for the answer (calls and locks).
        lock_set: The entities a critical section locks, in lock order (locks).
        position: Which of ``lock_set`` this lock message is for.
        visible_at: Deliver no earlier than this (delayed signals); None means now.
    """

    entity_id: str
    kind: str
    request_id: str
    operation: str | None = None
    input: str | None = None
    source: str | None = None
    source_execution_id: str | None = None
    task_id: int = -1
    lock_set: tuple[str, ...] = ()
    position: int = 0
    visible_at: datetime | None = None

    def to_json(self) -> str:
        """The message as compact JSON text (how stores keep it); ``visible_at`` is left
        out (stores keep it in a column of its own)."""
        out: dict[str, object] = {"kind": self.kind, "request_id": self.request_id}
        for name in ("operation", "input", "source", "source_execution_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.task_id != -1:
            out["task_id"] = self.task_id
        if self.lock_set:
            out["lock_set"] = list(self.lock_set)
            out["position"] = self.position
        return json.dumps(out, separators=(",", ":"))

    @classmethod
    def from_json(
        cls, entity_id: str, text: str, visible_at: datetime | None = None
    ) -> EntityMessage:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            entity_id=entity_id,
            kind=data["kind"],
            request_id=data["request_id"],
            operation=data.get("operation"),
            input=data.get("input"),
            source=data.get("source"),
            source_execution_id=data.get("source_execution_id"),
            task_id=data.get("task_id", -1),
            lock_set=tuple(data.get("lock_set", ())),
            position=data.get("position", 0),
            visible_at=visible_at,
        )


@dataclass(frozen=True, slots=True)
class LockedEntityMessage:
    """A message handed to a worker inside an entity work item.

    Attributes:
        message_id: The store's id of the message, consumed by the batch's commit.
        message: The message.
        dequeue_count: How many times the message has been leased, this time included.
    """

    message_id: int
    message: EntityMessage
    dequeue_count: int = 1


ENTITY_RECENT_REQUESTS = 256
"""How many of its latest request ids an entity keeps, to apply a redelivered one once."""


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """What an entity has committed: its state, its lock holder, its latest request ids.

    Attributes:
        state: The entity's state as JSON text; None when it has none (deleted or new).
        locked_by: The orchestration instance whose critical section holds the entity.
        recent_requests: The ids of the requests it applied last (newest last, at most
            :data:`ENTITY_RECENT_REQUESTS`), so that a message delivered twice is applied
            once.
    """

    state: str | None = None
    locked_by: str | None = None
    recent_requests: tuple[str, ...] = ()


@dataclass(slots=True)
class EntityWorkItem:
    """An entity leased to one worker: its record and a batch of its pending messages.

    Attributes:
        entity_id: The leased entity (``@name@key``).
        lock_token: The lease's token; the commit is refused once another worker holds it.
        locked_until: When the lease expires unless renewed.
        record: The entity's committed record.
        messages: The messages to process in this batch, in order (only its lock
            holder's while it is locked).
    """

    entity_id: str
    lock_token: str
    locked_until: datetime
    record: EntityRecord
    messages: list[LockedEntityMessage]


@dataclass(frozen=True, slots=True)
class EntityCommit:
    """Everything one entity batch writes, committed atomically under the lease.

    Attributes:
        record: The entity's new record.
        consumed_message_ids: The messages the batch processed, deleted by the commit.
        entity_messages: Messages to entities: signals, forwarded lock requests.
        messages: Messages to orchestrations: call results, lock grants, starts.
    """

    record: EntityRecord
    consumed_message_ids: Sequence[int] = ()
    entity_messages: Sequence[EntityMessage] = ()
    messages: Sequence[OrchestrationMessage] = ()


@dataclass(frozen=True, slots=True)
class EntityMetadata:
    """A stored entity as a client sees it.

    Attributes:
        entity_id: The entity (``@name@key``).
        name: Its name.
        key: Its key.
        last_modified_at: When a batch last changed it.
        serialized_state: Its state as JSON text (None if not asked for, or none).
        locked_by: The orchestration instance whose critical section holds it, if any.
        backlog: How many messages wait for it.
        converter: The data converter :attr:`state` decodes with (set by the client).
    """

    entity_id: str
    name: str
    key: str
    last_modified_at: datetime
    serialized_state: str | None = None
    locked_by: str | None = None
    backlog: int = 0
    converter: DataConverter | None = field(default=None, compare=False, repr=False)

    @property
    def state(self) -> Any:
        """The state decoded (plain JSON values, or through ``converter``); None if none."""
        return decode_payload(self.serialized_state, self.converter)


@dataclass(frozen=True, slots=True)
class EntityQuery:
    """Filters for :meth:`OrchestrationServiceClient.query_entities`; all given must match.

    Only entities with a state or a lock holder are found (not empty rows).

    Attributes:
        name: Entities of this name.
        entity_id_prefix: Entities whose id (``@name@key``) starts with this.
        last_modified_from: Entities changed at or after this time.
        last_modified_to: Entities changed before this time.
        include_state: Whether to read their states.
        page_size: How many entities a page holds at most.
        continuation_token: Where the previous page ended (None: the first page).
    """

    name: str | None = None
    entity_id_prefix: str | None = None
    last_modified_from: datetime | None = None
    last_modified_to: datetime | None = None
    include_state: bool = True
    page_size: int = 100
    continuation_token: str | None = None


@dataclass(frozen=True, slots=True)
class EntityQueryPage:
    """One page of entities, ordered by id; pass ``continuation_token`` back for the next.

    Attributes:
        entities: The entities of this page.
        continuation_token: The token for the next page; None on the last page.
    """

    entities: list[EntityMetadata] = field(default_factory=list)
    continuation_token: str | None = None


@dataclass(frozen=True, slots=True)
class CleanEntityStorageResult:
    """What :meth:`OrchestrationServiceClient.clean_entity_storage` did.

    Attributes:
        empty_entities_removed: Rows of entities with no state, no lock and no messages.
        orphaned_locks_released: Locks held by orchestrations that no longer run.
    """

    empty_entities_removed: int = 0
    orphaned_locks_released: int = 0


def split_entity_id(entity_id: str) -> tuple[str, str]:
    """``("name", "key")`` of ``@name@key``; ValueError naming the right form otherwise."""
    if entity_id.startswith("@"):
        name, sep, key = entity_id[1:].partition("@")
        if sep and name:
            return name, key
    raise ValueError(f"malformed entity id {entity_id!r}: the form is '@name@key'")


def encode_entity_token(entity_id: str) -> str:
    """An opaque keyset token for entity pages: the id of the last entity of a page."""
    return base64.urlsafe_b64encode(json.dumps([entity_id]).encode()).decode()


def decode_entity_token(token: str) -> str:
    """Inverse of :func:`encode_entity_token`; ValueError on a malformed token."""
    try:
        (entity_id,) = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(entity_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed continuation token {token!r}") from exc


@dataclass(frozen=True, slots=True)
class InstanceQuery:
    """Filters for :meth:`OrchestrationServiceClient.query_instances`; all given filters must match.

    Attributes:
        statuses: Instances in one of these statuses.
        created_from: Instances created at or after this time.
        created_to: Instances created before this time.
        name: Instances of the orchestration of this name.
        instance_id_prefix: Instances whose id starts with this.
        parent_instance_id: The sub-orchestrations this instance started.
        page_size: How many instances a page holds at most.
        continuation_token: Where the previous page ended (None: the first page).
        sort: What the instances are ordered by.
        descending: Largest first (newest first, for times).
        top_level_only: Only instances that are not sub-orchestrations.
        custom_status_contains: Instances whose custom status (its JSON text) contains this.
    """

    statuses: frozenset[OrchestrationStatus] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    name: str | None = None
    instance_id_prefix: str | None = None
    parent_instance_id: str | None = None
    page_size: int = 100
    continuation_token: str | None = None
    sort: InstanceSort = InstanceSort.CREATED
    descending: bool = False
    top_level_only: bool = False
    custom_status_contains: str | None = None


@dataclass(frozen=True, slots=True)
class QueryPage:
    """One page of query results; pass ``continuation_token`` back for the next page.

    Attributes:
        states: The instances of this page, in the query's order.
        continuation_token: The token for the next page; None on the last page.
    """

    states: list[OrchestrationState] = field(default_factory=list)
    continuation_token: str | None = None


@dataclass(frozen=True, slots=True)
class PurgeFilter:
    """Which terminal instances :meth:`OrchestrationServiceClient.purge_instances` deletes.

    Attributes:
        created_before: Instances created before this time.
        created_from: Instances created at or after this time.
        statuses: Instances in one of these (terminal) statuses; None: any terminal one.
        completed_before: Instances that finished before this time.
    """

    created_before: datetime | None = None
    created_from: datetime | None = None
    statuses: frozenset[OrchestrationStatus] | None = None
    completed_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule as a store keeps it. The store reads none of the JSON: it keeps the record,
    finds those due, and writes a change only over the revision it was read at.

    Attributes:
        schedule_id: The schedule's id (the key).
        definition: What it starts and when (JSON).
        state: Where its firing stands (JSON).
        next_due_at: When a worker must look at it next (None: never, until it changes).
        claimed_by: The worker looking at it now, until ``next_due_at`` (None: nobody).
        revision: The stored revision; a write names the one it read, and makes it one more.
        created_at: When it was created.
        updated_at: When it last changed.
    """

    schedule_id: str
    definition: str
    state: str
    next_due_at: datetime | None
    claimed_by: str | None
    revision: int
    created_at: datetime
    updated_at: datetime


TERMINAL_STATUSES = frozenset(s for s in OrchestrationStatus if s.is_terminal)

EXECUTION_SUMMARY_LENGTH = 200
"""How many characters of an earlier execution's input and output its record keeps."""

EXECUTIONS_KEPT = 1000
"""How many earlier executions of one instance a store keeps records of (the latest ones)."""


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """An earlier execution of an instance, whose history was dropped when the instance
    started afresh: by continuing as new, or as a finished instance started again. Stores
    keep one compact record per such execution (up to :data:`EXECUTIONS_KEPT`, the latest).

    Attributes:
        instance_id: The instance.
        generation: Which execution it was: 1 for the instance's first, counting on.
        execution_id: Its execution id.
        name: The orchestration it ran.
        version: Its version.
        started_at: When it started: when the execution before it ended (the first: when
            the instance was created).
        ended_at: When the next execution replaced it.
        status: How it ended: CONTINUED_AS_NEW, or COMPLETED, FAILED or TERMINATED.
        input_summary: Its input as JSON text, cut to :data:`EXECUTION_SUMMARY_LENGTH`.
        output_summary: What it handed on (the next execution's input, for
            CONTINUED_AS_NEW) or its output, cut the same way.
    """

    instance_id: str
    generation: int
    execution_id: str | None
    name: str
    version: str | None
    started_at: datetime
    ended_at: datetime
    status: OrchestrationStatus
    input_summary: str | None = None
    output_summary: str | None = None


@dataclass(frozen=True, slots=True)
class StoreDescription:
    """What a store object reaches, for people and for telling hubs apart.

    Attributes:
        kind: The kind of store: memory, sqlite, postgresql, ...
        location: The hub, for people (no secrets): "SQLite '/srv/hub.db'".
        hub: Equal for two store objects on the same task hub.
    """

    kind: str
    location: str
    hub: tuple[str, ...]

    def __str__(self) -> str:
        return self.location


class StoreLifecycle(Protocol):
    """Opening and closing a store (both halves of the seam share it)."""

    async def open(self, *, create: bool = True) -> None:
        """Connect, migrating the task hub's schema if needed. With ``create`` a missing
        hub is created; without, :class:`TaskHubNotFoundError` is raised instead (and
        nothing is created)."""

    async def close(self) -> None:
        """Release connections. The store may be opened again."""

    def describe(self) -> StoreDescription:
        """What this store object reaches (no I/O)."""
        ...


@runtime_checkable
class OrchestrationService(StoreLifecycle, Protocol):
    """The work-item half of the seam: what a worker needs. Methods are coroutines; they
    must be safe to call concurrently from one event loop, and (for shared stores) from
    several processes."""

    # -- orchestration work items -------------------------------------------------------
    async def lock_next_orchestration_work_item(
        self,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories = None,
        work_filter: WorkFilter | None = None,
    ) -> OrchestrationWorkItem | None:
        """Lease the next instance that has visible messages and no live lease, or None;
        with ``work_filter``, only an instance of an orchestration (name and version) it
        names, on one of its task queues.

        When ``known_histories`` holds the instance with a mark equal to the stored history's
        (execution id of the row, history length), the history is not read: the work item
        has ``history_loaded=False`` and an empty ``history``.
        """

    async def renew_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, lease: timedelta
    ) -> None:
        """Extend the lease; :class:`LeaseLostError` if it is no longer held."""

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The history of the instance's current execution (for a work item leased without
        it, whose copy the worker no longer has)."""

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        """Commit one episode atomically while ``fence`` holds (see the module's rules).

        ``commit.finished_activity`` is deleted in the same transaction, or
        :class:`LeaseLostError` if its lease was lost. A :class:`LeaseHeld` fence that
        fails raises :class:`LeaseLostError`, an :class:`InstanceUnchanged` one
        :class:`InstanceBusyError`; either way nothing is written. Returns the activities
        leased per ``commit.eager_activities`` (the first ones, in order; each delivered
        once), or an empty list."""

    async def abandon_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease without consuming anything. With ``retry_at`` the instance
        rests until then: it is not leased again before (unless a terminate arrives), so
        messages that arrive meanwhile cannot overtake the abandoned ones. A lost lease is
        ignored."""

    # -- activity work items --------------------------------------------------------------
    async def lock_next_activity_work_items(
        self,
        owner: str,
        lease: timedelta,
        max_items: int = 1,
        work_filter: WorkFilter | None = None,
    ) -> list[ActivityWorkItem]:
        """Lease up to ``max_items`` visible activities, oldest first (none: an empty list);
        with ``work_filter``, only activities it names, on one of its task queues. An
        activity delivered before that never finished (``dequeue_count`` above 0: its
        worker may have died running it) is leased alone: it is either the only item of
        the batch or not in it."""

    async def renew_activity_work_item(self, work_item: ActivityWorkItem, lease: timedelta) -> None:
        """Extend the lease; :class:`LeaseLostError` if it is no longer held."""

    async def complete_activity_work_item(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> None:
        """Delete the activity and enqueue its result, atomically."""

    async def abandon_activity_work_item(
        self, work_item: ActivityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Hand the activity back unrun: the lease is released, the delivery is not counted
        (``dequeue_count`` goes back down) and it becomes visible again at ``retry_at``."""

    async def record_activity_heartbeat(
        self, work_item: ActivityWorkItem, details: str | None, lease: timedelta
    ) -> None:
        """Keep ``details`` (JSON) as the activity's last heartbeat, seen by its later
        deliveries, and extend its lease; :class:`LeaseLostError` if it is no longer held."""

    # -- entity work items ----------------------------------------------------------------
    async def lock_next_entity_work_item(
        self,
        owner: str,
        lease: timedelta,
        max_messages: int = 100,
        work_filter: WorkFilter | None = None,
    ) -> EntityWorkItem | None:
        """Lease the unleased entity whose oldest deliverable message has waited longest,
        with up to ``max_messages`` of its deliverable messages in order (only its lock
        holder's while it is locked), or None; with ``work_filter``, only an entity whose
        name it names."""

    async def renew_entity_work_item(self, work_item: EntityWorkItem, lease: timedelta) -> None:
        """Extend the lease; :class:`LeaseLostError` if it is no longer held."""

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        """Write the batch (see :class:`EntityCommit`) and release the lease, atomically;
        :class:`LeaseLostError` (and nothing written) if the lease was lost."""

    async def abandon_entity_work_item(
        self, work_item: EntityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease without consuming anything; with ``retry_at`` the entity is not
        leased again before then. A lost lease is ignored."""

    # -- workers and their leases -----------------------------------------------------------
    async def heartbeat_worker(self, worker: WorkerInfo) -> None:
        """Record (or refresh) a worker connected to the hub."""

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""

    async def lease_holders(self) -> list[LeaseHolder]:
        """Who holds live leases on instances and activities, and until when."""

    async def break_leases(self, owner: str) -> int:
        """Expire every lease ``owner`` holds now (a worker that is known to be gone), so
        its work goes to others at once; how many were broken."""

    # -- schedules --------------------------------------------------------------------------
    async def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` schedules with ``next_due_at`` at or before ``now``, soonest first."""

    async def next_schedule_due_at(self) -> datetime | None:
        """The earliest ``next_due_at`` of all schedules (None: none is due ever)."""

    async def update_schedule(self, record: ScheduleRecord) -> bool:
        """Write ``record`` over the stored one if that one still has ``record.revision``;
        the stored revision becomes one more. False (nothing written) if it changed or was
        deleted meanwhile."""


@runtime_checkable
class OrchestrationServiceClient(StoreLifecycle, Protocol):
    """The client half of the seam: creating, signalling, reading and purging instances."""

    async def create_instance(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> None:
        """Create an instance from an :class:`~duratask.history.ExecutionStarted` message.

        If the id exists with a status in ``replaceable``, its history, messages and
        activities are deleted and it starts afresh; if it exists otherwise,
        :class:`OrchestrationAlreadyExistsError` is raised and nothing changes.
        """

    async def send_message(self, message: OrchestrationMessage) -> bool:
        """Enqueue a message to an existing instance; False if there is no such instance."""

    async def get_instance(self, instance_id: str) -> OrchestrationState | None:
        """The stored state of one instance, or None."""

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The history of the instance's current execution (empty if none)."""

    async def query_instances(self, query: InstanceQuery) -> QueryPage:
        """Instances matching the filters, ordered by (created_at, instance_id)."""

    async def count_instances(self, query: InstanceQuery) -> dict[OrchestrationStatus, int]:
        """How many instances match ``query`` (its paging fields ignored), by status; statuses
        with none may be left out."""

    async def purge_instance(self, instance_id: str) -> bool:
        """Delete a terminal instance with its history, messages and activities.
        False (and nothing deleted) if it does not exist or is not terminal."""

    async def purge_instances(self, purge_filter: PurgeFilter) -> int:
        """Delete every terminal instance matching the filter; returns how many."""

    async def send_entity_message(self, message: EntityMessage) -> None:
        """Enqueue a message to an entity (creating its row if it has none)."""

    async def get_entity(self, entity_id: str, include_state: bool = True) -> EntityMetadata | None:
        """One entity, or None if it has no row, or neither state nor lock holder."""

    async def query_entities(self, query: EntityQuery) -> EntityQueryPage:
        """Entities matching the filters, ordered by id."""

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Release locks held by orchestrations that no longer exist or have ended, then
        delete the rows of entities with no state, no lock and no messages."""

    async def list_workers(self) -> list[WorkerInfo]:
        """The workers that reported themselves, most recently heard from first (those gone
        quiet included: compare ``heartbeat_at`` with the time)."""

    async def backlog(self) -> list[BacklogEntry]:
        """The work waiting, by kind and name (orchestrations first, then by name); names
        with nothing waiting are left out."""

    async def lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        """The instance's leases that ran out unreleased or were broken, oldest first (see
        :class:`LeaseTakeover`); empty for an unknown instance."""

    async def list_executions(self, instance_id: str) -> list[ExecutionRecord]:
        """The records of the instance's earlier executions, oldest first (see
        :class:`ExecutionRecord`); empty for an unknown instance or one never restarted."""

    # -- schedules --------------------------------------------------------------------------
    async def create_schedule(self, record: ScheduleRecord) -> None:
        """Store a new schedule; :class:`ScheduleAlreadyExistsError` if the id is taken."""

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """One schedule, or None."""

    async def list_schedules(self, prefix: str | None = None) -> list[ScheduleRecord]:
        """The schedules (whose id starts with ``prefix``), by id."""

    async def update_schedule(self, record: ScheduleRecord) -> bool:
        """See :meth:`OrchestrationService.update_schedule`."""

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule (its runs stay); False if there was none."""

    async def create_task_hub(self) -> None:
        """Create the task hub with whatever holds it (the directories of a SQLite file, a
        PostgreSQL schema), or bring an existing one up to date; the store is left open."""

    async def delete_task_hub(self) -> None:
        """Drop everything the task hub stores."""


@runtime_checkable
class TaskHubStore(OrchestrationService, OrchestrationServiceClient, Protocol):
    """A store: both halves of the seam over one task hub."""


@runtime_checkable
class SupportsWakeUps(Protocol):
    """A store that pushes wake-ups instead of making workers and clients poll.

    Attributes:
        wakes_all_processes: True when every process sharing the hub is woken (not only
            this one).
    """

    wakes_all_processes: bool

    async def wait_for_notification(self, timeout: float, *, kind: str | None = None) -> bool:
        """Wait up to ``timeout`` s for work of ``kind`` ("orchestration" or "activity");
        True if notified (a hint, not a promise), False on timeout."""
        ...

    def watch_instance(self, instance_id: str) -> InstanceWatch:
        """Interest in one instance's runtime status changing (``async with``, then
        ``changed()``); a store may report other changes of the instance too."""
        ...


@runtime_checkable
class SupportsEagerStart(Protocol):
    """A store that can lease a new instance to a worker in the transaction that creates it
    (eager start): a worker in the caller's process runs the first episode at once, with no
    wake-up, fetch or lease of its own. A store without it is created through
    :meth:`OrchestrationServiceClient.create_instance` and leased by a fetch."""

    async def create_and_lease_instance(
        self,
        message: OrchestrationMessage,
        replaceable: frozenset[OrchestrationStatus],
        owner: str,
        lease: timedelta,
        work_filter: WorkFilter | None = None,
        *,
        durable: bool = True,
    ) -> OrchestrationWorkItem | None:
        """Create the instance as :meth:`OrchestrationServiceClient.create_instance` does
        (same errors) and, in the same transaction, lease it to ``owner`` for ``lease``: the
        work item a fetch would have given, with the empty history and the start message
        (delivered once). A crash before the item runs leaves an ordinary lease, which
        expires and is redelivered.

        Returns None (the instance is created, unleased, and waits for a fetch as usual)
        when it replaced an existing instance, when its start is not due yet (a
        ``visible_at`` or scheduled start time ahead) or when ``work_filter`` leaves its
        orchestration out.

        With ``durable=False`` the store may commit without waiting for the commit to be
        durable (it survives the process, not a power loss, until a later durable commit
        of the same store covers it): the caller then tells nobody the instance exists
        before :meth:`wait_durable` has returned. The worker's first episode commit is
        that later commit, so the start costs one durable commit, not two."""
        ...

    async def wait_durable(self, timeout: float) -> None:
        """Return once every write this store object committed before the call is durable:
        at once if all were, else when a durable commit that wrote covers them (the store's
        log is sequential: such a commit makes those before it durable; the stores count
        their episode commits), or after ``timeout`` seconds by making them durable
        itself."""
        ...


def encode_continuation_token(created_at: datetime, instance_id: str) -> str:
    """An opaque keyset token: the sort key of the last row of a page."""
    raw = json.dumps([created_at.isoformat(), instance_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_continuation_token(token: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_continuation_token`; ValueError on a malformed token."""
    try:
        created, instance_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(created), str(instance_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed continuation token {token!r}") from exc
