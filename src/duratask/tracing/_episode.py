"""Orchestration spans: one ``orchestration:<name>`` span per episode, and timer spans.

An orchestration execution is processed in episodes, possibly by different processes, and
OpenTelemetry cannot reopen a span or choose a span's id; so each episode that runs the
orchestration's code gets its own span, a child of the span that started the execution (the
client's ``create_orchestration`` span, or the parent orchestration's episode span for a
sub-orchestration). What an episode schedules is stamped with that episode's trace context,
so activities, timers and sub-orchestrations hang under the episode that started them.

Replaying history emits nothing: the spans of earlier work were emitted when it happened.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from duratask import history as h
from duratask.backends.base import OrchestrationCommit, OrchestrationMessage, OrchestrationWorkItem
from duratask.state import OrchestrationStatus
from duratask.tracing import _api
from duratask.tracing._scheduled import SCHEDULED

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from duratask._engine import OrchestrationCursor

ATTR_HISTORY_LENGTH = "durabletask.orchestration.history_length"
ATTR_REPLAYED_EVENTS = "durabletask.orchestration.replayed_events"


class EpisodeView(Protocol):
    """What the wrapper reads of the episode it traces."""

    @property
    def wi(self) -> OrchestrationWorkItem: ...

    @property
    def cursor(self) -> OrchestrationCursor | None: ...

    @property
    def instance_id(self) -> str: ...

    @property
    def now(self) -> datetime: ...


class Delivered(Protocol):
    """One event an episode applies (what the wrapper reads of it)."""

    @property
    def event(self) -> h.HistoryEvent: ...


_Execute = TypeVar("_Execute", bound=Callable[..., OrchestrationCommit])


def traced_execution(execute: _Execute) -> _Execute:
    """Trace an episode method ``(past, start, events, consumed, *, reset) -> commit``.

    ``start`` is the execution's ``ExecutionStarted`` when the episode starts it (else None,
    and the stored one is used); ``events`` are the new events the episode applies.
    """

    @functools.wraps(execute)
    def traced(
        episode: EpisodeView,
        past: list[h.HistoryEvent],
        start: h.ExecutionStarted | None,
        events: Sequence[Delivered],
        consumed: list[int],
        *,
        reset: bool,
    ) -> OrchestrationCommit:
        tracer = _api.tracer()
        if tracer is None:
            return execute(episode, past, start, events, consumed, reset=reset)
        started = start if start is not None else _stored_start(episode, past)
        if started is None:
            return execute(episode, past, start, events, consumed, reset=reset)
        span = _api.start_span(
            tracer,
            _api.span_name("orchestration", started.name, started.version),
            kind="server",
            parent=_api.parent_context(started.trace_context),
        )
        carrier = _api.carrier_of(span)
        if start is not None and start.trace_context is None and carrier is not None:
            # Nothing traced the start: this first episode is the root of the trace, and the
            # later episodes (which read the stored start) become its children.
            start = replace(start, trace_context=carrier)
        with _api.activate(span):
            commit = execute(episode, past, start, events, consumed, reset=reset)
            if carrier is not None:
                commit = _stamp(commit, carrier, episode, started.execution_id)
            if span.is_recording():
                cached = start is None and episode.cursor is not None
                _describe(span, started, commit, episode, 0 if cached else len(past), start)
            _emit_timer_spans(tracer, span, started, [d.event for d in events], episode.now)
        return commit

    return cast(_Execute, traced)


def _stored_start(episode: EpisodeView, past: list[h.HistoryEvent]) -> h.ExecutionStarted | None:
    if episode.cursor is not None:
        return episode.cursor.ctx.started
    return next((e for e in past if isinstance(e, h.ExecutionStarted)), None)


def _stamp(
    commit: OrchestrationCommit,
    carrier: dict[str, str],
    episode: EpisodeView,
    execution_id: str,
) -> OrchestrationCommit:
    """Give what the episode scheduled the episode's trace context."""
    new_events = list(commit.new_events)
    for i, event in enumerate(new_events):
        if isinstance(event, h.TaskScheduled) and event.trace_context is None:
            new_events[i] = replace(event, trace_context=carrier)
            SCHEDULED.remember(episode.instance_id, execution_id, event.event_id, carrier)
    messages = [_stamp_message(m, carrier, episode.now) for m in commit.messages]
    return replace(commit, new_events=new_events, messages=messages)


def _stamp_message(
    message: OrchestrationMessage, carrier: dict[str, str], now: datetime
) -> OrchestrationMessage:
    event = message.event
    if isinstance(event, h.ExecutionStarted) and event.trace_context is None:
        return replace(message, event=replace(event, trace_context=carrier))
    if isinstance(event, h.TimerFired) and event.trace_context is None:
        return replace(message, event=replace(event, trace_context=carrier, created_at=now))
    return message


def _describe(
    span: Span,
    started: h.ExecutionStarted,
    commit: OrchestrationCommit,
    episode: EpisodeView,
    replayed: int,
    start: h.ExecutionStarted | None,
) -> None:
    state = commit.state
    span.set_attributes(
        {
            _api.ATTR_TYPE: "orchestration",
            _api.ATTR_NAME: started.name,
            _api.ATTR_INSTANCE_ID: episode.instance_id,
            _api.ATTR_EXECUTION_ID: started.execution_id,
            _api.ATTR_STATUS: state.runtime_status.value,
            ATTR_HISTORY_LENGTH: 0 if start is not None else episode.wi.history_length,
            ATTR_REPLAYED_EVENTS: replayed,
        }
    )
    if started.version:
        span.set_attribute(_api.ATTR_VERSION, started.version)
    if state.runtime_status is OrchestrationStatus.FAILED and state.failure_details is not None:
        _api.record_failure(span, state.failure_details)


def _emit_timer_spans(
    tracer: Tracer,
    episode_span: Span,
    started: h.ExecutionStarted,
    events: Sequence[h.HistoryEvent],
    now: datetime,
) -> None:
    """One ``orchestration:<name>:timer`` span per timer that fired, from its creation."""
    for event in events:
        if not isinstance(event, h.TimerFired):
            continue
        parent = (
            _api.parent_context(event.trace_context)
            if event.trace_context
            else _api.context_of(episode_span)
        )
        created = event.created_at or event.fire_at
        span = _api.start_span(
            tracer,
            f"orchestration:{started.name}:timer",
            kind="internal",
            parent=parent,
            start_time=min(created, now),
        )
        if span.is_recording():
            span.set_attributes(
                {
                    _api.ATTR_TYPE: "timer",
                    _api.ATTR_NAME: started.name,
                    _api.ATTR_INSTANCE_ID: started.instance_id,
                    _api.ATTR_EXECUTION_ID: started.execution_id,
                    _api.ATTR_TASK_ID: event.timer_id,
                    _api.ATTR_FIRE_AT: event.fire_at.isoformat(),
                }
            )
        span.end(end_time=_api.time_ns(now))
