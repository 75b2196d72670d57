"""Span names, parentage, attributes and error status of a whole instance's trace."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind, StatusCode

import duratask as dt
from duratask import history as h
from duratask.tracing import set_tracer_provider
from tests.conformance.e2e_hub import TaskHub

from .conftest import Spans

TIMER = timedelta(milliseconds=20)


def double(ctx: dt.ActivityContext, value: int) -> int:
    return value * 2


async def explode(ctx: dt.ActivityContext, what: str) -> None:
    raise ValueError(f"{what} exploded")


async def child_flow(ctx: dt.OrchestrationContext, value: int) -> int:
    return int(await ctx.call_activity(double, input=value)) + 1


async def parent_flow(ctx: dt.OrchestrationContext, value: int) -> dict[str, Any]:
    a = await ctx.call_activity(double, input=value)
    b = await ctx.call_activity(double, input=a)
    await ctx.create_timer(TIMER)
    c = await ctx.call_sub_orchestrator(child_flow, input=b, instance_id=f"{ctx.instance_id}:child")
    try:
        await ctx.call_activity(explode, input="the fuse")
    except dt.TaskFailedError as exc:
        return {"result": c, "error": exc.details.message}
    return {"result": c, "error": None}


async def failing_flow(ctx: dt.OrchestrationContext, _: None) -> None:
    await ctx.call_activity(explode, input="the orchestration")


async def looping_flow(ctx: dt.OrchestrationContext, round: int) -> int:
    await ctx.call_activity(double, input=round)
    if round < 2:
        ctx.continue_as_new(round + 1)
    return round


def _ids(spans: Iterable[ReadableSpan]) -> set[int]:
    return {s.context.span_id for s in spans}


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_one_trace_covers_activities_timer_sub_orchestration_and_failure(
    hub: TaskHub, spans: Spans
) -> None:
    hub.register(parent_flow, child_flow, activities=(double, explode))
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(parent_flow, input=3, instance_id="order-1")
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.output == {"result": 25, "error": "the fuse exploded"}

    everything = spans.all()
    assert len({s.context.trace_id for s in everything}) == 1, "one trace for the whole instance"

    create = spans.one("create_orchestration:parent_flow")
    assert create.kind is SpanKind.PRODUCER
    assert create.parent is None
    assert _attrs(create)["durabletask.task.instance_id"] == iid
    assert _attrs(create)["durabletask.type"] == "orchestration"

    episodes = spans.named("orchestration:parent_flow")
    history = await hub.client.get_orchestration_history(iid)
    started = next(e for e in history if isinstance(e, h.ExecutionStarted))
    assert len(episodes) == sum(isinstance(e, h.OrchestratorStarted) for e in history)
    for episode in episodes:
        assert episode.kind is SpanKind.SERVER
        assert _parent_id(episode) == create.context.span_id
        attrs = _attrs(episode)
        assert attrs["durabletask.type"] == "orchestration"
        assert attrs["durabletask.task.name"] == "parent_flow"
        assert attrs["durabletask.task.instance_id"] == iid
        assert attrs["durabletask.task.execution_id"] == started.execution_id
    statuses = [_attrs(e)["durabletask.task.status"] for e in episodes]
    assert statuses[-1] == "COMPLETED" and set(statuses[:-1]) == {"RUNNING"}
    parent_episode_ids = _ids(episodes)

    doubles = spans.named("activity:double")
    assert len(doubles) == 3
    own = [s for s in doubles if _attrs(s)["durabletask.task.instance_id"] == iid]
    assert sorted(_attrs(s)["durabletask.task.task_id"] for s in own) == [0, 1]
    for span in own:
        assert span.kind is SpanKind.SERVER
        assert _parent_id(span) in parent_episode_ids
        assert _attrs(span)["durabletask.type"] == "activity"
        assert _attrs(span)["durabletask.task.name"] == "double"
        assert span.status.status_code is StatusCode.UNSET

    timer = spans.one("orchestration:parent_flow:timer")
    assert timer.kind is SpanKind.INTERNAL
    assert _parent_id(timer) in parent_episode_ids
    timer_attrs = _attrs(timer)
    fired = next(e for e in history if isinstance(e, h.TimerFired))
    assert timer_attrs["durabletask.type"] == "timer"
    assert timer_attrs["durabletask.task.task_id"] == fired.timer_id
    assert timer_attrs["durabletask.fire_at"] == fired.fire_at.isoformat()
    assert timer.start_time is not None and timer.end_time is not None
    assert timer.end_time - timer.start_time >= TIMER // timedelta(microseconds=1) * 1000

    children = spans.named("orchestration:child_flow")
    assert children, "the sub-orchestration is traced"
    for child in children:
        assert _parent_id(child) in parent_episode_ids
        assert _attrs(child)["durabletask.task.instance_id"] == f"{iid}:child"
    child_double = next(s for s in doubles if s not in own)
    assert _parent_id(child_double) in _ids(children)

    failed = spans.one("activity:explode")
    assert _parent_id(failed) in parent_episode_ids
    assert failed.status.status_code is StatusCode.ERROR
    assert "the fuse exploded" in (failed.status.description or "")
    exception = next(e for e in failed.events if e.name == "exception")
    assert dict(exception.attributes or {})["exception.type"] == "ValueError"
    # The orchestration handled the failure: its spans are not errors.
    assert all(e.status.status_code is not StatusCode.ERROR for e in episodes)


async def test_activity_spans_hang_under_the_episode_that_scheduled_them(
    hub: TaskHub, spans: Spans
) -> None:
    hub.register(parent_flow, child_flow, activities=(double, explode))
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(parent_flow, input=1)
    await hub.client.wait_for_orchestration_completion(iid, timeout=30)

    history = await hub.client.get_orchestration_history(iid)
    scheduled = {e.event_id: e for e in history if isinstance(e, h.TaskScheduled)}
    by_id = {s.context.span_id: s for s in spans.all()}
    for span in spans.named("activity:double") + spans.named("activity:explode"):
        attrs = _attrs(span)
        if attrs["durabletask.task.instance_id"] != iid:
            continue
        carrier = scheduled[attrs["durabletask.task.task_id"]].trace_context
        assert carrier is not None
        parent = by_id[_parent_id(span)]
        assert carrier["traceparent"].split("-")[2] == format(parent.context.span_id, "016x")


async def test_a_failed_orchestration_marks_its_last_episode_as_an_error(
    hub: TaskHub, spans: Spans
) -> None:
    hub.register(failing_flow, activities=(explode,))
    await hub.start()
    state = await hub.run(failing_flow)
    assert state.runtime_status is dt.OrchestrationStatus.FAILED

    last = spans.named("orchestration:failing_flow")[-1]
    assert last.status.status_code is StatusCode.ERROR
    assert "the orchestration exploded" in (last.status.description or "")
    assert _attrs(last)["durabletask.task.status"] == "FAILED"
    assert any(e.name == "exception" for e in last.events)
    assert spans.one("activity:explode").status.status_code is StatusCode.ERROR


async def test_continue_as_new_stays_in_the_trace(hub: TaskHub, spans: Spans) -> None:
    hub.register(looping_flow, activities=(double,))
    await hub.start()
    state = await hub.run(looping_flow, 0)
    assert state.output == 2

    create = spans.one("create_orchestration:looping_flow")
    episodes = spans.named("orchestration:looping_flow")
    executions = {_attrs(e)["durabletask.task.execution_id"] for e in episodes}
    assert len(executions) == 3
    assert {_parent_id(e) for e in episodes} == {create.context.span_id}
    assert len(spans.named("activity:double")) == 3
    assert len({s.context.trace_id for s in spans.all()}) == 1


async def test_the_client_span_is_a_child_of_the_callers_span(
    hub_url: str, provider: TracerProvider, spans: Spans
) -> None:
    worker = dt.TaskHubWorker(hub_url)
    worker.add_orchestration(child_flow)
    worker.add_activity(double)
    tracer = provider.get_tracer("tests")
    with worker, dt.TaskHubClient(hub_url) as client:
        with tracer.start_as_current_span("handle request") as request:
            # The synchronous client runs on its own loop thread: the context goes with it.
            iid = client.schedule_new_orchestration(child_flow, input=1)
        client.wait_for_orchestration_completion(iid, timeout=30)

    create = spans.one("create_orchestration:child_flow")
    assert _parent_id(create) == request.get_span_context().span_id
    assert {s.context.trace_id for s in spans.all()} == {request.get_span_context().trace_id}


async def test_an_instance_scheduled_without_a_trace_is_rooted_at_its_first_episode(
    hub: TaskHub, provider: TracerProvider, spans: Spans
) -> None:
    hub.register(parent_flow, child_flow, activities=(double, explode))
    set_tracer_provider(trace.NoOpTracerProvider())  # the client traces nothing...
    iid = await hub.client.schedule_new_orchestration(parent_flow, input=2)
    set_tracer_provider(provider)  # ...the worker does
    await hub.start()
    await hub.client.wait_for_orchestration_completion(iid, timeout=30)

    assert spans.named("create_orchestration:parent_flow") == []
    first, *later = spans.named("orchestration:parent_flow")
    assert first.parent is None
    assert later and {_parent_id(e) for e in later} == {first.context.span_id}
    assert len({s.context.trace_id for s in spans.all()}) == 1
    history = await hub.client.get_orchestration_history(iid)
    started = next(e for e in history if isinstance(e, h.ExecutionStarted))
    assert started.trace_context is not None
    assert started.trace_context["traceparent"].split("-")[2] == format(
        first.context.span_id, "016x"
    )


@pytest.mark.parametrize("version", ["2"])
async def test_versioned_names_follow_the_framework(
    hub: TaskHub, spans: Spans, version: str
) -> None:
    hub.worker.add_orchestration(child_flow, version=version)
    hub.worker.add_activity(double)
    await hub.start()
    state = await hub.run(child_flow, 1, version=version)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    create = spans.one(f"create_orchestration:child_flow@({version})")
    assert _attrs(create)["durabletask.task.version"] == version
    episodes = spans.named(f"orchestration:child_flow@({version})")
    assert episodes and all(_attrs(e)["durabletask.task.version"] == version for e in episodes)


_app_tracers: list[trace.Tracer] = []


def measured(ctx: dt.ActivityContext, value: int) -> int:
    # A sync activity runs in the worker's thread pool; the activity span goes with it.
    with _app_tracers[0].start_as_current_span("inside the activity"):
        return value


async def measured_flow(ctx: dt.OrchestrationContext, value: int) -> int:
    return int(await ctx.call_activity(measured, input=value))


async def test_spans_made_by_activity_code_nest_under_the_activity_span(
    hub: TaskHub, provider: TracerProvider, spans: Spans
) -> None:
    _app_tracers[:] = [provider.get_tracer("app")]
    hub.register(measured_flow, activities=(measured,))
    await hub.start()
    state = await hub.run(measured_flow, 5)
    assert state.output == 5

    inner = spans.one("inside the activity")
    outer = spans.one("activity:measured")
    assert _parent_id(inner) == outer.context.span_id
    assert inner.context.trace_id == outer.context.trace_id
