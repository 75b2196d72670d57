"""Replays emit no duplicate spans, and a trace goes on across worker restarts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duratask as dt
from duratask import history as h
from duratask.backends.base import ActivityRequest, ActivityWorkItem, OrchestrationMessage
from duratask.tracing._activity import traced_activity
from duratask.tracing._scheduled import SCHEDULED
from tests.conformance.conftest import drop_schema, new_schema, require_postgres
from tests.conformance.e2e_hub import TaskHub, wait_until

from .conftest import Spans


def add_one(ctx: dt.ActivityContext, value: int) -> int:
    return value + 1


async def steps(ctx: dt.OrchestrationContext, count: int) -> int:
    value = 0
    for _ in range(count):
        value = await ctx.call_activity(add_one, input=value)
    await ctx.create_timer(timedelta(milliseconds=5))
    return value


async def approval(ctx: dt.OrchestrationContext, _: None) -> str:
    before = await ctx.call_activity(add_one, input=0)
    who = await ctx.wait_for_external_event("approve")
    after = await ctx.call_activity(add_one, input=before)
    return f"{who}:{after}"


def _attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_replaying_every_episode_emits_no_duplicate_spans(hub_url: str, spans: Spans) -> None:
    hub = TaskHub(hub_url, orchestration_cache_size=0)
    hub.register(steps, activities=(add_one,))
    await hub.start()
    try:
        state = await hub.run(steps, 4)
        assert state.output == 4
        history = await hub.client.get_orchestration_history(state.instance_id)
    finally:
        await hub.stop()
    assert hub.worker.orchestration_cache.hits == 0

    episodes = spans.named("orchestration:steps")
    assert len(episodes) == sum(isinstance(e, h.OrchestratorStarted) for e in history)
    replayed = [_attrs(e)["durabletask.orchestration.replayed_events"] for e in episodes]
    assert replayed[0] == 0 and all(r > 0 for r in replayed[1:]), "later episodes replayed"
    activity_ids = Counter(
        _attrs(s)["durabletask.task.task_id"] for s in spans.named("activity:add_one")
    )
    assert activity_ids == Counter({0: 1, 1: 1, 2: 1, 3: 1})
    assert len(spans.named("orchestration:steps:timer")) == 1
    assert len(spans.named("create_orchestration:steps")) == 1


async def test_with_the_cache_later_episodes_replay_nothing(hub: TaskHub, spans: Spans) -> None:
    hub.register(steps, activities=(add_one,))
    await hub.start()
    await hub.run(steps, 3)
    replayed = [
        _attrs(e)["durabletask.orchestration.replayed_events"]
        for e in spans.named("orchestration:steps")
    ]
    assert replayed and set(replayed) == {0}


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    """A hub that a second worker object (another process, as far as it knows) can reach."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    base = require_postgres()
    schema = new_schema()
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        drop_schema(schema)


async def test_a_second_worker_on_the_same_hub_continues_the_trace(
    shared_url: str, spans: Spans
) -> None:
    first = TaskHub(shared_url)
    first.register(approval, activities=(add_one,))
    await first.start()
    iid = await first.client.schedule_new_orchestration(approval, instance_id="restart-1")

    async def waiting() -> bool:
        history = await first.client.get_orchestration_history(iid)
        return sum(isinstance(e, h.OrchestratorCompleted) for e in history) >= 2

    await wait_until(waiting, what="the instance to wait for approval")
    await first.stop()
    SCHEDULED.clear()  # a new process remembers nothing
    create = spans.one("create_orchestration:approval")
    before = {s.context.span_id for s in spans.all()}

    second = TaskHub(shared_url)
    second.register(approval, activities=(add_one,))
    await second.start()
    try:
        await second.client.raise_orchestration_event(iid, "approve", "ann")
        state = await second.client.wait_for_orchestration_completion(iid, timeout=30)
    finally:
        await second.stop()
    assert state.output == "ann:2"

    later = [s for s in spans.all() if s.context.span_id not in before]
    assert {s.name for s in later} == {"orchestration:approval", "activity:add_one"}
    assert {s.context.trace_id for s in spans.all()} == {create.context.trace_id}
    resumed = [s for s in later if s.name == "orchestration:approval"]
    assert {s.parent.span_id for s in resumed if s.parent} == {create.context.span_id}
    assert len(resumed) == 2
    (activity,) = [s for s in later if s.name == "activity:add_one"]
    assert activity.parent is not None and activity.parent.span_id in {
        s.context.span_id for s in resumed
    }


class _HistoryOnly:
    """A store that can only return one history (all the activity span reads)."""

    def __init__(self, history: list[h.HistoryEvent]) -> None:
        self.history = history
        self.reads = 0

    async def get_history(self, instance_id: str) -> list[h.HistoryEvent]:
        self.reads += 1
        return self.history


async def test_an_activity_scheduled_elsewhere_finds_its_parent_in_the_history(
    provider: Any, spans: Spans
) -> None:
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("scheduling episode") as scheduler:
        context = scheduler.get_span_context()
        carrier = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-01"}
    now = datetime.now(UTC)
    history: list[h.HistoryEvent] = [
        h.OrchestratorStarted(timestamp=now),
        h.ExecutionStarted(timestamp=now, name="o", instance_id="i", execution_id="e1"),
        h.TaskScheduled(event_id=0, timestamp=now, name="add_one", trace_context=carrier),
        h.OrchestratorCompleted(timestamp=now),
    ]
    store = _HistoryOnly(history)
    work_item = ActivityWorkItem(1, ActivityRequest("i", "e1", 0, "add_one"), "token", now)

    async def run() -> OrchestrationMessage:
        return OrchestrationMessage("i", h.TaskCompleted(timestamp=now, task_scheduled_id=0))

    await traced_activity(work_item, store, run)  # type: ignore[arg-type]

    span = spans.one("activity:add_one")
    assert store.reads == 1
    assert span.parent is not None and span.parent.span_id == context.span_id
    assert span.context.trace_id == context.trace_id


async def test_an_activity_scheduled_by_this_process_reads_no_history(spans: Spans) -> None:
    now = datetime.now(UTC)
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    SCHEDULED.remember("i", "e1", 3, carrier)
    store = _HistoryOnly([])
    work_item = ActivityWorkItem(1, ActivityRequest("i", "e1", 3, "add_one"), "token", now)

    async def run() -> OrchestrationMessage:
        return OrchestrationMessage("i", h.TaskCompleted(timestamp=now, task_scheduled_id=3))

    await traced_activity(work_item, store, run)  # type: ignore[arg-type]

    span = spans.one("activity:add_one")
    assert store.reads == 0
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert len(SCHEDULED) == 0, "a context is used once"
