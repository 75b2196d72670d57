"""Tracing is optional: without the package, or without a provider, nothing is traced."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from duratask import history as h
from duratask.tracing import _api, set_tracer_provider
from tests.conformance.e2e_hub import TaskHub

from .conftest import Spans
from .test_spans import child_flow, double

ROOT = Path(__file__).resolve().parents[2]

_WITHOUT_OTEL = textwrap.dedent(
    """
    import sys

    sys.modules["opentelemetry"] = None  # makes every opentelemetry import fail

    import duratask as dt
    import duratask.tracing


    def double(ctx, value):
        return value * 2


    async def flow(ctx, value):
        return await ctx.call_activity(double, input=value)


    assert duratask.tracing.OTEL_AVAILABLE is False
    worker = dt.TaskHubWorker("memory://no-otel")
    worker.add_orchestration(flow)
    worker.add_activity(double)
    with worker, dt.TaskHubClient("memory://no-otel") as client:
        iid = client.schedule_new_orchestration(flow, input=21)
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        history = client.get_orchestration_history(iid)
    assert state.output == 42, state
    assert all(getattr(e, "trace_context", None) is None for e in history)
    try:
        duratask.tracing.set_tracer_provider(object())
    except RuntimeError as exc:
        assert "duratask[otel]" in str(exc)
    else:
        raise AssertionError("a provider without the package must be refused")
    print("ok")
    """
)


def test_everything_works_without_opentelemetry_installed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


_WITH_THE_GLOBAL_PROVIDER = textwrap.dedent(
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import duratask as dt


    def double(ctx, value):
        return value * 2


    async def flow(ctx, value):
        return await ctx.call_activity(double, input=value)


    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    worker = dt.TaskHubWorker("memory://global")
    worker.add_orchestration(flow)
    worker.add_activity(double)
    with worker, dt.TaskHubClient("memory://global") as client:
        iid = client.schedule_new_orchestration(flow, input=21)
        client.wait_for_orchestration_completion(iid, timeout=30)
    names = sorted({span.name for span in exporter.get_finished_spans()})
    print(",".join(names))
    """
)


def test_the_global_provider_is_used_by_default() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITH_THE_GLOBAL_PROVIDER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "activity:double,create_orchestration:flow,orchestration:flow"


def test_no_tracer_without_a_configured_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    set_tracer_provider(None)
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert _api.tracer() is None
    set_tracer_provider(trace.NoOpTracerProvider())
    assert _api.tracer() is None


async def test_without_a_provider_nothing_is_stamped_or_exported(
    hub_url: str, spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_tracer_provider(None)
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    hub = TaskHub(hub_url)
    hub.register(child_flow, activities=(double,))
    await hub.start()
    try:
        state = await hub.run(child_flow, 4)
        history = await hub.client.get_orchestration_history(state.instance_id)
    finally:
        await hub.stop()
    assert state.output == 9
    assert spans.all() == []
    assert [e for e in history if getattr(e, "trace_context", None) is not None] == []
    assert all("trace_context" not in e.to_dict() for e in history)


async def test_an_unsampled_trace_propagates_its_decision(hub_url: str) -> None:
    exporter = InMemorySpanExporter()
    unsampled = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    unsampled.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer_provider(unsampled)
    hub = TaskHub(hub_url)
    hub.register(child_flow, activities=(double,))
    await hub.start()
    try:
        state = await hub.run(child_flow, 1)
        history = await hub.client.get_orchestration_history(state.instance_id)
    finally:
        await hub.stop()
    assert state.output == 3
    assert exporter.get_finished_spans() == ()
    started = next(e for e in history if isinstance(e, h.ExecutionStarted))
    scheduled = next(e for e in history if isinstance(e, h.TaskScheduled))
    for carrier in (started.trace_context, scheduled.trace_context):
        assert carrier is not None
        _, trace_id, _, flags = carrier["traceparent"].split("-")
        assert int(flags, 16) & 1 == 0, "not sampled, and the stored context says so"
    assert scheduled.trace_context["traceparent"].split("-")[1] == trace_id  # type: ignore[index]
