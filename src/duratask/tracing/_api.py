"""The one place that imports OpenTelemetry (optional) and resolves duratask's tracer.

Without ``opentelemetry-api`` installed, :func:`tracer` returns None and every tracing hook
does nothing. With the API but no SDK (no tracer provider set), it returns None too: the
global provider is then a proxy whose spans record nothing, so duratask skips span creation,
context lookups and propagation altogether.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    OTEL_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised in a subprocess without the package
    OTEL_AVAILABLE = False

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from duratask.state import FailureDetails

_SCOPE = "duratask"

# Span attribute keys, as the Durable Task Framework names them.
ATTR_TYPE = "durabletask.type"
ATTR_NAME = "durabletask.task.name"
ATTR_VERSION = "durabletask.task.version"
ATTR_INSTANCE_ID = "durabletask.task.instance_id"
ATTR_EXECUTION_ID = "durabletask.task.execution_id"
ATTR_TASK_ID = "durabletask.task.task_id"
ATTR_STATUS = "durabletask.task.status"
ATTR_FIRE_AT = "durabletask.fire_at"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_provider_override: TracerProvider | None = None
_cached: tuple[object, Tracer | None] | None = None
_recheck_at = 0.0
_RECHECK_SECONDS = 1.0
_propagator = TraceContextTextMapPropagator() if OTEL_AVAILABLE else None
_NO_OP_PROVIDERS = (
    (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider) if OTEL_AVAILABLE else ()
)
_KINDS = (
    {
        "server": otel_trace.SpanKind.SERVER,
        "producer": otel_trace.SpanKind.PRODUCER,
        "internal": otel_trace.SpanKind.INTERNAL,
    }
    if OTEL_AVAILABLE
    else {}
)


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Use ``provider`` for duratask's spans instead of the global one (None: global again)."""
    global _provider_override, _cached
    if provider is not None and not OTEL_AVAILABLE:
        raise RuntimeError("tracing needs opentelemetry-api: pip install 'duratask[otel]'")
    _provider_override = provider
    _cached = None


def tracer() -> Tracer | None:
    """duratask's tracer, or None when nothing would record spans."""
    global _cached, _recheck_at
    if not OTEL_AVAILABLE:
        return None
    if _provider_override is not None:
        provider = _provider_override
    elif _cached is not None and _cached[1] is None and time.monotonic() < _recheck_at:
        # No global provider was set when last looked: looking again costs an environment
        # lookup, so it is done at most once a second.
        return None
    else:
        provider = otel_trace.get_tracer_provider()
    cached = _cached
    if cached is not None and cached[0] is provider:
        resolved = cached[1]
    elif isinstance(provider, _NO_OP_PROVIDERS):
        resolved = None
    else:
        resolved = provider.get_tracer(_SCOPE, _version())
    _cached = (provider, resolved)
    if resolved is None:
        _recheck_at = time.monotonic() + _RECHECK_SECONDS
    return resolved


def _version() -> str | None:
    try:
        return importlib.metadata.version("duratask")
    except importlib.metadata.PackageNotFoundError:
        return None


def span_name(kind: str, name: str, version: str | None) -> str:
    """``kind:name``, with ``@(version)`` appended for a versioned orchestration or activity."""
    return f"{kind}:{name}@({version})" if version else f"{kind}:{name}"


def start_span(
    tracer: Tracer,
    name: str,
    *,
    kind: str,
    parent: Context | None = None,
    start_time: datetime | None = None,
) -> Span:
    """Start a span of ``kind`` ("server", "producer" or "internal") under ``parent`` (None:
    the current context)."""
    return tracer.start_span(
        name,
        context=parent,
        kind=_KINDS[kind],
        start_time=None if start_time is None else time_ns(start_time),
    )


def activate(span: Span) -> AbstractContextManager[Span]:
    """Make ``span`` current for a block, end it after, and mark it failed if the block raises."""
    return otel_trace.use_span(span, end_on_exit=True)


def context_of(span: Span) -> Context:
    """A context whose current span is ``span`` (to start its children in)."""
    return otel_trace.set_span_in_context(span)


def carrier_of(span: Span) -> dict[str, str] | None:
    """The W3C trace context (traceparent, tracestate) of ``span``, or None if it has none."""
    if _propagator is None or not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=otel_trace.set_span_in_context(span))
    return carrier or None


def parent_context(carrier: Mapping[str, str] | None) -> Context:
    """The context to start a child of a stored trace context in (an empty one: a new trace).

    Always explicit, so a worker run inside the caller's span never adopts it as the parent
    of the instances it happens to process.
    """
    if carrier and _propagator is not None and isinstance(carrier, Mapping):
        try:
            return _propagator.extract({str(k): str(v) for k, v in carrier.items()})
        except Exception:  # a malformed stored value must never break the worker
            pass
    return otel_context.Context()


def time_ns(moment: datetime) -> int:
    """An aware datetime as OpenTelemetry's nanoseconds since the epoch."""
    return (moment - _EPOCH) // _MICROSECOND * 1000


def record_failure(span: Span, failure: FailureDetails) -> None:
    """Mark ``span`` as failed with ``failure`` (as an OpenTelemetry exception event)."""
    span.set_status(
        otel_trace.Status(otel_trace.StatusCode.ERROR, f"{failure.error_type}: {failure.message}")
    )
    attributes = {"exception.type": failure.error_type, "exception.message": failure.message}
    if failure.stack_trace:
        attributes["exception.stacktrace"] = failure.stack_trace
    span.add_event("exception", attributes)
