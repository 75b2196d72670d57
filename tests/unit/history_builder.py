"""Build orchestration histories fluently, so a test reads like the history it describes.

    b = HistoryBuilder().episode().started("orch", input=1).task_scheduled(0, "double").done()
    b.episode(at=T0 + 5 * SEC).task_completed(0, result=2)
    past, new = b.split()  # everything before the last ``mark()`` / ``episode()`` is past

Payload arguments are Python values, stored as compact JSON text like the codec does.
The clock starts at ``T0`` and only moves when ``episode(at=...)`` or ``advance()`` says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask import history as h
from duratask._engine import ExecutionResult, OrchestrationExecutor
from duratask._registry import Registry
from duratask.converter import PayloadCodec
from duratask.state import FailureDetails, OrchestrationStatus

T0 = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)
INSTANCE_ID = "inst-1"
EXECUTION_ID = "exec-1"


def payload(value: Any) -> str | None:
    """The stored JSON text for a value (None stays None)."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


class HistoryBuilder:
    def __init__(
        self,
        start: datetime = T0,
        *,
        instance_id: str = INSTANCE_ID,
        execution_id: str = EXECUTION_ID,
    ) -> None:
        self.now = start
        self.instance_id = instance_id
        self.execution_id = execution_id
        self._events: list[h.HistoryEvent] = []
        self._mark = 0

    # -- clock and structure ----------------------------------------------------------------
    def advance(self, delta: timedelta) -> HistoryBuilder:
        self.now += delta
        return self

    def mark(self) -> HistoryBuilder:
        """Events added from here on are "new" in :meth:`split`."""
        self._mark = len(self._events)
        return self

    def episode(self, at: datetime | None = None, *, new: bool = False) -> HistoryBuilder:
        """An OrchestratorStarted (at the builder's clock, or ``at``); ``new`` marks it first."""
        if at is not None:
            self.now = at
        if new:
            self.mark()
        return self._add(h.OrchestratorStarted(timestamp=self.now))

    def done(self) -> HistoryBuilder:
        return self._add(h.OrchestratorCompleted(timestamp=self.now))

    def add(self, *events: h.HistoryEvent) -> HistoryBuilder:
        self._events.extend(events)
        return self

    def build(self) -> list[h.HistoryEvent]:
        return list(self._events)

    def split(self) -> tuple[list[h.HistoryEvent], list[h.HistoryEvent]]:
        """(past events, new events), divided at the last mark."""
        return self._events[: self._mark], self._events[self._mark :]

    # -- events -----------------------------------------------------------------------------
    def started(
        self,
        name: str,
        input: Any = None,
        *,
        version: str | None = None,
        parent: h.ParentInstanceInfo | None = None,
        scheduled_start_time: datetime | None = None,
    ) -> HistoryBuilder:
        return self._add(
            h.ExecutionStarted(
                timestamp=self.now,
                name=name,
                version=version,
                input=payload(input),
                instance_id=self.instance_id,
                execution_id=self.execution_id,
                parent=parent,
                scheduled_start_time=scheduled_start_time,
            )
        )

    def task_scheduled(self, id: int, name: str, input: Any = None) -> HistoryBuilder:
        return self._add(
            h.TaskScheduled(event_id=id, timestamp=self.now, name=name, input=payload(input))
        )

    def task_completed(self, id: int, result: Any = None) -> HistoryBuilder:
        return self._add(
            h.TaskCompleted(timestamp=self.now, task_scheduled_id=id, result=payload(result))
        )

    def task_failed(
        self,
        id: int,
        message: str = "boom",
        error_type: str = "ValueError",
        *,
        non_retriable: bool = False,
    ) -> HistoryBuilder:
        details = FailureDetails(error_type, message, is_non_retriable=non_retriable)
        return self._add(
            h.TaskFailed(timestamp=self.now, task_scheduled_id=id, failure_details=details)
        )

    def timer_created(self, id: int, fire_at: datetime) -> HistoryBuilder:
        return self._add(h.TimerCreated(event_id=id, timestamp=self.now, fire_at=fire_at))

    def timer_fired(self, id: int, fire_at: datetime | None = None) -> HistoryBuilder:
        if fire_at is None:
            fire_at = next(
                e.fire_at
                for e in self._events
                if isinstance(e, h.TimerCreated) and e.event_id == id
            )
        return self._add(h.TimerFired(timestamp=self.now, timer_id=id, fire_at=fire_at))

    def sub_created(
        self, id: int, name: str, instance_id: str, input: Any = None
    ) -> HistoryBuilder:
        return self._add(
            h.SubOrchestrationInstanceCreated(
                event_id=id,
                timestamp=self.now,
                name=name,
                instance_id=instance_id,
                input=payload(input),
            )
        )

    def sub_completed(self, id: int, result: Any = None) -> HistoryBuilder:
        return self._add(
            h.SubOrchestrationInstanceCompleted(
                timestamp=self.now, task_scheduled_id=id, result=payload(result)
            )
        )

    def sub_failed(
        self, id: int, message: str = "boom", error_type: str = "ValueError"
    ) -> HistoryBuilder:
        return self._add(
            h.SubOrchestrationInstanceFailed(
                timestamp=self.now,
                task_scheduled_id=id,
                failure_details=FailureDetails(error_type, message),
            )
        )

    def event_sent(self, id: int, instance_id: str, name: str, data: Any = None) -> HistoryBuilder:
        return self._add(
            h.EventSent(
                event_id=id,
                timestamp=self.now,
                instance_id=instance_id,
                name=name,
                input=payload(data),
            )
        )

    def event_raised(self, name: str, data: Any = None) -> HistoryBuilder:
        return self._add(h.EventRaised(timestamp=self.now, name=name, input=payload(data)))

    def suspended(self, reason: str | None = None) -> HistoryBuilder:
        return self._add(h.ExecutionSuspended(timestamp=self.now, reason=reason))

    def resumed(self, reason: str | None = None) -> HistoryBuilder:
        return self._add(h.ExecutionResumed(timestamp=self.now, reason=reason))

    def completed(
        self, status: OrchestrationStatus, result: Any = None, failure: FailureDetails | None = None
    ) -> HistoryBuilder:
        return self._add(
            h.ExecutionCompleted(
                timestamp=self.now, status=status, result=payload(result), failure_details=failure
            )
        )

    def rewound(self, reason: str | None = None) -> HistoryBuilder:
        return self._add(h.ExecutionRewound(timestamp=self.now, reason=reason))

    def terminated(self, reason: Any = None, *, recurse: bool = True) -> HistoryBuilder:
        return self._add(
            h.ExecutionTerminated(timestamp=self.now, input=payload(reason), recurse=recurse)
        )

    def _add(self, event: h.HistoryEvent) -> HistoryBuilder:
        self._events.append(event)
        return self


def registry(orchestrations: Sequence[Any] = (), activities: Sequence[Any] = ()) -> Registry:
    """A registry with these functions under their own names."""
    reg = Registry()
    for fn in orchestrations:
        reg.add_orchestration(fn)
    for fn in activities:
        reg.add_activity(fn)
    return reg


def execute(
    reg: Registry,
    past: Iterable[h.HistoryEvent],
    new: Iterable[h.HistoryEvent] = (),
    *,
    codec: PayloadCodec | None = None,
    instance_id: str = INSTANCE_ID,
) -> ExecutionResult:
    """Run the replay engine once."""
    return OrchestrationExecutor(reg, codec).execute(instance_id, list(past), list(new))
