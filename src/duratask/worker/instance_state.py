"""Derive an instance's stored state from its history: the history is the source of truth."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from duratask import history as h
from duratask.state import OrchestrationState, OrchestrationStatus


def derive_state(
    instance_id: str,
    events: Sequence[h.HistoryEvent],
    *,
    now: datetime,
    custom_status: str | None,
    previous: OrchestrationState | None = None,
) -> OrchestrationState:
    """The instance row for a history: status, name, payloads and times all come from events."""
    started: h.ExecutionStarted | None = None
    completed: h.ExecutionCompleted | None = None
    suspended = False
    for event in events:
        if isinstance(event, h.ExecutionStarted):
            started = event
        elif isinstance(event, h.ExecutionCompleted):
            completed = event
        elif isinstance(event, h.ExecutionSuspended):
            suspended = True
        elif isinstance(event, h.ExecutionResumed):
            suspended = False
    if started is None:
        if previous is None:
            raise ValueError(f"instance {instance_id!r} has no ExecutionStarted event and no row")
        return previous
    if completed is not None:
        status = completed.status
    elif suspended:
        status = OrchestrationStatus.SUSPENDED
    else:
        status = OrchestrationStatus.RUNNING
    return OrchestrationState(
        instance_id=instance_id,
        name=started.name,
        version=started.version,
        runtime_status=status,
        created_at=previous.created_at if previous else started.timestamp,
        last_updated_at=now,
        completed_at=completed.timestamp if completed else None,
        execution_id=started.execution_id,
        serialized_input=started.input,
        serialized_output=completed.result if completed else None,
        serialized_custom_status=custom_status,
        failure_details=completed.failure_details if completed else None,
        parent_instance_id=started.parent.instance_id if started.parent else None,
        scheduled_start_at=started.scheduled_start_time,
    )
