"""Rewind: how a FAILED execution's history reads once it has been rewound.

A rewind forgets the failure that ended the execution, so the code runs on from its last
step as if that failure had not happened yet: the ``ExecutionCompleted`` (FAILED) goes, and
so do the task and sub-orchestration failures delivered in the episode that failed. Every
earlier event stays, so completed work is kept and earlier retries replay as before. The
stored history is never rewritten: replay reads it through :func:`rewound_view`.
"""

from __future__ import annotations

from collections.abc import Sequence

from duratask import history as h
from duratask.state import OrchestrationStatus

_FAILURES = (h.TaskFailed, h.SubOrchestrationInstanceFailed)


def final_failure(events: Sequence[h.HistoryEvent], start: int = 0) -> set[int]:
    """Positions a rewind at the end of ``events`` forgets (empty if the execution did not
    end FAILED at or after ``start``)."""
    completed = None
    for i in range(len(events) - 1, start - 1, -1):
        event = events[i]
        if isinstance(event, h.ExecutionCompleted):
            if event.status is OrchestrationStatus.FAILED:
                completed = i
            break
        if isinstance(event, h.ExecutionRewound):
            break
    if completed is None:
        return set()
    forgotten = {completed}
    for i in range(completed - 1, start - 1, -1):
        event = events[i]
        if isinstance(event, h.OrchestratorStarted):
            break
        if isinstance(event, _FAILURES):
            forgotten.add(i)
    return forgotten


def locks_released_by_failure(events: Sequence[h.HistoryEvent]) -> list[str]:
    """The entities whose locks the execution let go of in the episode that ended it
    FAILED: the failure left a critical section (or the execution ended inside one), so a
    rewind would run the code on inside a section whose locks are gone. Empty if it did
    not end FAILED, or let no lock go as it failed."""
    forgotten = final_failure(events)
    if not forgotten:
        return []
    released = []
    for event in reversed(events[: min(forgotten)]):
        if isinstance(event, h.OrchestratorStarted):
            break
        if isinstance(event, h.EntityUnlockSent):
            released.append(event.target_instance_id)
    return sorted(set(released))


def failed_children(events: Sequence[h.HistoryEvent]) -> list[str]:
    """The sub-orchestrations whose failures a rewind of this FAILED execution forgets (and
    so rewinds too)."""
    forgotten = final_failure(events)
    children = {
        e.event_id: e.instance_id
        for e in events
        if isinstance(e, h.SubOrchestrationInstanceCreated)
    }
    return [
        children[e.task_scheduled_id]
        for i, e in enumerate(events)
        if i in forgotten
        and isinstance(e, h.SubOrchestrationInstanceFailed)
        and e.task_scheduled_id in children
    ]


def rewound_view(events: Sequence[h.HistoryEvent]) -> Sequence[h.HistoryEvent]:
    """The history as replay must see it: failures forgotten by each rewind left out."""
    forgotten: set[int] = set()
    since = 0
    for i, event in enumerate(events):
        if isinstance(event, h.ExecutionRewound):
            forgotten |= final_failure(events[:i], since)
            since = i
    if not forgotten:
        return events
    return [e for i, e in enumerate(events) if i not in forgotten]


def has_ended(events: Sequence[h.HistoryEvent]) -> bool:
    """Whether the execution recorded in ``events`` has completed (and was not rewound)."""
    for event in reversed(events):
        if isinstance(event, h.ExecutionRewound):
            return False
        if isinstance(event, h.ExecutionCompleted):
            return True
    return False
