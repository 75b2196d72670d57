"""Non-determinism detection, and the engine's robustness against garbled histories."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duratask import _actions as act
from duratask import history as h
from duratask._engine import ExecutionResult
from duratask.context import OrchestrationContext
from duratask.errors import EventTimeoutError
from duratask.retry import RetryPolicy
from duratask.state import OrchestrationStatus
from duratask.task import when_all, when_any
from tests.unit.history_builder import SEC, T0, HistoryBuilder, execute, payload, registry


def nondeterminism_message(result: ExecutionResult) -> str:
    completion = result.completion
    assert completion is not None, result.actions
    assert completion.status is OrchestrationStatus.FAILED
    assert completion.failure_details is not None
    assert completion.failure_details.error_type == "NonDeterminismError"
    assert result.actions == [completion]  # nothing else gets scheduled
    message = completion.failure_details.message
    # Every mismatch names both causes (changed code, or code that is not deterministic) and
    # the deterministic replacements, not only a renamed activity.
    for words in ("code changed while this instance was running", "random numbers", "the clock"):
        assert words in message, message
    assert "ctx.current_utc_datetime" in message and "ctx.new_uuid()" in message
    assert "renamed or replaced" not in message
    return message


# -- the code changed under its history ---------------------------------------------------------
def test_changed_activity_name() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("charge_card_v2")

    past = HistoryBuilder().episode().started("orch").task_scheduled(0, "charge_card").done()

    message = nondeterminism_message(execute(registry([orch]), past.build()))
    assert "#0" in message
    assert "'charge_card'" in message
    assert "'charge_card_v2'" in message


def test_changed_action_type_activity_to_timer() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        await ctx.create_timer(timedelta(seconds=5))

    past = HistoryBuilder().episode().started("orch").task_scheduled(0, "send_email").done()

    message = nondeterminism_message(execute(registry([orch]), past.build()))
    assert "#0" in message
    assert "activity 'send_email'" in message
    assert "timer" in message


def test_changed_action_type_timer_to_activity() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        await ctx.call_activity("A")
        await ctx.call_activity("send_email")

    past = HistoryBuilder().episode().started("orch").task_scheduled(0, "A").done()
    past.episode().task_completed(0).timer_created(1, T0 + SEC).done()

    message = nondeterminism_message(execute(registry([orch]), past.build()))
    assert "#1" in message
    assert "timer" in message
    assert "activity 'send_email'" in message


def test_removed_step() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        a = ctx.call_activity("A")
        # ctx.call_activity("audit") used to be here
        return await a

    past = HistoryBuilder().episode().started("orch").task_scheduled(0, "A")
    past.task_scheduled(1, "audit").done()

    message = nondeterminism_message(execute(registry([orch]), past.build()))
    assert "#1" in message
    assert "activity 'audit'" in message
    assert "scheduled nothing" in message


def test_step_moved_after_an_await() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        a = await ctx.call_activity("A")
        b = await ctx.call_activity("B")  # used to be started before awaiting A
        return [a, b]

    past = HistoryBuilder().episode().started("orch").task_scheduled(0, "A")
    past.task_scheduled(1, "B").done().episode().task_completed(0).done()

    message = nondeterminism_message(execute(registry([orch]), past.build()))
    assert "#1" in message
    assert "'B'" in message


def test_changed_sub_orchestration_name() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        await ctx.call_activity("A")
        return await ctx.call_sub_orchestrator("ship_order_v2")

    past = HistoryBuilder().episode().started("orch").task_scheduled(0, "A").done()
    past.episode().task_completed(0).sub_created(1, "ship_order", "inst-1:0001").done()
    past.episode(new=True).sub_completed(1, "shipped")

    message = nondeterminism_message(execute(registry([orch]), *past.split()))
    assert "#1" in message
    assert "'ship_order'" in message
    assert "'ship_order_v2'" in message


@pytest.mark.parametrize(
    ("target", "name"),
    [("billing-2", "invoice"), ("billing-1", "receipt")],
    ids=["other-instance", "other-event-name"],
)
def test_changed_send_event_target(target: str, name: str) -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        ctx.send_event(target, name, 1)
        await ctx.create_timer(timedelta(seconds=1))

    past = HistoryBuilder().episode().started("orch").event_sent(0, "billing-1", "invoice", 1)
    past.timer_created(1, T0 + SEC).done()

    message = nondeterminism_message(execute(registry([orch]), past.build()))
    assert "#0" in message
    assert "'billing-1'" in message and "'invoice'" in message
    assert f"'{target}'" in message and f"'{name}'" in message
    assert message.count("'billing-1'") + message.count("'invoice'") >= 3


def test_nondeterminism_in_new_events_is_detected_too() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("B")

    b = HistoryBuilder().episode().started("orch").mark().task_scheduled(0, "A").done()

    message = nondeterminism_message(execute(registry([orch]), *b.split()))
    assert "'A'" in message and "'B'" in message


def test_orchestration_cannot_catch_nondeterminism() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        try:
            await ctx.call_activity("new_name")
            await ctx.call_activity("next")
        except Exception:
            return "swallowed"
        return "done"

    past = HistoryBuilder().episode().started("orch").task_scheduled(0, "old_name").done()
    past.episode(new=True).task_completed(0)

    message = nondeterminism_message(execute(registry([orch]), *past.split()))
    assert "'old_name'" in message and "'new_name'" in message


def test_matching_history_is_not_nondeterministic() -> None:
    async def orch(ctx: OrchestrationContext, _: Any) -> Any:
        ctx.send_event("peer", "hello")
        a = ctx.call_activity("A")
        t = ctx.create_timer(timedelta(seconds=1))
        s = ctx.call_sub_orchestrator("child", instance_id="kid")
        return await when_all([a, t, s])

    b = HistoryBuilder().episode().started("orch").event_sent(0, "peer", "hello")
    b.task_scheduled(1, "A").timer_created(2, T0 + SEC).sub_created(3, "child", "kid").done()
    b.episode(new=True).task_completed(1, 1).timer_fired(2).sub_completed(3, 3)

    result = execute(registry([orch]), *b.split())
    assert result.actions == [
        act.CompleteOrchestrationAction(OrchestrationStatus.COMPLETED, "[1,null,3]")
    ]


# -- property: garbled histories never crash the engine -----------------------------------------
RETRY = RetryPolicy(
    first_retry_interval=SEC, max_number_of_attempts=3, retry_timeout=timedelta(minutes=1)
)


async def rich(ctx: OrchestrationContext, n: int) -> Any:
    ctx.set_custom_status("start")
    a = await ctx.call_activity("double", input=n, retry_policy=RETRY)
    timer = ctx.create_timer(timedelta(seconds=10))
    go = ctx.wait_for_external_event("go", timeout=timedelta(seconds=30))
    await when_any([timer, go])
    child = await ctx.call_sub_orchestrator("child", input=a)
    results = await when_all([ctx.call_activity("inc", input=i) for i in range(2)])
    ctx.send_event("peer", "done", results)
    try:
        late = await ctx.wait_for_external_event("late", timeout=timedelta(seconds=5))
    except EventTimeoutError:
        late = None
    ctx.set_custom_status("end")
    return [a, await go, child, results, late]


def rich_history() -> list[h.HistoryEvent]:
    b = HistoryBuilder().episode().started("rich", 2).task_scheduled(0, "double", 2).done()
    b.episode(T0 + 1 * SEC).task_failed(0).timer_created(1, T0 + 2 * SEC).done()
    b.episode(T0 + 2 * SEC).timer_fired(1).task_scheduled(2, "double", 2).done()
    b.episode(T0 + 3 * SEC).task_completed(2, 4)
    b.timer_created(3, T0 + 13 * SEC).timer_created(4, T0 + 33 * SEC).done()
    b.episode(T0 + 5 * SEC).event_raised("go", "g").sub_created(5, "child", "inst-1:0005", 4)
    b.done().episode(T0 + 13 * SEC).timer_fired(3).done()
    b.episode(T0 + 20 * SEC).suspended().sub_completed(5, "kid").resumed()
    b.task_scheduled(6, "inc", 0).task_scheduled(7, "inc", 1).done()
    b.episode(T0 + 21 * SEC).task_completed(7, 2).task_completed(6, 1)
    b.event_sent(8, "peer", "done", [1, 2]).timer_created(9, T0 + 26 * SEC).done()
    b.episode(T0 + 26 * SEC).timer_fired(9).event_raised("late", "too late")
    return b.build()


RICH_OUTPUT = [4, "g", "kid", [1, 2], None]

EXTRA_EVENTS: list[h.HistoryEvent] = [
    h.OrchestratorStarted(timestamp=T0 + 40 * SEC),
    h.ExecutionTerminated(timestamp=T0, input=payload("stop")),
    h.ExecutionSuspended(timestamp=T0),
    h.ExecutionResumed(timestamp=T0),
    h.EventRaised(timestamp=T0, name="go", input=payload("again")),
    h.EventRaised(timestamp=T0, name="late", input="not json"),
    h.TaskCompleted(timestamp=T0, task_scheduled_id=99, result="1"),
    h.TaskCompleted(timestamp=T0, task_scheduled_id=2, result="{broken"),
    h.TimerFired(timestamp=T0, timer_id=4, fire_at=T0),
    h.GenericEvent(timestamp=T0, data="x"),
    h.ContinueAsNew(timestamp=T0, result="1"),
    h.ExecutionCompleted(timestamp=T0, status=OrchestrationStatus.COMPLETED),
    h.ExecutionStarted(
        timestamp=T0, name="rich", input="3", instance_id="inst-1", execution_id="exec-1"
    ),
]

NAMES = ["rich", "double", "inc", "child", "go", "late", "GO", "unknown", ""]


def rename(event: h.HistoryEvent, name: str) -> h.HistoryEvent:
    if hasattr(event, "name"):
        return dataclasses.replace(event, name=name)  # type: ignore[call-arg]
    return event


def renumber(event: h.HistoryEvent, number: int) -> h.HistoryEvent:
    for field in ("task_scheduled_id", "timer_id", "event_id"):
        if hasattr(event, field) and getattr(event, field) != -1:
            changes: dict[str, Any] = {field: number}  # which field is known only at run time
            return dataclasses.replace(event, **changes)
    return event


@st.composite
def garbled_histories(draw: st.DrawFn) -> tuple[list[h.HistoryEvent], list[h.HistoryEvent]]:
    events = rich_history()
    for _ in range(draw(st.integers(1, 6))):
        op = draw(
            st.sampled_from(["drop", "duplicate", "swap", "move", "rename", "renumber", "add"])
        )
        i = draw(st.integers(0, len(events) - 1))
        j = draw(st.integers(0, len(events) - 1))
        if op == "drop" and len(events) > 1:
            del events[i]
        elif op == "duplicate":
            events.insert(j, events[i])
        elif op == "swap":
            events[i], events[j] = events[j], events[i]
        elif op == "move":
            events.insert(j, events.pop(i))
        elif op == "rename":
            events[i] = rename(events[i], draw(st.sampled_from(NAMES)))
        elif op == "renumber":
            events[i] = renumber(events[i], draw(st.integers(-1, 12)))
        elif op == "add":
            events.insert(j, draw(st.sampled_from(EXTRA_EVENTS)))
    split = draw(st.integers(0, len(events)))
    return events[:split], events[split:]


def check_result(result: ExecutionResult) -> None:
    assert isinstance(result, ExecutionResult)
    completions = [a for a in result.actions if isinstance(a, act.CompleteOrchestrationAction)]
    assert len(completions) <= 1
    if completions:
        assert result.actions[-1] is completions[0]
        if completions[0].status is OrchestrationStatus.FAILED:
            assert completions[0].failure_details is not None
            assert result.actions == completions
    ids = [a.id for a in result.actions if hasattr(a, "id")]
    assert len(ids) == len(set(ids))


def test_rich_history_replays_cleanly() -> None:
    reg = registry([rich])
    events = rich_history()

    result = execute(reg, events)
    assert result.actions == [
        act.CompleteOrchestrationAction(OrchestrationStatus.COMPLETED, payload(RICH_OUTPUT))
    ]
    assert result.custom_status == '"end"'

    for split in range(len(events) + 1):  # any past/new split gives the same outcome
        assert execute(reg, events[:split], events[split:]).actions == result.actions


def test_retry_before_any_orchestrator_started_does_not_crash() -> None:
    # Found by the property test: with no OrchestratorStarted yet, the engine's clock was a
    # naive datetime, and the retry_timeout check compared it with an aware one (TypeError).
    b = HistoryBuilder().started("rich", 2).task_scheduled(0, "double", 2)
    b.episode(T0 + SEC).task_failed(0)

    result = execute(registry([rich]), b.build())
    check_result(result)
    assert result.completion is not None and result.completion.failure_details is not None
    assert result.completion.failure_details.error_type == "TaskFailedError"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbled_histories())
def test_garbled_histories_never_crash_the_engine(
    history: tuple[list[h.HistoryEvent], list[h.HistoryEvent]],
) -> None:
    past, new = history
    check_result(execute(registry([rich]), past, new))
