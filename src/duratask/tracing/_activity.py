"""Activity spans (``activity:<name>``, kind SERVER) and the activity's log events."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from duratask import history as h
from duratask.backends.base import (
    ActivityRequest,
    ActivityWorkItem,
    OrchestrationMessage,
    OrchestrationService,
)
from duratask.tracing import _api
from duratask.tracing._scheduled import SCHEDULED

_LOG = logging.getLogger("duratask.worker")


async def traced_activity(
    work_item: ActivityWorkItem,
    store: OrchestrationService,
    run: Callable[[], Awaitable[OrchestrationMessage]],
) -> OrchestrationMessage:
    """Run the activity (``run()`` returns its result message) in an ``activity:<name>`` span,
    a child of the orchestration span that scheduled it, and log how it ended."""
    request = work_item.request
    tracer = _api.tracer()
    if tracer is None:
        result = await run()
    else:
        carrier = SCHEDULED.take(request.instance_id, request.execution_id, request.task_id)
        if carrier is None:
            carrier = await _scheduled_context(store, request)
        span = _api.start_span(
            tracer,
            _api.span_name("activity", request.name, request.version),
            kind="server",
            parent=_api.parent_context(carrier),
        )
        with _api.activate(span):
            if span.is_recording():
                span.set_attributes(
                    {
                        _api.ATTR_TYPE: "activity",
                        _api.ATTR_NAME: request.name,
                        _api.ATTR_INSTANCE_ID: request.instance_id,
                        _api.ATTR_EXECUTION_ID: request.execution_id,
                        _api.ATTR_TASK_ID: request.task_id,
                    }
                )
                if request.version:
                    span.set_attribute(_api.ATTR_VERSION, request.version)
            result = await run()
            if span.is_recording() and isinstance(result.event, h.TaskFailed):
                _api.record_failure(span, result.event.failure_details)
    _log_result(request, result.event)
    return result


async def _scheduled_context(
    store: OrchestrationService, request: ActivityRequest
) -> dict[str, str] | None:
    """The trace context stored with the activity's ``TaskScheduled`` event, if any."""
    try:
        history = await store.get_history(request.instance_id)
    except Exception as exc:  # tracing must never stop the activity from running
        _LOG.debug(
            "no trace context for activity %r of %r: %s",
            request.name,
            request.instance_id,
            exc,
            extra={
                "event": "duratask.tracing.context_unavailable",
                "instance_id": request.instance_id,
            },
        )
        return None
    execution_id = None
    for event in history:
        if isinstance(event, h.ExecutionStarted):
            execution_id = event.execution_id
        elif (
            isinstance(event, h.TaskScheduled)
            and event.event_id == request.task_id
            and execution_id == request.execution_id
        ):
            return event.trace_context
    return None


def _log_result(request: ActivityRequest, event: h.HistoryEvent) -> None:
    if isinstance(event, h.TaskFailed):
        failure = event.failure_details
        _LOG.warning(
            "activity %r (task #%d) of %r failed: %s: %s",
            request.name,
            request.task_id,
            request.instance_id,
            failure.error_type,
            failure.message,
            extra=_extra("duratask.activity.failed", request),
        )
    elif _LOG.isEnabledFor(logging.DEBUG):
        _LOG.debug(
            "activity %r (task #%d) of %r completed",
            request.name,
            request.task_id,
            request.instance_id,
            extra=_extra("duratask.activity.completed", request),
        )


def _extra(event: str, request: ActivityRequest) -> dict[str, object]:
    return {
        "event": event,
        "instance_id": request.instance_id,
        "execution_id": request.execution_id,
        "activity_name": request.name,
        "task_id": request.task_id,
    }
