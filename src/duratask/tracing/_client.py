"""The client's ``create_orchestration:<name>`` span (kind PRODUCER) around scheduling."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from duratask import history as h
from duratask.backends.base import OrchestrationMessage
from duratask.tracing import _api

_LOG = logging.getLogger("duratask.client")


@contextmanager
def traced_start(message: OrchestrationMessage) -> Iterator[OrchestrationMessage]:
    """Trace scheduling the instance ``message`` starts: yields the message to store, its
    ``ExecutionStarted`` carrying the span's trace context (the parent of the worker's spans).
    """
    start = message.event
    if not isinstance(start, h.ExecutionStarted):
        raise TypeError(f"expected an ExecutionStarted message, got {type(start).__name__}")
    tracer = _api.tracer()
    if tracer is None:
        yield message
    else:
        span = _api.start_span(
            tracer,
            _api.span_name("create_orchestration", start.name, start.version),
            kind="producer",
        )
        with _api.activate(span):
            if span.is_recording():
                span.set_attributes(
                    {
                        _api.ATTR_TYPE: "orchestration",
                        _api.ATTR_NAME: start.name,
                        _api.ATTR_INSTANCE_ID: start.instance_id,
                        _api.ATTR_EXECUTION_ID: start.execution_id,
                    }
                )
                if start.version:
                    span.set_attribute(_api.ATTR_VERSION, start.version)
            carrier = _api.carrier_of(span)
            if carrier is not None:
                message = replace(message, event=replace(start, trace_context=carrier))
            yield message
    _LOG.debug(
        "scheduled orchestration %r as %r",
        start.name,
        start.instance_id,
        extra={
            "event": "duratask.orchestration.scheduled",
            "instance_id": start.instance_id,
            "execution_id": start.execution_id,
            "orchestration_name": start.name,
        },
    )
