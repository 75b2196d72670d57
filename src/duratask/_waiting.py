"""Why an instance waits: whether any connected worker registered what it needs next.

A worker reports itself every few seconds (see ``worker/_presence.py``); one not heard from
for :data:`CONNECTED_WITHIN` counts as gone. An instance that waits to start (PENDING) needs
a worker that registered its orchestration (name and version); a running one also needs,
for each activity it waits for, a worker that registered that activity.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from duratask.backends.base import WorkerInfo
from duratask.history import (
    ExecutionStarted,
    HistoryEvent,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceCreated,
    SubOrchestrationInstanceFailed,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from duratask.state import DEFAULT_TASK_QUEUE, OrchestrationState, OrchestrationStatus

CONNECTED_WITHIN = timedelta(seconds=30)
_WAITING = (OrchestrationStatus.PENDING, OrchestrationStatus.RUNNING)


def connected(workers: Iterable[WorkerInfo], now: datetime) -> list[WorkerInfo]:
    """The workers heard from within :data:`CONNECTED_WITHIN` of ``now``."""
    return [w for w in workers if now - w.heartbeat_at <= CONNECTED_WITHIN]


def awaited_activities(history: Sequence[HistoryEvent]) -> list[tuple[str, str]]:
    """The (name, task queue) of the activities the execution scheduled and has no result
    for yet."""
    pending: dict[int, tuple[str, str]] = {}
    for event in history:
        if isinstance(event, TaskScheduled):
            pending[event.event_id] = (event.name, event.task_queue)
        elif isinstance(event, TaskCompleted | TaskFailed):
            pending.pop(event.task_scheduled_id, None)
    return sorted(set(pending.values()))


def orchestration_label(name: str, version: str | None) -> str:
    return f"{name!r}" if version is None else f"{name!r} version {version!r}"


def why_waiting(
    state: OrchestrationState,
    history: Sequence[HistoryEvent] | None,
    workers: Sequence[WorkerInfo],
) -> str | None:
    """What no connected worker (``workers``) serves (a task queue) or registered that the
    instance waits for, as a sentence; None when it waits for nothing of the kind (or has
    finished)."""
    if state.runtime_status not in _WAITING:
        return None
    label = orchestration_label(state.name, state.version)
    needs: list[tuple[str, str, Callable[[WorkerInfo], bool]]] = [
        (
            f"orchestration {label}",
            state.task_queue,
            lambda w: w.runs_orchestration(state.name, state.version),
        )
    ]
    if state.runtime_status is OrchestrationStatus.RUNNING and history is not None:
        for activity, queue in awaited_activities(history):
            needs.append(
                (
                    f"activity {activity!r}",
                    queue,
                    functools.partial(WorkerInfo.runs_activity, name=activity),
                )
            )
    unserved: list[str] = []
    missing: dict[str, list[str]] = {}
    for what, queue, can_run in needs:
        serving = [w for w in workers if w.serves_queue(queue)]
        # With no worker at all, the default queue's missing registration says it best.
        if not serving and (workers or queue != DEFAULT_TASK_QUEUE):
            if queue not in unserved:
                unserved.append(queue)
        elif not any(can_run(w) for w in serving):
            missing.setdefault(queue, []).append(what)
    if not unserved and not missing:
        return None
    reasons = [f"no connected worker serves task queue {queue!r}" for queue in unserved]
    for queue, whats in missing.items():
        on = "" if queue == DEFAULT_TASK_QUEUE else f" on task queue {queue!r}"
        reasons.append(f"no connected worker{on} has registered {' or '.join(whats)}")
    return f"{'; '.join(reasons)} ({len(workers)} worker(s) connected); it waits until one does"


@dataclass(frozen=True, slots=True)
class OpenItem:
    """Something the current execution started and has no result for yet.

    ``kind`` is ``activity``, ``timer`` or ``sub-orchestration``; ``since`` is when it was
    scheduled; ``due`` is a timer's fire time; ``attempt`` an activity's retry attempt;
    ``instance_id`` a sub-orchestration's id.
    """

    kind: str
    task_id: int
    name: str
    since: datetime
    attempt: int | None = None
    due: datetime | None = None
    instance_id: str | None = None


def open_items(history: Sequence[HistoryEvent]) -> list[OpenItem]:
    """What the current execution of ``history`` waits on, in the order it was started.

    External events are not among them: a history records an event when it arrives, not
    while the orchestration waits for it."""
    items: dict[int, OpenItem] = {}
    for event in history:
        match event:
            case ExecutionStarted():
                items.clear()  # a new execution (continue-as-new resets the history)
            case TaskScheduled():
                items[event.event_id] = OpenItem(
                    "activity", event.event_id, event.name, event.timestamp, attempt=event.attempt
                )
            case TimerCreated():
                items[event.event_id] = OpenItem(
                    "timer", event.event_id, "timer", event.timestamp, due=event.fire_at
                )
            case SubOrchestrationInstanceCreated():
                items[event.event_id] = OpenItem(
                    "sub-orchestration",
                    event.event_id,
                    event.name,
                    event.timestamp,
                    instance_id=event.instance_id,
                )
            case (
                TaskCompleted()
                | TaskFailed()
                | SubOrchestrationInstanceCompleted()
                | SubOrchestrationInstanceFailed()
            ):
                items.pop(event.task_scheduled_id, None)
            case TimerFired():
                items.pop(event.timer_id, None)
    return list(items.values())
