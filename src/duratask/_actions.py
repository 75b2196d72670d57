"""Actions: what one orchestration episode decided to do next.

The replay engine turns (past events, new events) into a list of these; the worker turns
them into history events and outbound messages and commits both in one transaction.
``id`` is the orchestration's sequence number for the scheduling action: replayed history
events must match an action by this id, by kind and by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from duratask.history import HistoryEvent
from duratask.state import FailureDetails, OrchestrationStatus


@dataclass(frozen=True, slots=True)
class ScheduleTaskAction:
    id: int
    name: str
    version: str | None = None
    input: str | None = None
    attempt: int = 1  # which try of a retried call
    timeout: timedelta | None = None  # start to close, per delivery
    heartbeat_timeout: timedelta | None = None
    heartbeat_details: str | None = None  # from the try before, for the activity to resume
    task_queue: str | None = None  # None: the instance's own


@dataclass(frozen=True, slots=True)
class CreateTimerAction:
    id: int
    fire_at: datetime


@dataclass(frozen=True, slots=True)
class CreateSubOrchestrationAction:
    id: int
    name: str
    instance_id: str
    version: str | None = None
    input: str | None = None
    task_queue: str | None = None  # None: the instance's own


@dataclass(frozen=True, slots=True)
class SendEventAction:
    id: int
    instance_id: str
    name: str
    data: str | None = None


@dataclass(frozen=True, slots=True)
class SignalEntityAction:
    id: int
    entity_id: str
    operation: str
    request_id: str
    input: str | None = None
    signal_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class CallEntityAction:
    id: int
    entity_id: str
    operation: str
    request_id: str
    input: str | None = None


@dataclass(frozen=True, slots=True)
class LockEntitiesAction:
    """Ask for the locks of ``lock_set`` (sorted: the global lock order), one after another."""

    id: int
    critical_section_id: str
    lock_set: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnlockEntityAction:
    """Release one entity of a critical section; ``id`` is -1 when the orchestration ended
    while holding it (not matched on replay)."""

    id: int
    critical_section_id: str
    entity_id: str


@dataclass(frozen=True, slots=True)
class TerminateOrchestrationAction:
    """Terminate another instance (used to recurse a termination into sub-orchestrations)."""

    instance_id: str
    reason: str | None = None
    recurse: bool = True


@dataclass(frozen=True, slots=True)
class CompleteOrchestrationAction:
    """The execution ended: completed, failed, terminated or continued as new.

    For CONTINUED_AS_NEW, ``result`` is the new input and ``carryover_events`` are the
    external events the new execution must still see.
    """

    status: OrchestrationStatus
    result: str | None = None
    failure_details: FailureDetails | None = None
    new_version: str | None = None
    carryover_events: tuple[HistoryEvent, ...] = field(default=())


SchedulingAction = (
    ScheduleTaskAction
    | CreateTimerAction
    | CreateSubOrchestrationAction
    | SendEventAction
    | SignalEntityAction
    | CallEntityAction
    | LockEntitiesAction
    | UnlockEntityAction
)
OrchestratorAction = (
    SchedulingAction
    | TerminateOrchestrationAction
    | CompleteOrchestrationAction
    | UnlockEntityAction
)
