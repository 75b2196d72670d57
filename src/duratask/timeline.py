"""A readable timeline of an instance's history (for people: the demo, the CLI, logs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from duratask import history as h

_EXCERPT = 60


def _excerpt(text: str | None) -> str:
    if text is None:
        return ""
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


def _describe(event: h.HistoryEvent, names: dict[int, str]) -> tuple[str, str]:
    """(subject, payload) for one event; completions are named after what they complete."""
    match event:
        case h.ExecutionStarted():
            return event.name, _excerpt(event.input)
        case h.ExecutionCompleted():
            detail = event.failure_details
            payload = f"{detail.error_type}: {detail.message}" if detail else event.result
            return event.status.name, _excerpt(payload)
        case h.TaskScheduled() | h.SubOrchestrationInstanceCreated():
            return f"#{event.event_id} {event.name}", _excerpt(event.input)
        case h.TaskCompleted() | h.SubOrchestrationInstanceCompleted():
            return f"#{event.task_scheduled_id} {names.get(event.task_scheduled_id, '')}", _excerpt(
                event.result
            )
        case h.TaskFailed() | h.SubOrchestrationInstanceFailed():
            d = event.failure_details
            subject = f"#{event.task_scheduled_id} {names.get(event.task_scheduled_id, '')}"
            return subject, _excerpt(f"{d.error_type}: {d.message}")
        case h.TimerCreated():
            return f"#{event.event_id} timer", f"fires {event.fire_at.isoformat()}"
        case h.TimerFired():
            return f"#{event.timer_id} timer", ""
        case h.EventRaised():
            return event.name, _excerpt(event.input)
        case h.EventSent():
            return f"#{event.event_id} {event.name} -> {event.instance_id}", _excerpt(event.input)
        case h.ExecutionTerminated():
            return "", _excerpt(event.input)
        case h.ExecutionSuspended() | h.ExecutionResumed() | h.ExecutionRewound():
            return "", event.reason or ""
        case h.ContinueAsNew():
            return "", _excerpt(event.result)
    return "", ""


def format_timeline(events: Sequence[h.HistoryEvent]) -> str:
    """One line per event: offset from the start, event type, subject, payload, task duration.

    Episode markers (OrchestratorStarted/Completed) are left out to keep it readable.
    """
    if not events:
        return "(no history)"
    start = min(e.timestamp for e in events)
    names: dict[int, str] = {}
    scheduled_at: dict[int, datetime] = {}
    lines = []
    for event in events:
        if isinstance(event, h.OrchestratorStarted | h.OrchestratorCompleted):
            continue
        if isinstance(event, h.TaskScheduled | h.SubOrchestrationInstanceCreated):
            names[event.event_id] = event.name
        if isinstance(event, h.TaskScheduled | h.SubOrchestrationInstanceCreated | h.TimerCreated):
            scheduled_at[event.event_id] = event.timestamp
        subject, payload = _describe(event, names)
        task_id = getattr(event, "task_scheduled_id", getattr(event, "timer_id", None))
        took = ""
        if task_id is not None and task_id in scheduled_at:
            took = f"{(event.timestamp - scheduled_at[task_id]).total_seconds() * 1000:.0f} ms"
        offset = (event.timestamp - start).total_seconds()
        line = f"{offset:>9.3f}s  {type(event).__name__:<34} {subject:<28} {payload:<40} {took}"
        lines.append(line.rstrip())
    return "\n".join(lines)
