"""An instance's history as timeline rows: what happened, to what, and how long it took.

Completions are paired with what they complete (activities, timers, sub-orchestrations), so
their row carries the time since it was scheduled. An external event's row carries the time
the instance waited for it: from the end of the instance's previous step to the event's
arrival. The end of the execution carries the time since it started. Episode markers
(OrchestratorStarted/Completed) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from duratask import history as h
from duratask.state import FailureDetails, OrchestrationStatus

EXCERPT_LENGTH = 60


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One history event as shown to people."""

    timestamp: datetime
    offset: timedelta  # since the first event
    event: str  # the event class name, e.g. TaskCompleted
    subject: str  # the task, timer, event or orchestration it concerns
    payload: str  # an excerpt of its payload (or failure)
    duration: timedelta | None  # see the module docstring
    failed: bool = False


def excerpt(text: str | None, limit: int = EXCERPT_LENGTH) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    if text is None:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _failure(details: FailureDetails | None) -> str:
    return excerpt(f"{details.error_type}: {details.message}") if details else ""


def _describe(event: h.HistoryEvent, names: dict[int, str]) -> tuple[str, str]:
    """(subject, payload excerpt) of one event."""
    match event:
        case h.ExecutionStarted():
            version = f" v{event.version}" if event.version else ""
            return f"{event.name}{version}", excerpt(event.input)
        case h.ExecutionCompleted():
            return event.status.value, _failure(event.failure_details) or excerpt(event.result)
        case h.TaskScheduled():
            return f"#{event.event_id} {event.name}", excerpt(event.input)
        case h.SubOrchestrationInstanceCreated():
            return f"#{event.event_id} {event.name} ({event.instance_id})", excerpt(event.input)
        case h.TaskCompleted() | h.SubOrchestrationInstanceCompleted():
            return _completes(event.task_scheduled_id, names), excerpt(event.result)
        case h.TaskFailed() | h.SubOrchestrationInstanceFailed():
            return _completes(event.task_scheduled_id, names), _failure(event.failure_details)
        case h.TimerCreated():
            delay = format_duration(max(event.fire_at - event.timestamp, timedelta()))
            return f"#{event.event_id} timer", f"fires after {delay}"
        case h.TimerFired():
            return f"#{event.timer_id} timer", ""
        case h.EventRaised():
            return event.name, excerpt(event.input)
        case h.EventSent():
            return f"#{event.event_id} {event.name} -> {event.instance_id}", excerpt(event.input)
        case h.ExecutionTerminated():
            return "", excerpt(event.input)
        case h.ExecutionSuspended() | h.ExecutionResumed() | h.ExecutionRewound():
            return "", excerpt(event.reason)
        case h.ContinueAsNew():
            return "", excerpt(event.result)
        case h.GenericEvent():
            return "", excerpt(event.data)
    return "", ""


def _completes(task_id: int, names: dict[int, str]) -> str:
    name = names.get(task_id)
    return f"#{task_id} {name}" if name else f"#{task_id}"


def _is_failure(event: h.HistoryEvent) -> bool:
    if isinstance(event, h.TaskFailed | h.SubOrchestrationInstanceFailed):
        return True
    return isinstance(event, h.ExecutionCompleted) and event.status is OrchestrationStatus.FAILED


def timeline_rows(events: Sequence[h.HistoryEvent]) -> list[TimelineRow]:
    """The rows of ``events`` (one execution's history, in order)."""
    if not events:
        return []
    start = min(e.timestamp for e in events)
    names: dict[int, str] = {}
    scheduled_at: dict[int, datetime] = {}
    started_at: datetime | None = None
    last_step_end: datetime | None = None
    rows: list[TimelineRow] = []
    for event in events:
        if isinstance(event, h.OrchestratorCompleted):
            last_step_end = event.timestamp
        if isinstance(event, h.OrchestratorStarted | h.OrchestratorCompleted):
            continue
        duration: timedelta | None = None
        match event:
            case h.ExecutionStarted():
                started_at = event.timestamp
            case h.TaskScheduled() | h.SubOrchestrationInstanceCreated():
                names[event.event_id] = event.name
                scheduled_at[event.event_id] = event.timestamp
            case h.TimerCreated():
                scheduled_at[event.event_id] = event.timestamp
            case (
                h.TaskCompleted()
                | h.TaskFailed()
                | h.SubOrchestrationInstanceCompleted()
                | h.SubOrchestrationInstanceFailed()
            ):
                duration = _since(scheduled_at.get(event.task_scheduled_id), event.timestamp)
            case h.TimerFired():
                duration = _since(scheduled_at.get(event.timer_id), event.timestamp)
            case h.EventRaised():
                duration = _since(last_step_end, event.timestamp)
            case h.ExecutionCompleted() | h.ExecutionTerminated() | h.ContinueAsNew():
                duration = _since(started_at, event.timestamp)
        subject, payload = _describe(event, names)
        rows.append(
            TimelineRow(
                timestamp=event.timestamp,
                offset=event.timestamp - start,
                event=type(event).__name__,
                subject=subject,
                payload=payload,
                duration=duration,
                failed=_is_failure(event),
            )
        )
    return rows


def _since(begin: datetime | None, end: datetime) -> timedelta | None:
    if begin is None:
        return None
    return max(end - begin, timedelta())


def format_duration(value: timedelta | None) -> str:
    """``850 ms``, ``12.3 s``, ``4m 05s``, ``2h 10m``, ``3d 4h``; empty for None."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"
