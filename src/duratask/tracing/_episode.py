"""Orchestration spans: one ``orchestration:<name>`` span per execution an episode runs,
and timer spans; seen through the episode hooks (:mod:`duratask._episode_hooks`).

An orchestration execution is processed in episodes, possibly by different processes, and
OpenTelemetry cannot reopen a span or choose a span's id; so each episode that runs the
orchestration's code gets its own span, a child of the span that started the execution (the
client's ``create_orchestration`` span, or the parent orchestration's episode span for a
sub-orchestration). What an episode schedules is stamped with that episode's trace context,
so activities, timers and sub-orchestrations hang under the episode that started them.

Replaying history emits nothing: the spans of earlier work were emitted when it happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from duratask import history as h
from duratask._episode_hooks import UNCHANGED, ExecutionInfo, ExecutionObservation
from duratask.backends.base import OrchestrationCommit, OrchestrationMessage
from duratask.state import OrchestrationStatus
from duratask.tracing import _api
from duratask.tracing._scheduled import SCHEDULED

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

ATTR_HISTORY_LENGTH = "durabletask.orchestration.history_length"
ATTR_REPLAYED_EVENTS = "durabletask.orchestration.replayed_events"


class TracingObserver:
    """Gives each execution an episode runs its span (an :class:`EpisodeObserver`)."""

    @property
    def watching(self) -> bool:
        return _api.tracer() is not None

    @contextlib.contextmanager
    def execution(self, info: ExecutionInfo) -> Iterator[ExecutionObservation]:
        tracer = _api.tracer()
        if tracer is None:
            yield UNCHANGED
            return
        started = info.started
        span = _api.start_span(
            tracer,
            _api.span_name("orchestration", started.name, started.version),
            kind="server",
            parent=_api.parent_context(started.trace_context),
        )
        with _api.activate(span):
            yield _TracedExecution(tracer, span, info)


class _TracedExecution:
    def __init__(self, tracer: Tracer, span: Span, info: ExecutionInfo) -> None:
        self._tracer = tracer
        self._span = span
        self._info = info
        self._carrier = _api.carrier_of(span)

    def start(self, start: h.ExecutionStarted) -> h.ExecutionStarted:
        if start.trace_context is None and self._carrier is not None:
            # Nothing traced the start: this first episode is the root of the trace, and the
            # later episodes (which read the stored start) become its children.
            return replace(start, trace_context=self._carrier)
        return start

    def finish(self, commit: OrchestrationCommit) -> OrchestrationCommit:
        info, span = self._info, self._span
        if self._carrier is not None:
            commit = _stamp(commit, self._carrier, info)
        if span.is_recording():
            _describe(span, commit, info)
        _emit_timer_spans(self._tracer, span, info.started, info.events, info.now)
        return commit


TRACING = TracingObserver()


def _stamp(
    commit: OrchestrationCommit, carrier: dict[str, str], info: ExecutionInfo
) -> OrchestrationCommit:
    """Give what the episode scheduled the episode's trace context."""
    new_events = list(commit.new_events)
    execution_id = info.started.execution_id
    for i, event in enumerate(new_events):
        if isinstance(event, h.TaskScheduled) and event.trace_context is None:
            new_events[i] = replace(event, trace_context=carrier)
            SCHEDULED.remember(info.instance_id, execution_id, event.event_id, carrier)
    messages = [_stamp_message(m, carrier, info.now) for m in commit.messages]
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


def _describe(span: Span, commit: OrchestrationCommit, info: ExecutionInfo) -> None:
    state, started = commit.state, info.started
    span.set_attributes(
        {
            _api.ATTR_TYPE: "orchestration",
            _api.ATTR_NAME: started.name,
            _api.ATTR_INSTANCE_ID: info.instance_id,
            _api.ATTR_EXECUTION_ID: started.execution_id,
            _api.ATTR_STATUS: state.runtime_status.value,
            ATTR_HISTORY_LENGTH: info.history_length,
            ATTR_REPLAYED_EVENTS: info.replayed,
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
