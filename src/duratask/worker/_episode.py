"""One orchestration episode: from an instance's new messages (a leased work item, or an
activity's result handed over by the worker that ran it) to the commit that records it.

Pure apart from the ids it is given: it reconciles the new messages with the stored history,
runs the replay engine, and turns the resulting actions into history events and outbound
messages (activities, timers, sub-orchestration starts, events, results for the parent).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from duratask import _actions as act
from duratask import history as h
from duratask._engine import ExecutionResult, OrchestrationCursor, has_ended
from duratask._engine.rewind import final_failure, rewound_view
from duratask._episode_hooks import NO_OBSERVER, EpisodeObserver, ExecutionInfo
from duratask._rewind import rewind_message
from duratask.backends.base import (
    ENTITY_CALL,
    ENTITY_LOCK,
    ENTITY_RELEASE,
    ENTITY_SIGNAL,
    ActivityRequest,
    EntityMessage,
    ExecutionRecord,
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
)
from duratask.errors import PoisonWorkError
from duratask.state import FailureDetails, OrchestrationState, OrchestrationStatus, type_names
from duratask.worker._instance_state import advance_state

_LOG = logging.getLogger("duratask.worker")
_CONTINUED_AS_NEW = OrchestrationStatus.CONTINUED_AS_NEW
_START_PENDING_RETRY = timedelta(milliseconds=100)
# Executions one episode may run back to back when each continues as new at once (an
# eternal orchestration working through events that are already there); then it commits,
# and the next episode goes on from the start message.
GENERATIONS_PER_EPISODE = 100


class CursorState(Protocol):
    """What an episode reads of a running execution: its start, and which tasks it awaits."""

    @property
    def started(self) -> h.ExecutionStarted | None: ...

    def awaits(self, task_id: int) -> bool: ...


class EpisodeCursor(Protocol):
    """One execution, replayed up to its stored history, that new events drive forward."""

    @property
    def ctx(self) -> CursorState: ...

    def run(self, new_events: Iterable[h.HistoryEvent]) -> ExecutionResult: ...


class EpisodeExecutor(Protocol):
    """What runs the orchestration code: the replay engine, or a remote worker (the
    sidecar, whose SDK workers run the code and send back the actions)."""

    def cursor(self, instance_id: str, past_events: Iterable[h.HistoryEvent]) -> EpisodeCursor: ...


# _Delivery and EpisodeInput are made at every step and never changed once made: not
# frozen, as a frozen dataclass sets each field through object.__setattr__.
@dataclass(slots=True)
class _Delivery:
    """An event for the execution. ``for_any_execution``: it was sent to the instance, not
    to one execution of it (so an execution that ends before applying it passes it on)."""

    event: h.HistoryEvent
    for_any_execution: bool = False


@dataclass(frozen=True, slots=True)
class Defer:
    """Not yet: put the messages back until ``retry_at`` (a scheduled start in the future)."""

    retry_at: datetime


@dataclass(slots=True)
class EpisodeInput:
    """What an episode runs on: an instance's stored row and history, and the messages for
    it. ``messages`` were stored (the commit consumes them); ``result`` is an activity's
    result handed over by the worker that ran it, never stored."""

    instance_id: str
    state: OrchestrationState | None
    history: list[h.HistoryEvent]
    history_length: int
    messages: Sequence[LockedMessage] = ()
    result: OrchestrationMessage | None = None

    @classmethod
    def of(cls, work_item: OrchestrationWorkItem) -> EpisodeInput:
        """The input of a leased work item."""
        return cls(
            work_item.instance_id,
            work_item.state,
            work_item.history,
            work_item.history_length,
            work_item.messages,
        )


class _Inbound(NamedTuple):
    """A message for the episode that was never stored (so nothing consumes it), beside the
    stored ones (:class:`LockedMessage`)."""

    message: OrchestrationMessage
    message_id: int | None


def _start_of(message: LockedMessage | _Inbound) -> h.ExecutionStarted:
    event = message.message.event
    assert isinstance(event, h.ExecutionStarted)
    return event


def _new_execution_id() -> str:
    return uuid.uuid4().hex


def plan_episode(
    source: EpisodeInput,
    executor: EpisodeExecutor,
    now: datetime,
    new_execution_id: Callable[[], str] = _new_execution_id,
    cursor: OrchestrationCursor | None = None,
    poison: FailureDetails | None = None,
    observer: EpisodeObserver = NO_OBSERVER,
    generations: int | None = None,
) -> tuple[OrchestrationCommit | Defer, OrchestrationCursor | None]:
    """Decide what to commit for one instance (or to defer it), optionally continuing a
    live ``cursor`` that is in step with the stored history (then ``source.history`` is not
    read). Also returns the cursor worth keeping after the commit (None once the execution
    ended). ``observer`` sees each execution the episode runs (tracing).

    With ``poison`` the orchestration code is not run: the new messages are recorded and the
    execution ends FAILED with those details (a rewind can run it on from there).

    ``generations``: how many executions that continue as new at once the episode may run
    back to back (1: commit the first continue-as-new as it is; None: the default)."""
    episode = _Episode(source, executor, now, new_execution_id, cursor, poison, observer)
    if generations is not None:
        episode.generations = generations
    return episode.run(), episode.live_cursor


def deliveries(work_item: OrchestrationWorkItem) -> int:
    """How many times the work item's most delivered message has been handed to a worker."""
    return max((m.dequeue_count for m in work_item.messages), default=0)


def orchestration_work(instance_id: str) -> str:
    """How poison details name an instance's work."""
    return f"the work of orchestration instance {instance_id!r}"


def poison_details(what: str, delivered: int, reason: str | None = None) -> FailureDetails:
    """Why work was given up after ``delivered`` deliveries (``reason``: what went wrong,
    when the worker knows; else its worker crashed, hung or failed each time)."""
    why = reason or "its worker crashed, hung or failed each time"
    return FailureDetails(
        PoisonWorkError.__name__,
        f"{what} was delivered {delivered} times without completing ({why}), so it was "
        "given up; fix the cause, then rewind the instance to run it again",
        is_non_retriable=True,
        error_types=type_names(PoisonWorkError),
    )


class _Episode:
    def __init__(
        self,
        source: EpisodeInput,
        executor: EpisodeExecutor,
        now: datetime,
        new_execution_id: Callable[[], str],
        cursor: OrchestrationCursor | None = None,
        poison: FailureDetails | None = None,
        observer: EpisodeObserver = NO_OBSERVER,
    ) -> None:
        self.wi = source
        self.observer = observer
        self.cursor = cursor
        self.poison = poison
        self.live_cursor: OrchestrationCursor | None = None
        self.executor = executor
        self.now = now
        self.new_execution_id = new_execution_id
        self.instance_id = source.instance_id
        self.outbound: list[OrchestrationMessage] = []
        self.activities: list[ActivityRequest] = []
        self.entity_messages: list[EntityMessage] = []
        self.generations = GENERATIONS_PER_EPISODE
        # The start of the execution the episode began itself, if it began one.
        self.began: h.ExecutionStarted | None = None

    def run(self) -> OrchestrationCommit | Defer:
        outcome = self._first_execution()
        if isinstance(outcome, Defer) or outcome.state.runtime_status is not _CONTINUED_AS_NEW:
            return outcome
        return self._continued_here(outcome)

    def _continued_here(self, commit: OrchestrationCommit) -> OrchestrationCommit:
        """While an execution continues as new and the episode has room, run the next one
        at once from the start it would have sent; commit the last one with all they did."""
        outbound: list[OrchestrationMessage] = []
        activities: list[ActivityRequest] = []
        continued: list[ExecutionRecord] = []
        for _ in range(self.generations - 1):
            start_message = self._continued_start(commit)
            if start_message is None:
                break
            outbound.extend(m for m in commit.messages if m is not start_message)
            activities.extend(commit.activities)
            self.outbound, self.activities = [], []
            start = start_message.event
            assert isinstance(start, h.ExecutionStarted)
            if self.began is not None:  # never stored: only this episode can record it
                continued.append(self._continued_record(self.began, start))
            self.began = start
            consumed = list(commit.consumed_message_ids)
            commit = self._execute([], start, [], consumed, reset=True)
        if outbound or activities or continued:
            commit = replace(
                commit,
                messages=[*outbound, *commit.messages],
                activities=[*activities, *commit.activities],
                continued_executions=continued,
            )
        return commit

    def _continued_record(
        self, began: h.ExecutionStarted, next_start: h.ExecutionStarted
    ) -> ExecutionRecord:
        """The record of an execution begun and continued as new within this episode."""
        return ExecutionRecord(
            instance_id=self.instance_id,
            generation=0,
            execution_id=began.execution_id,
            name=began.name,
            version=began.version,
            started_at=self.now,
            ended_at=self.now,
            status=_CONTINUED_AS_NEW,
            input_summary=began.input,
            output_summary=next_start.input,
        )

    def _continued_start(self, commit: OrchestrationCommit) -> OrchestrationMessage | None:
        """The start of the next execution, if ``commit`` ends one by continuing as new."""
        if commit.state.runtime_status is not _CONTINUED_AS_NEW or not commit.reset_history:
            return None
        for message in reversed(commit.messages):
            if message.instance_id == self.instance_id and isinstance(
                message.event, h.ExecutionStarted
            ):
                return message
        return None

    def _first_execution(self) -> OrchestrationCommit | Defer:
        inbound: list[LockedMessage | _Inbound] = list(self.wi.messages)
        if self.wi.result is not None:
            inbound.append(_Inbound(self.wi.result, None))
        consumed = [m.message_id for m in self.wi.messages]
        history = self.wi.history
        if self.cursor is not None:
            started, is_terminal = self.cursor.ctx.started, self.cursor.is_complete
        else:
            started = next((e for e in history if isinstance(e, h.ExecutionStarted)), None)
            is_terminal = has_ended(history)
        starts = [m for m in inbound if isinstance(m.message.event, h.ExecutionStarted)]
        others = [m for m in inbound if not isinstance(m.message.event, h.ExecutionStarted)]
        rewinds = [m for m in others if isinstance(m.message.event, h.ExecutionRewound)]
        if rewinds:
            others = [m for m in others if m not in rewinds]
            if started is not None and is_terminal and not starts and final_failure(history):
                return self._rewind(history, started, rewinds[0], others, consumed)
            _LOG.info(
                "ignoring rewind of %r: it has not failed",
                self.instance_id,
                extra={
                    "event": "duratask.orchestration.rewind_ignored",
                    "instance_id": self.instance_id,
                },
            )

        if started is None or is_terminal:
            state = self.wi.state
            if state is not None and state.runtime_status.is_terminal:
                # A start of the execution that already ended was handled before: drop it.
                starts = [m for m in starts if _start_of(m).execution_id != state.execution_id]
            if not starts:
                return self._without_start(others, consumed, never_started=started is None)
            start_msg, *duplicates = starts
            start = start_msg.message.event
            assert isinstance(start, h.ExecutionStarted)
            self._reject_duplicate_starts(duplicates)
            terminate = next(
                (e for m in others if isinstance(e := m.message.event, h.ExecutionTerminated)),
                None,
            )
            if terminate is not None:
                return self._terminate_before_start(start, terminate, consumed, reset=is_terminal)
            if start.scheduled_start_time and start.scheduled_start_time > self.now:
                return Defer(start.scheduled_start_time)
            self.began = start
            # A fresh execution; a completed instance started again replaces its history.
            return self._execute(
                [], start, self._current(others, start.execution_id), consumed, reset=is_terminal
            )

        self._reject_duplicate_starts(starts)
        return self._execute(
            history, None, self._current(others, started.execution_id), consumed, reset=False
        )

    # -- rewind ---------------------------------------------------------------------------------
    def _rewind(
        self,
        history: list[h.HistoryEvent],
        started: h.ExecutionStarted,
        rewind: LockedMessage | _Inbound,
        others: list[LockedMessage | _Inbound],
        consumed: list[int],
    ) -> OrchestrationCommit:
        """Run a FAILED execution again from its last step, forgetting the failure."""
        view = list(rewound_view(history))
        forgotten = final_failure(view)
        past = [e for i, e in enumerate(view) if i not in forgotten]
        self._redispatch(past, [view[i] for i in sorted(forgotten)], started)
        events = [_Delivery(rewind.message.event), *self._current(others, started.execution_id)]
        return self._execute(past, None, events, consumed, reset=False)

    def _redispatch(
        self,
        past: list[h.HistoryEvent],
        forgotten: list[h.HistoryEvent],
        started: h.ExecutionStarted,
    ) -> None:
        """Send again what the rewound execution still waits for: activities without a result
        (their results may have been dropped while it was failed), timers not yet fired, and
        a rewind to each sub-orchestration whose failure was forgotten."""
        exec_id = started.execution_id
        scheduled: dict[int, h.TaskScheduled] = {}
        timers: dict[int, h.TimerCreated] = {}
        children: dict[int, str] = {}
        for event in past:
            if isinstance(event, h.TaskScheduled):
                scheduled[event.event_id] = event
            elif isinstance(event, h.TimerCreated):
                timers[event.event_id] = event
            elif isinstance(event, h.SubOrchestrationInstanceCreated):
                children[event.event_id] = event.instance_id
            elif isinstance(event, h.TaskCompleted | h.TaskFailed):
                scheduled.pop(event.task_scheduled_id, None)
            elif isinstance(event, h.TimerFired):
                timers.pop(event.timer_id, None)
        for task in scheduled.values():
            self.activities.append(
                ActivityRequest(
                    self.instance_id,
                    exec_id,
                    task.event_id,
                    task.name,
                    task.version,
                    task.input,
                    task.attempt,
                    task.timeout,
                    task.heartbeat_timeout,
                    task_queue=task.task_queue,
                )
            )
        for timer in timers.values():
            fired = h.TimerFired(
                timestamp=timer.fire_at, timer_id=timer.event_id, fire_at=timer.fire_at
            )
            self.outbound.append(
                OrchestrationMessage(self.instance_id, fired, exec_id, timer.fire_at)
            )
        for event in forgotten:
            if isinstance(event, h.SubOrchestrationInstanceFailed):
                child = children.get(event.task_scheduled_id)
                if child is not None:
                    reason = f"parent {self.instance_id!r} was rewound"
                    self.outbound.append(rewind_message(child, reason, self.now))

    # -- reconciliation ---------------------------------------------------------------------
    def _current(
        self, messages: list[LockedMessage | _Inbound], execution_id: str
    ) -> list[_Delivery]:
        """The messages' events meant for this execution, in the order they arrived."""
        kept = []
        for m in messages:
            if m.message.execution_id not in (None, execution_id):
                _LOG.debug(
                    "dropping stale %s for %r",
                    type(m.message.event).__name__,
                    self.instance_id,
                    extra={"event": "duratask.message.stale", "instance_id": self.instance_id},
                )
                continue
            kept.append(_Delivery(m.message.event, m.message.execution_id is None))
        return kept

    def _reject_duplicate_starts(self, starts: list[LockedMessage | _Inbound]) -> None:
        for m in starts:
            event = m.message.event
            assert isinstance(event, h.ExecutionStarted)
            _LOG.warning(
                "ignoring a second start of running instance %r",
                self.instance_id,
                extra={
                    "event": "duratask.orchestration.duplicate_start",
                    "instance_id": self.instance_id,
                },
            )
            if event.parent is not None:
                details = FailureDetails(
                    "OrchestrationAlreadyExistsError",
                    f"sub-orchestration instance {self.instance_id!r} is already running",
                )
                self._to_parent(
                    event.parent,
                    h.SubOrchestrationInstanceFailed(
                        timestamp=self.now,
                        task_scheduled_id=event.parent.task_scheduled_id,
                        failure_details=details,
                    ),
                )

    def _without_start(
        self, others: list[LockedMessage | _Inbound], consumed: list[int], *, never_started: bool
    ) -> OrchestrationCommit | Defer:
        """Messages for an instance that is not running: hold, terminate or drop them."""
        state = self.wi.state
        if never_started and state and state.runtime_status is OrchestrationStatus.PENDING:
            # Its start message is held back until its scheduled time.
            for m in others:
                if isinstance(m.message.event, h.ExecutionTerminated):
                    return self._terminate_unstarted(m.message.event, consumed)
            if state.scheduled_start_at and state.scheduled_start_at > self.now:
                return Defer(state.scheduled_start_at)
        if never_started and state and state.runtime_status is _CONTINUED_AS_NEW:
            # Its next execution's start was sent in the same commit that emptied the
            # history; it will be here shortly. Never drop the events meant for it.
            return Defer(self.now + _START_PENDING_RETRY)
        what = "it has not started" if never_started else "it is not running"
        _LOG.info(
            "dropping %d message(s) for %r: %s",
            len(others),
            self.instance_id,
            what,
            extra={"event": "duratask.message.dropped", "instance_id": self.instance_id},
        )
        return self._unchanged(consumed)

    def _terminate_unstarted(
        self, terminate: h.ExecutionTerminated, consumed: list[int]
    ) -> OrchestrationCommit:
        """Terminated while its scheduled start is still held back: it never runs. The
        history still begins with its start, rebuilt from the row (the held-back start
        message is dropped when it comes due, as a start of an execution that ended)."""
        row = self.wi.state
        assert row is not None
        start = h.ExecutionStarted(
            timestamp=self.now,
            name=row.name,
            version=row.version,
            input=row.serialized_input,
            instance_id=self.instance_id,
            execution_id=row.execution_id or self.new_execution_id(),
            scheduled_start_time=row.scheduled_start_at,
            task_queue=row.task_queue,
        )
        events = [
            h.OrchestratorStarted(timestamp=self.now),
            start,
            terminate,
            h.ExecutionCompleted(
                timestamp=self.now, status=OrchestrationStatus.TERMINATED, result=terminate.input
            ),
            h.OrchestratorCompleted(timestamp=self.now),
        ]
        state = advance_state(
            self.instance_id, self.wi.state, events, now=self.now, custom_status=None
        )
        return OrchestrationCommit(state=state, new_events=events, consumed_message_ids=consumed)

    def _unchanged(self, consumed: list[int]) -> OrchestrationCommit:
        state = self.wi.state
        if state is None:
            raise ValueError(f"instance {self.instance_id!r} has no stored row")
        return OrchestrationCommit(
            state=state, consumed_message_ids=consumed, messages=self.outbound
        )

    def _terminate_before_start(
        self,
        start: h.ExecutionStarted,
        terminate: h.ExecutionTerminated,
        consumed: list[int],
        *,
        reset: bool,
    ) -> OrchestrationCommit:
        """Terminated before its code ever ran: record that without running it."""
        completion = act.CompleteOrchestrationAction(
            OrchestrationStatus.TERMINATED, terminate.input
        )
        start, carried = _unpacked(start)
        events = [
            h.OrchestratorStarted(timestamp=self.now),
            start,
            *carried,
            terminate,
            *self._complete(completion, start),
            h.OrchestratorCompleted(timestamp=self.now),
        ]
        state = advance_state(
            self.instance_id, self.wi.state, events, now=self.now, custom_status=None
        )
        return OrchestrationCommit(
            state=state,
            new_events=events,
            consumed_message_ids=consumed,
            messages=self.outbound,
            reset_history=reset,
        )

    # -- execution ------------------------------------------------------------------------------
    def _execute(
        self,
        past: list[h.HistoryEvent],
        start: h.ExecutionStarted | None,
        events: list[_Delivery],
        consumed: list[int],
        *,
        reset: bool,
    ) -> OrchestrationCommit:
        """Run one execution on ``events``: a new one from ``start``, or the stored one."""
        if not self.observer.watching:
            return self._run(past, start, events, consumed, reset=reset)
        continued = start is None and self.cursor is not None
        started = start
        if started is None:
            if self.cursor is not None:
                started = self.cursor.ctx.started
            else:
                started = next((e for e in past if isinstance(e, h.ExecutionStarted)), None)
        if started is None:  # a history that fails replay before its start
            return self._run(past, start, events, consumed, reset=reset)
        info = ExecutionInfo(
            self.instance_id,
            started,
            start,
            [d.event for d in events],
            0 if start is not None else self.wi.history_length,
            0 if continued else len(past),
            self.now,
        )
        with self.observer.execution(info) as observed:
            if start is not None:
                start = observed.start(start)
            return observed.finish(self._run(past, start, events, consumed, reset=reset))

    def _run(
        self,
        past: list[h.HistoryEvent],
        start: h.ExecutionStarted | None,
        events: list[_Delivery],
        consumed: list[int],
        *,
        reset: bool,
    ) -> OrchestrationCommit:
        deliveries = [_Delivery(h.OrchestratorStarted(timestamp=self.now))]
        if start is not None:
            # Events carried from the previous execution come first, in their order.
            start, carried = _unpacked(start)
            deliveries.append(_Delivery(start))
            deliveries.extend(_Delivery(e, True) for e in carried)
        deliveries.extend(events)
        if self.poison is not None:
            new_events = [d.event for d in deliveries]
            return self._give_up(past, start, new_events, consumed, self.poison, reset=reset)
        cursor: EpisodeCursor
        if start is None and self.cursor is not None:
            cursor = self.cursor
        else:
            cursor = self.executor.cursor(self.instance_id, past)
        deliveries = _without_repeated_results(deliveries, cursor)
        new_events = [d.event for d in deliveries]
        result = cursor.run(new_events)
        # A history that failed replay before its start leaves the context without one.
        started = start or cursor.ctx.started
        started = started or next((e for e in past if isinstance(e, h.ExecutionStarted)), None)
        assert started is not None

        completion = result.completion
        if completion is not None and completion.status is OrchestrationStatus.CONTINUED_AS_NEW:
            for action in result.actions:
                if action is not completion:
                    self._apply(action, started)
            return self._continue_as_new(
                started,
                completion,
                deliveries[result.events_applied :],
                consumed,
                result.custom_status,
            )

        appended = list(new_events)
        for action in result.actions:
            appended.extend(self._apply(action, started))
        appended.append(h.OrchestratorCompleted(timestamp=self.now))

        state = advance_state(
            self.instance_id,
            self.wi.state,
            appended,
            now=self.now,
            custom_status=result.custom_status,
        )
        if completion is None and isinstance(cursor, OrchestrationCursor):
            self.live_cursor = cursor
        return OrchestrationCommit(
            state=state,
            new_events=appended,
            consumed_message_ids=consumed,
            activities=self.activities,
            messages=self.outbound,
            reset_history=reset,
            entity_messages=self.entity_messages,
        )

    def _give_up(
        self,
        past: list[h.HistoryEvent],
        start: h.ExecutionStarted | None,
        new_events: list[h.HistoryEvent],
        consumed: list[int],
        details: FailureDetails,
        *,
        reset: bool,
    ) -> OrchestrationCommit:
        """End the execution FAILED without running its code, keeping the new events."""
        started = start or (self.cursor.ctx.started if self.cursor is not None else None)
        started = started or next((e for e in past if isinstance(e, h.ExecutionStarted)), None)
        assert started is not None
        failed = act.CompleteOrchestrationAction(
            OrchestrationStatus.FAILED, failure_details=details
        )
        appended = [
            *new_events,
            *self._complete(failed, started),
            h.OrchestratorCompleted(timestamp=self.now),
        ]
        state = advance_state(
            self.instance_id, self.wi.state, appended, now=self.now, custom_status=None
        )
        if self.wi.state is not None:
            state = replace(state, serialized_custom_status=self.wi.state.serialized_custom_status)
        return OrchestrationCommit(
            state=state,
            new_events=appended,
            consumed_message_ids=consumed,
            messages=self.outbound,
            reset_history=reset,
            entity_messages=self.entity_messages,
        )

    def _apply(
        self, action: act.OrchestratorAction, started: h.ExecutionStarted
    ) -> list[h.HistoryEvent]:
        now, exec_id = self.now, started.execution_id
        if isinstance(action, act.ScheduleTaskAction):
            queue = action.task_queue or started.task_queue
            self.activities.append(
                ActivityRequest(
                    self.instance_id,
                    exec_id,
                    action.id,
                    action.name,
                    action.version,
                    action.input,
                    action.attempt,
                    action.timeout,
                    action.heartbeat_timeout,
                    action.heartbeat_details,
                    queue,
                )
            )
            return [
                h.TaskScheduled(
                    event_id=action.id,
                    timestamp=now,
                    name=action.name,
                    version=action.version,
                    input=action.input,
                    attempt=action.attempt,
                    timeout=action.timeout,
                    heartbeat_timeout=action.heartbeat_timeout,
                    task_queue=queue,
                )
            ]
        if isinstance(action, act.CreateTimerAction):
            fired = h.TimerFired(
                timestamp=action.fire_at, timer_id=action.id, fire_at=action.fire_at
            )
            self.outbound.append(
                OrchestrationMessage(self.instance_id, fired, exec_id, action.fire_at)
            )
            return [h.TimerCreated(event_id=action.id, timestamp=now, fire_at=action.fire_at)]
        if isinstance(action, act.CreateSubOrchestrationAction):
            parent = h.ParentInstanceInfo(self.instance_id, exec_id, started.name, action.id)
            queue = action.task_queue or started.task_queue
            child_start = h.ExecutionStarted(
                timestamp=now,
                name=action.name,
                version=action.version,
                input=action.input,
                instance_id=action.instance_id,
                execution_id=self.new_execution_id(),
                parent=parent,
                task_queue=queue,
            )
            self.outbound.append(OrchestrationMessage(action.instance_id, child_start))
            return [
                h.SubOrchestrationInstanceCreated(
                    event_id=action.id,
                    timestamp=now,
                    name=action.name,
                    version=action.version,
                    instance_id=action.instance_id,
                    input=action.input,
                    task_queue=queue,
                )
            ]
        if isinstance(action, act.SendEventAction):
            raised = h.EventRaised(timestamp=now, name=action.name, input=action.data)
            self.outbound.append(OrchestrationMessage(action.instance_id, raised))
            return [
                h.EventSent(
                    event_id=action.id,
                    timestamp=now,
                    instance_id=action.instance_id,
                    name=action.name,
                    input=action.data,
                )
            ]
        if isinstance(
            action,
            act.SignalEntityAction
            | act.CallEntityAction
            | act.LockEntitiesAction
            | act.UnlockEntityAction,
        ):
            return self._to_entity(action, exec_id)
        if isinstance(action, act.TerminateOrchestrationAction):
            terminated = h.ExecutionTerminated(
                timestamp=now, input=action.reason, recurse=action.recurse
            )
            self.outbound.append(OrchestrationMessage(action.instance_id, terminated))
            return []
        return self._complete(action, started)

    def _to_entity(
        self,
        action: act.SignalEntityAction
        | act.CallEntityAction
        | act.LockEntitiesAction
        | act.UnlockEntityAction,
        exec_id: str,
    ) -> list[h.HistoryEvent]:
        """Send an entity action's message; the history event that records it."""
        now, me = self.now, self.instance_id
        event: h.HistoryEvent
        if isinstance(action, act.SignalEntityAction):
            message = EntityMessage(
                action.entity_id,
                ENTITY_SIGNAL,
                action.request_id,
                action.operation,
                action.input,
                me,
                exec_id,
                visible_at=action.signal_time,
            )
            event = h.EntityOperationSignaled(
                event_id=action.id,
                timestamp=now,
                request_id=action.request_id,
                operation=action.operation,
                target_instance_id=action.entity_id,
                input=action.input,
                scheduled_time=action.signal_time,
            )
        elif isinstance(action, act.CallEntityAction):
            message = EntityMessage(
                action.entity_id,
                ENTITY_CALL,
                action.request_id,
                action.operation,
                action.input,
                me,
                exec_id,
                task_id=action.id,
            )
            event = h.EntityOperationCalled(
                event_id=action.id,
                timestamp=now,
                request_id=action.request_id,
                operation=action.operation,
                target_instance_id=action.entity_id,
                input=action.input,
            )
        elif isinstance(action, act.LockEntitiesAction):
            message = EntityMessage(
                action.lock_set[0],
                ENTITY_LOCK,
                action.critical_section_id,
                source=me,
                source_execution_id=exec_id,
                task_id=action.id,
                lock_set=action.lock_set,
            )
            event = h.EntityLockRequested(
                event_id=action.id,
                timestamp=now,
                critical_section_id=action.critical_section_id,
                lock_set=action.lock_set,
            )
        else:
            message = EntityMessage(
                action.entity_id,
                ENTITY_RELEASE,
                f"{action.critical_section_id}:release:{action.entity_id}",
                source=me,
                source_execution_id=exec_id,
            )
            event = h.EntityUnlockSent(
                event_id=action.id,
                timestamp=now,
                critical_section_id=action.critical_section_id,
                target_instance_id=action.entity_id,
            )
        self.entity_messages.append(message)
        return [event]

    def _complete(
        self, action: act.CompleteOrchestrationAction, started: h.ExecutionStarted
    ) -> list[h.HistoryEvent]:
        if action.status is OrchestrationStatus.CONTINUED_AS_NEW:
            return [h.ContinueAsNew(timestamp=self.now, result=action.result)]
        parent = started.parent
        if parent is not None:
            result: h.HistoryEvent
            if action.status is OrchestrationStatus.COMPLETED:
                result = h.SubOrchestrationInstanceCompleted(
                    timestamp=self.now,
                    task_scheduled_id=parent.task_scheduled_id,
                    result=action.result,
                )
            else:
                details = action.failure_details or FailureDetails(
                    "OrchestrationTerminated",
                    f"sub-orchestration {self.instance_id!r} was terminated: {action.result}",
                )
                result = h.SubOrchestrationInstanceFailed(
                    timestamp=self.now,
                    task_scheduled_id=parent.task_scheduled_id,
                    failure_details=details,
                )
            self._to_parent(parent, result)
        return [
            h.ExecutionCompleted(
                timestamp=self.now,
                status=action.status,
                result=action.result,
                failure_details=action.failure_details,
            )
        ]

    def _to_parent(self, parent: h.ParentInstanceInfo, event: h.HistoryEvent) -> None:
        self.outbound.append(OrchestrationMessage(parent.instance_id, event, parent.execution_id))

    def _continue_as_new(
        self,
        started: h.ExecutionStarted,
        completion: act.CompleteOrchestrationAction,
        unapplied: list[_Delivery],
        consumed: list[int],
        custom_status: str | None,
    ) -> OrchestrationCommit:
        """Start over: drop the history, and send the instance its new start.

        The start message carries the events passed on to the new execution, in the order
        they arrived: those the old one received and did not consume (``save_events``), then
        those sent to the instance that it had not applied yet when it ended (it never saw
        them, so they go on whatever ``save_events`` says). What arrives meanwhile waits
        behind the start; the next episode delivers the carried events first.
        """
        passed_on = [d.event for d in unapplied if d.for_any_execution]
        carried = (*completion.carryover_events, *passed_on)
        new_start = replace(
            started,
            timestamp=self.now,
            input=completion.result,
            version=completion.new_version or started.version,
            execution_id=self.new_execution_id(),
            scheduled_start_time=None,
            carried_events=carried or None,
        )
        self.outbound.append(OrchestrationMessage(self.instance_id, new_start))
        base = self.wi.state or advance_state(
            self.instance_id, None, [started], now=self.now, custom_status=custom_status
        )
        state = replace(
            base,
            runtime_status=OrchestrationStatus.CONTINUED_AS_NEW,
            last_updated_at=self.now,
            serialized_input=completion.result,
            serialized_output=None,
            failure_details=None,
            serialized_custom_status=custom_status,
            completed_at=None,
        )
        return OrchestrationCommit(
            state=state,
            consumed_message_ids=consumed,
            activities=self.activities,
            messages=self.outbound,
            reset_history=True,
            entity_messages=self.entity_messages,
        )


def _unpacked(start: h.ExecutionStarted) -> tuple[h.ExecutionStarted, tuple[h.HistoryEvent, ...]]:
    """A start message's event as the history records it, and the events it carried."""
    carried = start.carried_events
    if not carried:
        return start, ()
    return replace(start, carried_events=None), carried


def _without_repeated_results(
    deliveries: list[_Delivery], cursor: EpisodeCursor
) -> list[_Delivery]:
    """Drop results for tasks the execution no longer awaits: a second delivery of one
    (an activity run twice after a lost lease, a timer re-sent by a rewind) is not history."""
    kept: list[_Delivery] = []
    seen: set[int] = set()
    for delivery in deliveries:
        event = delivery.event
        task_id = h.result_task_id(event)
        if task_id is not None:
            if task_id in seen or not cursor.ctx.awaits(task_id):
                _LOG.debug(
                    "dropping a repeated result for task #%s",
                    task_id,
                    extra={"event": "duratask.message.repeated_result"},
                )
                continue
            seen.add(task_id)
        kept.append(delivery)
    return kept
