"""Orchestration episodes whose code runs in an SDK worker, on the other side of the stream.

An episode is planned twice with duratask's own planner, which reconciles the leased
messages with the stored history (starts, terminations, rewinds, deferred starts, stale and
repeated results, continue-as-new). The first time, the planner's executor only records the
events it would run the code on: they become the worker's ``OrchestratorRequest``. When the
worker answers, the same planning runs again on the same input and time, and the executor
returns the worker's actions, which the planner turns into the commit. An episode that
needs no code (a termination before the start, a deferred start, messages for an ended
instance) is committed at once, without the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from durabletask.internal import orchestrator_service_pb2 as pb

from duratask import _actions as act
from duratask import history as h
from duratask._engine import ExecutionResult, rewound_view
from duratask.backends.base import LockedMessage, OrchestrationCommit, OrchestrationMessage
from duratask.serve.protocol import ProtocolError, action_from_pb, optional_text
from duratask.state import FailureDetails, OrchestrationStatus
from duratask.worker._episode import Defer, EpisodeInput, plan_episode


@dataclass(frozen=True, slots=True)
class CodeRequest:
    """The events an SDK worker must run an orchestration on."""

    instance_id: str
    execution_id: str | None
    past_events: list[h.HistoryEvent]
    new_events: list[h.HistoryEvent]


class _Known:
    """What the stored history says of an execution: its start, and what it awaits."""

    def __init__(self, past: Sequence[h.HistoryEvent]) -> None:
        self.started: h.ExecutionStarted | None = None
        self._pending: set[int] = set()
        self.children: dict[int, str] = {}
        for event in past:
            if isinstance(event, h.ExecutionStarted) and self.started is None:
                self.started = event
            elif isinstance(
                event,
                h.TaskScheduled | h.TimerCreated | h.EntityOperationCalled | h.EntityLockRequested,
            ):
                self._pending.add(event.event_id)
            elif isinstance(event, h.SubOrchestrationInstanceCreated):
                self._pending.add(event.event_id)
                self.children[event.event_id] = event.instance_id
            else:
                task_id = h.result_task_id(event)
                if task_id is not None:
                    self._pending.discard(task_id)

    def awaits(self, task_id: int) -> bool:
        return task_id in self._pending

    def running_children(self) -> list[str]:
        return [child for task, child in self.children.items() if task in self._pending]


class _Captured(Exception):
    def __init__(self, past: list[h.HistoryEvent], new: list[h.HistoryEvent]) -> None:
        super().__init__("captured")
        self.past = past
        self.new = new


class _RecordingCursor:
    def __init__(self, past: list[h.HistoryEvent]) -> None:
        self.past = past
        self.ctx = _Known(past)

    def run(self, new_events: Iterable[h.HistoryEvent]) -> ExecutionResult:
        raise _Captured(self.past, list(new_events))


class _RecordingExecutor:
    def cursor(self, instance_id: str, past_events: Iterable[h.HistoryEvent]) -> _RecordingCursor:
        return _RecordingCursor(list(rewound_view(list(past_events))))


class _ReplyCursor:
    def __init__(self, past: list[h.HistoryEvent], reply: WorkerReply) -> None:
        self.ctx = _Known(past)
        self._reply = reply

    def run(self, new_events: Iterable[h.HistoryEvent]) -> ExecutionResult:
        events = list(new_events)
        actions = list(self._reply.actions)
        completion = next(
            (a for a in actions if isinstance(a, act.CompleteOrchestrationAction)), None
        )
        if completion is not None and completion.status is OrchestrationStatus.TERMINATED:
            actions[:0] = self._terminate_children(events)
        return ExecutionResult(actions, self._reply.custom_status, len(events))

    def _terminate_children(
        self, events: list[h.HistoryEvent]
    ) -> list[act.TerminateOrchestrationAction]:
        """A recursive termination reaches the sub-orchestrations still running (SDK
        workers end the instance itself; duratask carries the termination down)."""
        terminate = next((e for e in events if isinstance(e, h.ExecutionTerminated)), None)
        if terminate is None or not terminate.recurse:
            return []
        return [
            act.TerminateOrchestrationAction(child, terminate.input, recurse=True)
            for child in self.ctx.running_children()
        ]


class _ReplyExecutor:
    def __init__(self, reply: WorkerReply) -> None:
        self._reply = reply

    def cursor(self, instance_id: str, past_events: Iterable[h.HistoryEvent]) -> _ReplyCursor:
        return _ReplyCursor(list(rewound_view(list(past_events))), self._reply)


@dataclass(frozen=True, slots=True)
class WorkerReply:
    """What the worker decided: duratask actions and the custom status."""

    actions: list[act.OrchestratorAction]
    custom_status: str | None

    @classmethod
    def of(cls, response: pb.OrchestratorResponse) -> WorkerReply:
        """The reply in an ``OrchestratorResponse``. An action duratask cannot carry out
        ends the execution FAILED, saying which (rather than dropping it silently)."""
        custom_status = optional_text(response, "customStatus")
        try:
            actions = [action_from_pb(a) for a in response.actions]
        except ProtocolError as exc:
            failed = act.CompleteOrchestrationAction(
                OrchestrationStatus.FAILED,
                failure_details=FailureDetails(
                    "UnsupportedActionError", str(exc), is_non_retriable=True
                ),
            )
            return cls([failed], custom_status)
        return cls(actions, custom_status)


def first_input(message: OrchestrationMessage) -> EpisodeInput:
    """A new instance's first episode before the create that leases it is stored: no row,
    no history, its start message delivered once (the input that lease gives but for the
    message's id, which only the commit uses)."""
    return EpisodeInput(message.instance_id, None, [], 0, [LockedMessage(0, message, 1)])


def prepare(source: EpisodeInput, now: datetime) -> OrchestrationCommit | Defer | CodeRequest:
    """Plan an episode: a commit or a deferral that needs no code, or the events to send
    to a worker."""
    try:
        planned, _ = plan_episode(source, _RecordingExecutor(), now, generations=1)
    except _Captured as captured:
        started = next((e for e in captured.new if isinstance(e, h.ExecutionStarted)), None)
        if started is None:
            started = next((e for e in captured.past if isinstance(e, h.ExecutionStarted)), None)
        execution_id = started.execution_id if started is not None else None
        return CodeRequest(source.instance_id, execution_id, captured.past, captured.new)
    return planned


def give_up(
    source: EpisodeInput, now: datetime, poison: FailureDetails
) -> OrchestrationCommit | Defer:
    """The commit that ends an execution FAILED as poison, without its code."""
    planned, _ = plan_episode(source, _ReplyExecutor(WorkerReply([], None)), now, poison=poison)
    return planned


def finish(source: EpisodeInput, now: datetime, reply: WorkerReply) -> OrchestrationCommit | Defer:
    """The commit of an episode :func:`prepare` sent to a worker, with its reply."""
    planned, _ = plan_episode(source, _ReplyExecutor(reply), now, generations=1)
    return planned


__all__ = ["CodeRequest", "WorkerReply", "finish", "first_input", "give_up", "prepare"]
