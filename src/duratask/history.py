"""History events: the event-sourced record of an orchestration instance.

Every step of an orchestration is appended to its history as one of these frozen
dataclasses. The event types and their numbering follow the Durable Task Framework's
``EventType`` so histories read the same way to anyone who knows that model.

Payloads (inputs, results, event data) are kept as already-serialised JSON text
(``str | None``): the history never holds live Python objects, only what was stored.

Scheduling events (``TaskScheduled``, ``TimerCreated``, ``SubOrchestrationInstanceCreated``,
``EventSent``) carry the orchestration's sequence number as ``event_id``; the matching
completion events point back at it through ``task_scheduled_id`` / ``timer_id``. Other
events use ``event_id = -1``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any, ClassVar

import orjson

from duratask._compact_json import compact_encoder, loads
from duratask.state import DEFAULT_TASK_QUEUE, FailureDetails, OrchestrationStatus


class EventType(IntEnum):
    """The kinds of history event, numbered as in the Durable Task Framework."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2  # reserved: failures are ExecutionCompleted with status FAILED
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_INSTANCE_CREATED = 7
    SUB_ORCHESTRATION_INSTANCE_COMPLETED = 8
    SUB_ORCHESTRATION_INSTANCE_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    GENERIC_EVENT = 17
    HISTORY_STATE = 18  # reserved
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20
    EXECUTION_REWOUND = 21
    ENTITY_OPERATION_SIGNALED = 22
    ENTITY_OPERATION_CALLED = 23
    ENTITY_OPERATION_COMPLETED = 24
    ENTITY_OPERATION_FAILED = 25
    ENTITY_LOCK_REQUESTED = 26
    ENTITY_LOCK_GRANTED = 27
    ENTITY_UNLOCK_SENT = 28


@dataclass(frozen=True, slots=True)
class ParentInstanceInfo:
    """Who started a sub-orchestration, so its result can be sent back."""

    instance_id: str
    execution_id: str
    name: str
    task_scheduled_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent:
    """Base of every history event.

    A client reads an instance's history with
    :meth:`~duratask.client.AsyncTaskHubClient.get_orchestration_history`; each event is a
    frozen dataclass of a subclass per :class:`EventType`, whose other fields hold the
    event's payloads as JSON text.

    Attributes:
        event_type: The kind of event (a class constant of each subclass).
        event_id: For events that schedule something (an activity, a timer, a
            sub-orchestration, a sent event), the orchestration's sequence number, which
            the matching completion refers to; -1 for the other events.
        timestamp: When the event was recorded (aware UTC).
    """

    event_type: ClassVar[EventType]
    event_id: int = -1
    timestamp: datetime

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, tagged with the event type's name."""
        out: dict[str, Any] = {"type": _TYPE_NAMES[type(self)]}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if value is None:
                if name not in _OMITTED_WHEN_NONE:
                    out[name] = None
            elif type(value) in _PLAIN_JSON:
                if _OMITTED_DEFAULTS.get(name) != value:
                    out[name] = value
            elif type(value) is datetime:
                out[name] = _isoformat(value)
            else:
                out[name] = _encode_field(value)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionStarted(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.EXECUTION_STARTED
    name: str
    version: str | None = None
    input: str | None = None
    instance_id: str
    execution_id: str
    parent: ParentInstanceInfo | None = None
    scheduled_start_time: datetime | None = None
    tags: dict[str, str] | None = None
    # W3C trace context (traceparent, tracestate) of the span that started this execution.
    trace_context: dict[str, str] | None = None
    # Only on the start message of a continue-as-new: the events the previous execution
    # passed on (external events, and others sent to the instance it had not applied yet),
    # delivered right after this start, ahead of anything sent since. One message keeps them
    # in order and together; the history records them after the start, which itself is
    # recorded without them.
    carried_events: tuple[HistoryEvent, ...] | None = None
    # The task queue the instance runs on (its continue-as-new keeps it).
    task_queue: str = DEFAULT_TASK_QUEUE


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionCompleted(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.EXECUTION_COMPLETED
    status: OrchestrationStatus
    result: str | None = None
    failure_details: FailureDetails | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionTerminated(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.EXECUTION_TERMINATED
    input: str | None = None
    recurse: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskScheduled(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.TASK_SCHEDULED
    name: str
    version: str | None = None
    input: str | None = None
    # W3C trace context of the orchestration span that scheduled the activity.
    trace_context: dict[str, str] | None = None
    # Which try of a retried call this is, and its timeouts (per delivery).
    attempt: int = 1
    timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    # The task queue the activity was sent to.
    task_queue: str = DEFAULT_TASK_QUEUE


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCompleted(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.TASK_COMPLETED
    task_scheduled_id: int
    result: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFailed(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.TASK_FAILED
    task_scheduled_id: int
    failure_details: FailureDetails
    # The details the activity last reported with a heartbeat (JSON), for its next try.
    heartbeat_details: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubOrchestrationInstanceCreated(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.SUB_ORCHESTRATION_INSTANCE_CREATED
    name: str
    version: str | None = None
    instance_id: str
    input: str | None = None
    # The task queue the sub-orchestration was started on.
    task_queue: str = DEFAULT_TASK_QUEUE


@dataclass(frozen=True, slots=True, kw_only=True)
class SubOrchestrationInstanceCompleted(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED
    task_scheduled_id: int
    result: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubOrchestrationInstanceFailed(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.SUB_ORCHESTRATION_INSTANCE_FAILED
    task_scheduled_id: int
    failure_details: FailureDetails


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerCreated(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.TIMER_CREATED
    fire_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.TIMER_FIRED
    timer_id: int
    fire_at: datetime
    # Set when tracing: the span that created the timer, and when it did.
    trace_context: dict[str, str] | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestratorStarted(HistoryEvent):
    """Opens an episode; its timestamp is the orchestration's ``current_utc_datetime``."""

    event_type: ClassVar[EventType] = EventType.ORCHESTRATOR_STARTED


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestratorCompleted(HistoryEvent):
    """Closes an episode."""

    event_type: ClassVar[EventType] = EventType.ORCHESTRATOR_COMPLETED


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSent(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.EVENT_SENT
    instance_id: str
    name: str
    input: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRaised(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.EVENT_RAISED
    name: str
    input: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContinueAsNew(HistoryEvent):
    """The execution ended by starting over with ``result`` as the new input."""

    event_type: ClassVar[EventType] = EventType.CONTINUE_AS_NEW
    result: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GenericEvent(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.GENERIC_EVENT
    data: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionSuspended(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.EXECUTION_SUSPENDED
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionResumed(HistoryEvent):
    event_type: ClassVar[EventType] = EventType.EXECUTION_RESUMED
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionRewound(HistoryEvent):
    """A FAILED execution was rewound: its last failures are forgotten and it runs again."""

    event_type: ClassVar[EventType] = EventType.EXECUTION_REWOUND
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityOperationSignaled(HistoryEvent):
    """The orchestration signalled an entity (one-way, optionally delayed)."""

    event_type: ClassVar[EventType] = EventType.ENTITY_OPERATION_SIGNALED
    request_id: str
    operation: str
    target_instance_id: str
    input: str | None = None
    scheduled_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityOperationCalled(HistoryEvent):
    """The orchestration called an entity's operation and awaits its result."""

    event_type: ClassVar[EventType] = EventType.ENTITY_OPERATION_CALLED
    request_id: str
    operation: str
    target_instance_id: str
    input: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityOperationCompleted(HistoryEvent):
    """An entity operation the orchestration called returned ``result``."""

    event_type: ClassVar[EventType] = EventType.ENTITY_OPERATION_COMPLETED
    task_scheduled_id: int
    request_id: str
    result: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityOperationFailed(HistoryEvent):
    """An entity operation the orchestration called raised."""

    event_type: ClassVar[EventType] = EventType.ENTITY_OPERATION_FAILED
    task_scheduled_id: int
    request_id: str
    failure_details: FailureDetails


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityLockRequested(HistoryEvent):
    """The orchestration asked for the locks of a critical section."""

    event_type: ClassVar[EventType] = EventType.ENTITY_LOCK_REQUESTED
    critical_section_id: str
    lock_set: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityLockGranted(HistoryEvent):
    """Every entity of a critical section is locked for the orchestration."""

    event_type: ClassVar[EventType] = EventType.ENTITY_LOCK_GRANTED
    task_scheduled_id: int
    critical_section_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityUnlockSent(HistoryEvent):
    """The orchestration released an entity of its critical section (``event_id`` -1 when it
    ended while holding it)."""

    event_type: ClassVar[EventType] = EventType.ENTITY_UNLOCK_SENT
    critical_section_id: str
    target_instance_id: str


_EVENT_CLASSES: dict[str, type[HistoryEvent]] = {
    cls.event_type.name: cls
    for cls in (
        ExecutionStarted,
        ExecutionCompleted,
        ExecutionTerminated,
        TaskScheduled,
        TaskCompleted,
        TaskFailed,
        SubOrchestrationInstanceCreated,
        SubOrchestrationInstanceCompleted,
        SubOrchestrationInstanceFailed,
        TimerCreated,
        TimerFired,
        OrchestratorStarted,
        OrchestratorCompleted,
        EventSent,
        EventRaised,
        ContinueAsNew,
        GenericEvent,
        ExecutionSuspended,
        ExecutionResumed,
        ExecutionRewound,
        EntityOperationSignaled,
        EntityOperationCalled,
        EntityOperationCompleted,
        EntityOperationFailed,
        EntityLockRequested,
        EntityLockGranted,
        EntityUnlockSent,
    )
}
# The enum's ``name`` is a descriptor call; events are serialised often enough to look it up.
_TYPE_NAMES: dict[type[HistoryEvent], str] = {cls: name for name, cls in _EVENT_CLASSES.items()}
# What people read (the CLI, the dashboard, exported JSON): the class names, as the Durable
# Task Framework spells its events (``TaskScheduled``). Storage keeps the enum's names.
_CLASSES_BY_ANY_NAME: dict[str, type[HistoryEvent]] = {
    **_EVENT_CLASSES,
    **{cls.__name__: cls for cls in _EVENT_CLASSES.values()},
}
EVENT_NAMES: tuple[str, ...] = tuple(cls.__name__ for cls in _EVENT_CLASSES.values())


def event_type_name(event: HistoryEvent) -> str:
    """The stored name of the event's type (``event.event_type.name``)."""
    return _TYPE_NAMES[type(event)]


def result_task_id(event: HistoryEvent) -> int | None:
    """The id of the task, timer or sub-orchestration a result event answers (None if the
    event is no result)."""
    if isinstance(event, TimerFired):
        return event.timer_id
    if isinstance(event, _TASK_RESULTS):
        return event.task_scheduled_id
    return None


_TASK_RESULTS = (
    TaskCompleted,
    TaskFailed,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceFailed,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityLockGranted,
)


_DATETIME_FIELDS = frozenset(
    {"timestamp", "fire_at", "scheduled_start_time", "created_at", "scheduled_time"}
)
# Optional tracing fields are left out of the JSON when unset, so histories written without
# tracing stay as they were (and older histories, which lack them, read the same way).
_OMITTED_WHEN_NONE = frozenset(
    {
        "trace_context",
        "created_at",
        "carried_events",
        "timeout",
        "heartbeat_timeout",
        "heartbeat_details",
        "scheduled_time",
    }
)
# Left out at their default, too: histories without them read the same way.
_OMITTED_DEFAULTS: dict[str, Any] = {"attempt": 1, "task_queue": DEFAULT_TASK_QUEUE}
_DURATION_FIELDS = frozenset({"timeout", "heartbeat_timeout"})


_PLAIN_JSON = frozenset({str, int, bool, float})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


# The last timestamp formatted: an episode's events mostly share one datetime object.
_last_isoformat: tuple[datetime | None, str] = (None, "")


def _isoformat(value: datetime) -> str:
    global _last_isoformat
    last = _last_isoformat  # one tuple, swapped whole: safe across threads
    if last[0] is value:
        return last[1]
    text = value.isoformat()
    _last_isoformat = (value, text)
    return text


def _encode_field(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, OrchestrationStatus):
        return value.name
    if isinstance(value, FailureDetails):
        return value.to_dict()
    if isinstance(value, ParentInstanceInfo):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):  # carried events, or a lock set
        return [e.to_dict() if isinstance(e, HistoryEvent) else e for e in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def event_export_dict(event: HistoryEvent) -> dict[str, Any]:
    """:meth:`HistoryEvent.to_dict` with the event named by its class (``TaskScheduled``), as
    the CLI, the dashboard and exported histories name it."""
    out = event.to_dict()
    out["type"] = type(event).__name__
    if isinstance(event, ExecutionStarted) and event.carried_events is not None:
        out["carried_events"] = [event_export_dict(e) for e in event.carried_events]
    return out


def event_from_dict(data: dict[str, Any]) -> HistoryEvent:
    """Rebuild an event from :meth:`HistoryEvent.to_dict` or :func:`event_export_dict`
    output (the type named either way: ``TASK_SCHEDULED`` or ``TaskScheduled``)."""
    fields = dict(data)
    type_name = fields.pop("type")
    try:
        cls = _CLASSES_BY_ANY_NAME[type_name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown history event type {type_name!r}") from None
    for key in _DATETIME_FIELDS & fields.keys():
        if fields[key] is not None:
            fields[key] = datetime.fromisoformat(fields[key])
    if "status" in fields:
        fields["status"] = OrchestrationStatus[fields["status"]]
    if fields.get("failure_details") is not None:
        fields["failure_details"] = FailureDetails.from_dict(fields["failure_details"])
    if fields.get("parent") is not None:
        fields["parent"] = ParentInstanceInfo(**fields["parent"])
    for key in _DURATION_FIELDS & fields.keys():
        if fields[key] is not None:
            fields[key] = timedelta(seconds=fields[key])
    if fields.get("lock_set") is not None:
        fields["lock_set"] = tuple(fields["lock_set"])
    if fields.get("carried_events") is not None:
        fields["carried_events"] = tuple(event_from_dict(e) for e in fields["carried_events"])
    return cls(**fields)


_compact = compact_encoder()


_PLAIN_ANNOTATIONS = frozenset({"int", "str", "bool", "str | None", "int | None"})


def _fast_dict_source(cls: type[HistoryEvent]) -> str:
    """Source of a function giving :meth:`HistoryEvent.to_dict` of a ``cls`` event, its UTC
    datetimes left as they are (orjson writes them as ``isoformat`` does), or None when a
    field holds anything else than plain values (the general path then serves it)."""
    lines = [f"def fast(e):\n    out = {{'type': {_TYPE_NAMES[cls]!r}}}"]
    for f in dataclasses.fields(cls):
        name, optional = f.name, "None" in str(f.type)
        lines.append(f"    v = e.{name}")
        if name in _DATETIME_FIELDS:
            check = "type(v) is not datetime or v.tzinfo is not UTC"
            lines.append(f"    if {'v is not None and (' + check + ')' if optional else check}:")
            lines.append("        return None")
        elif str(f.type) not in _PLAIN_ANNOTATIONS:
            lines.append("    if v is not None:\n        return None")
            if name in _OMITTED_WHEN_NONE:
                continue  # None here: left out
        if name in _OMITTED_WHEN_NONE:
            lines.append(f"    if v is not None:\n        out[{name!r}] = v")
        elif name in _OMITTED_DEFAULTS:
            lines.append(f"    if v != {_OMITTED_DEFAULTS[name]!r}:\n        out[{name!r}] = v")
        else:
            lines.append(f"    out[{name!r}] = v")
    lines.append("    return out")
    return "\n".join(lines)


def _fast_dict_function(cls: type[HistoryEvent]) -> Callable[[HistoryEvent], Any]:
    namespace: dict[str, Any] = {"datetime": datetime, "UTC": UTC}
    exec(_fast_dict_source(cls), namespace)  # the source is built above from field names
    fast: Callable[[HistoryEvent], Any] = namespace["fast"]
    return fast


_FAST_DICTS: dict[type, Callable[[HistoryEvent], dict[str, Any] | None]] = {}


def _fast_dict(event: HistoryEvent) -> dict[str, Any] | None:
    cls = type(event)
    fast = _FAST_DICTS.get(cls)
    if fast is None:
        fast = _FAST_DICTS[cls] = _fast_dict_function(cls)
    return fast(event)


def event_to_json(event: HistoryEvent) -> str:
    """Serialise one event as compact JSON text (the storage format).

    orjson writes most events several times faster than the standard library; its text is
    used when it is what the standard encoder gives (ASCII-escaped, the same spelling of
    every value). Events with fields orjson would spell otherwise (floats, non-UTC times,
    non-ASCII text) take the standard path."""
    plain = _fast_dict(event)
    if plain is not None:
        try:
            data = orjson.dumps(plain)
        except TypeError:  # e.g. an integer past 64 bits
            pass
        else:
            if data.isascii() and b"\x7f" not in data:
                return data.decode()
    return _compact(event.to_dict())


def event_from_json(text: str) -> HistoryEvent:
    """Parse JSON text written by :func:`event_to_json`."""
    return event_from_dict(loads(text))


def history_to_json(events: list[HistoryEvent]) -> str:
    """A whole history as a JSON array (what ``duratask history --output json`` exports),
    each event's ``type`` its class name (``TaskScheduled``)."""
    return json.dumps([event_export_dict(e) for e in events], indent=2)


def history_from_json(text: str) -> list[HistoryEvent]:
    """Parse a history exported by :func:`history_to_json`."""
    return [event_from_dict(d) for d in json.loads(text)]
