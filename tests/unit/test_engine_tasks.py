"""The replay engine's tasks: when_all / when_any, external events, timers and retries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from duratask._actions import (
    CompleteOrchestrationAction,
    CreateSubOrchestrationAction,
    CreateTimerAction,
    ScheduleTaskAction,
)
from duratask.context import OrchestrationContext
from duratask.errors import EventTimeoutError, TaskFailedError
from duratask.retry import RetryPolicy
from duratask.state import OrchestrationStatus
from duratask.task import CompletableTask, when_all, when_any
from tests.unit.history_builder import SEC, T0, HistoryBuilder, execute, payload, registry

MINUTE = timedelta(minutes=1)


def done(value: Any) -> CompleteOrchestrationAction:
    return CompleteOrchestrationAction(OrchestrationStatus.COMPLETED, payload(value))


def failed_with(result: Any) -> tuple[str, str]:
    completion = result.completion
    assert completion is not None, result.actions
    assert completion.status is OrchestrationStatus.FAILED
    assert completion.failure_details is not None
    assert result.actions == [completion]
    return completion.failure_details.error_type, completion.failure_details.message


# -- when_all -----------------------------------------------------------------------------------
async def fan_out(ctx: OrchestrationContext, n: int) -> Any:
    tasks = [ctx.call_activity("work", input=i) for i in range(n)]
    try:
        return await when_all(tasks)
    except TaskFailedError as e:
        return ["failed", e.task_id, e.details.message]


def fan_out_started(n: int = 3) -> HistoryBuilder:
    b = HistoryBuilder().episode().started("fan_out", n)
    for i in range(n):
        b.task_scheduled(i, "work", i)
    return b.done()


def test_fan_out_schedules_every_task_at_once() -> None:
    new = HistoryBuilder().episode().started("fan_out", 3).build()
    assert execute(registry([fan_out]), [], new).actions == [
        ScheduleTaskAction(i, "work", None, str(i)) for i in range(3)
    ]


def test_when_all_results_in_order_regardless_of_completion_order() -> None:
    reg = registry([fan_out])
    b = fan_out_started().episode(new=True).task_completed(2, "c").task_completed(0, "a")
    assert execute(reg, *b.split()).actions == []

    b.done().episode(new=True).task_completed(1, "b")
    assert execute(reg, *b.split()).actions == [done(["a", "b", "c"])]


def test_when_all_fails_fast_with_the_first_failure() -> None:
    reg = registry([fan_out])
    # Task 1 fails while 0 and 2 are still running: no need to wait for them.
    b = fan_out_started().episode(new=True).task_failed(1, "first").task_failed(0, "second")

    assert execute(reg, *b.split()).actions == [done(["failed", 1, "first"])]


def test_when_all_of_nothing_completes_at_once() -> None:
    new = HistoryBuilder().episode().started("fan_out", 0).build()
    assert execute(registry([fan_out]), [], new).actions == [done([])]


def test_when_all_of_already_completed_and_failed_tasks() -> None:
    ok: CompletableTask[int] = CompletableTask()
    ok._set_result(1)
    bad: CompletableTask[int] = CompletableTask()
    bad._set_exception(ValueError("bad"))
    pending: CompletableTask[int] = CompletableTask()

    both = when_all([ok, ok])
    assert both.is_complete and both.get_result() == [1, 1]
    failing = when_all([pending, bad])
    assert failing.is_failed and isinstance(failing.get_exception(), ValueError)


# -- when_any -----------------------------------------------------------------------------------
async def race(ctx: OrchestrationContext, _: Any) -> Any:
    work = ctx.call_activity("work")
    timeout = ctx.create_timer(timedelta(minutes=5))
    winner = await when_any([work, timeout])
    if winner is not work:
        return "timed out"
    first = await winner  # already complete: returns at once
    more = await ctx.call_activity("more", input=first)
    return ["work", first, more]


def race_started() -> HistoryBuilder:
    b = HistoryBuilder().episode().started("race").task_scheduled(0, "work")
    return b.timer_created(1, T0 + 5 * MINUTE).done()


def test_when_any_schedules_both() -> None:
    new = HistoryBuilder().episode().started("race").build()
    assert execute(registry([race]), [], new).actions == [
        ScheduleTaskAction(0, "work"),
        CreateTimerAction(1, T0 + 5 * MINUTE),
    ]


def test_when_any_activity_beats_timer_and_later_timer_fired_is_harmless() -> None:
    reg = registry([race])
    b = race_started().episode(T0 + MINUTE, new=True).task_completed(0, 42)
    assert execute(reg, *b.split()).actions == [ScheduleTaskAction(2, "more", None, "42")]

    b.task_scheduled(2, "more", 42).done()
    b.episode(T0 + 5 * MINUTE, new=True).timer_fired(1)
    assert execute(reg, *b.split()).actions == []

    b.done().episode(new=True).task_completed(2, 43)
    assert execute(reg, *b.split()).actions == [done(["work", 42, 43])]


def test_when_any_timer_fired_in_the_same_batch_after_the_winner() -> None:
    reg = registry([race])
    b = race_started().episode(new=True).task_completed(0, 42).timer_fired(1)

    assert execute(reg, *b.split()).actions == [ScheduleTaskAction(2, "more", None, "42")]


def test_when_any_timer_wins() -> None:
    reg = registry([race])
    b = race_started().episode(T0 + 5 * MINUTE, new=True).timer_fired(1).task_completed(0, 42)

    assert execute(reg, *b.split()).actions == [done("timed out")]


def test_when_any_winner_can_be_a_failed_task() -> None:
    async def first_wins(ctx: OrchestrationContext, _: Any) -> Any:
        a, b = ctx.call_activity("a"), ctx.call_activity("b")
        winner = await when_any([a, b])
        try:
            await winner
        except TaskFailedError as e:
            return ["failed first", winner is b, e.details.message]
        return "no failure"

    h = HistoryBuilder().episode().started("first_wins").task_scheduled(0, "a")
    h.task_scheduled(1, "b").done().episode(new=True).task_failed(1, "b broke").task_completed(0)

    assert execute(registry([first_wins]), *h.split()).actions == [
        done(["failed first", True, "b broke"])
    ]


def test_when_any_needs_tasks() -> None:
    with pytest.raises(ValueError):
        when_any([])


# -- awaiting completed tasks -------------------------------------------------------------------
async def out_of_order(ctx: OrchestrationContext, _: Any) -> Any:
    first = ctx.call_activity("A")
    second = ctx.call_activity("B")
    b = await second
    a = await first  # completed before second: no further event needed
    a_again = await first
    return [a, b, a_again]


def test_awaiting_an_already_completed_task_returns_immediately() -> None:
    reg = registry([out_of_order])
    b = HistoryBuilder().episode().started("out_of_order").task_scheduled(0, "A")
    b.task_scheduled(1, "B").done().episode(new=True).task_completed(0, "a")
    assert execute(reg, *b.split()).actions == []

    b.done().episode(new=True).task_completed(1, "b")
    assert execute(reg, *b.split()).actions == [done(["a", "b", "a"])]


def test_completed_task_await_does_not_suspend() -> None:
    task: CompletableTask[int] = CompletableTask()
    task._set_result(5)
    awaiting = task.__await__()
    with pytest.raises(StopIteration) as stop:
        next(awaiting)
    assert stop.value.value == 5

    failed: CompletableTask[int] = CompletableTask()
    failed._set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        next(failed.__await__())


# -- external events ----------------------------------------------------------------------------
@dataclass
class Approval:
    by: str
    ok: bool


async def approvals(ctx: OrchestrationContext, _: Any) -> Any:
    await ctx.call_activity("prepare")
    first = await ctx.wait_for_external_event("Approval")
    second = await ctx.wait_for_external_event("APPROVAL", data_type=Approval)
    return [first, type(second).__name__, second.by]


def test_events_raised_before_the_wait_are_buffered_and_delivered_in_order() -> None:
    reg = registry([approvals])
    b = HistoryBuilder().episode().started("approvals").task_scheduled(0, "prepare").done()
    b.episode(new=True).event_raised("approval", {"by": "ann", "ok": True})
    b.event_raised("other", 0).event_raised("aPPROVAL", {"by": "bob", "ok": False})
    assert execute(reg, *b.split()).actions == []

    b.done().episode(new=True).task_completed(0)
    assert execute(reg, *b.split()).actions == [
        done([{"by": "ann", "ok": True}, "Approval", "bob"])
    ]


def test_live_events_are_delivered_with_their_type() -> None:
    reg = registry([approvals])
    b = HistoryBuilder().episode().started("approvals").task_scheduled(0, "prepare").done()
    b.episode().task_completed(0).done()
    b.episode(new=True).event_raised("APPROVAL", "one").event_raised("approval", {"by": "cy"})
    b.event_raised("approval", {"by": "not needed"})

    result = execute(reg, *b.split())
    # {"by": "cy"} lacks "ok": decoding it as Approval fails where the event is awaited.
    error_type, message = failed_with(result)
    assert error_type == "SerializationError"
    assert "Approval" in message

    b2 = HistoryBuilder().episode().started("approvals").task_scheduled(0, "prepare").done()
    b2.episode().task_completed(0).done()
    b2.episode(new=True).event_raised("approval", 1).event_raised("x", 2)
    b2.event_raised("Approval", {"by": "di", "ok": True})
    assert execute(reg, *b2.split()).actions == [done([1, "Approval", "di"])]


def test_two_waiters_for_one_name_are_served_first_come_first_served() -> None:
    async def two_waiters(ctx: OrchestrationContext, _: Any) -> Any:
        first = ctx.wait_for_external_event("vote")
        second = ctx.wait_for_external_event("VOTE")
        return await when_all([second, first])

    reg = registry([two_waiters])
    b = HistoryBuilder().episode().started("two_waiters").done()
    b.episode(new=True).event_raised("Vote", "early").event_raised("vote", "late")

    assert execute(reg, *b.split()).actions == [done(["late", "early"])]


async def approval_with_timeout(ctx: OrchestrationContext, _: Any) -> Any:
    try:
        answer = await ctx.wait_for_external_event("approve", timeout=timedelta(hours=1))
        return ["answered", answer]
    except EventTimeoutError as e:
        escalated = await ctx.call_activity("escalate", input=e.event_name)
        again = await ctx.wait_for_external_event("approve")
        return ["escalated", escalated, again]


def approval_started() -> HistoryBuilder:
    b = HistoryBuilder().episode().started("approval_with_timeout")
    return b.timer_created(0, T0 + timedelta(hours=1)).done()


def test_wait_with_timeout_schedules_a_timer() -> None:
    new = HistoryBuilder().episode().started("approval_with_timeout").build()
    assert execute(registry([approval_with_timeout]), [], new).actions == [
        CreateTimerAction(0, T0 + timedelta(hours=1))
    ]


def test_wait_with_timeout_event_wins() -> None:
    reg = registry([approval_with_timeout])
    b = approval_started().episode(T0 + MINUTE, new=True).event_raised("Approve", "yes")
    b.timer_fired(0)  # the timeout firing afterwards changes nothing

    assert execute(reg, *b.split()).actions == [done(["answered", "yes"])]


def test_wait_with_timeout_timer_wins_and_late_event_is_buffered() -> None:
    reg = registry([approval_with_timeout])
    b = approval_started().episode(T0 + timedelta(hours=1), new=True).timer_fired(0)
    assert execute(reg, *b.split()).actions == [
        ScheduleTaskAction(1, "escalate", None, '"approve"')
    ]

    # The event arrives after the timeout: the old waiter is gone, so it is kept for the next.
    b.task_scheduled(1, "escalate", "approve").done()
    b.episode(new=True).event_raised("approve", "late yes")
    assert execute(reg, *b.split()).actions == []

    b.done().episode(new=True).task_completed(1, "manager")
    assert execute(reg, *b.split()).actions == [done(["escalated", "manager", "late yes"])]


def test_uncaught_event_timeout_fails_the_orchestration() -> None:
    async def impatient(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_external_event("go", timeout=timedelta(seconds=5))

    b = HistoryBuilder().episode().started("impatient").timer_created(0, T0 + 5 * SEC).done()
    b.episode(T0 + 5 * SEC, new=True).timer_fired(0)

    error_type, message = failed_with(execute(registry([impatient]), *b.split()))
    assert error_type == "EventTimeoutError"
    assert "'go'" in message


# -- retries ------------------------------------------------------------------------------------
BACKOFF = RetryPolicy(
    first_retry_interval=timedelta(seconds=1),
    backoff_coefficient=2,
    max_number_of_attempts=4,
    max_retry_interval=timedelta(seconds=3),
)


def retrying(policy: RetryPolicy) -> Any:
    async def retrying(ctx: OrchestrationContext, _: Any) -> Any:
        try:
            return ["ok", await ctx.call_activity("flaky", input="x", retry_policy=policy)]
        except TaskFailedError as e:
            return ["gave up", e.details.message]

    return retrying


def test_retry_backoff_timers_then_failure() -> None:
    reg = registry([retrying(BACKOFF)])
    b = HistoryBuilder().episode().started("retrying").task_scheduled(0, "flaky", "x").done()
    seq = 0
    failed_at = T0
    for attempt, delay in enumerate([1, 2, 3], start=1):  # 1s, 2s, then 4s capped at 3s
        failed_at += 10 * SEC
        b.episode(failed_at, new=True).task_failed(seq, f"attempt {attempt}")
        fire_at = failed_at + delay * SEC
        assert execute(reg, *b.split()).actions == [CreateTimerAction(seq + 1, fire_at)]

        b.timer_created(seq + 1, fire_at).done()
        b.episode(fire_at, new=True).timer_fired(seq + 1)
        assert execute(reg, *b.split()).actions == [
            ScheduleTaskAction(seq + 2, "flaky", None, '"x"', attempt=attempt + 1)
        ]
        b.task_scheduled(seq + 2, "flaky", "x").done()
        seq += 2

    b.episode(failed_at + MINUTE, new=True).task_failed(seq, "attempt 4")
    assert execute(reg, *b.split()).actions == [done(["gave up", "attempt 4"])]


def test_retry_succeeds_on_a_later_attempt() -> None:
    reg = registry([retrying(BACKOFF)])
    b = HistoryBuilder().episode().started("retrying").task_scheduled(0, "flaky", "x").done()
    b.episode(T0 + SEC).task_failed(0).timer_created(1, T0 + 2 * SEC).done()
    b.episode(T0 + 2 * SEC).timer_fired(1).task_scheduled(2, "flaky", "x").done()
    b.episode(new=True).task_completed(2, "fine")

    assert execute(reg, *b.split()).actions == [done(["ok", "fine"])]


def test_uncaught_final_failure_fails_with_task_failed_error() -> None:
    once = RetryPolicy(first_retry_interval=SEC, max_number_of_attempts=1)

    async def strict(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("flaky", retry_policy=once)

    b = HistoryBuilder().episode().started("strict").task_scheduled(0, "flaky").done()
    b.episode(new=True).task_failed(0, "nope", "IOError")

    error_type, message = failed_with(execute(registry([strict]), *b.split()))
    assert error_type == "TaskFailedError"
    assert "IOError: nope" in message


def test_retry_timeout_stops_retrying() -> None:
    policy = RetryPolicy(
        first_retry_interval=timedelta(seconds=10),
        max_number_of_attempts=10,
        retry_timeout=timedelta(seconds=15),
    )
    reg = registry([retrying(policy)])
    b = HistoryBuilder().episode().started("retrying").task_scheduled(0, "flaky", "x").done()
    # First failure at +1s: retrying at +11s is within the 15s budget.
    b.episode(T0 + SEC, new=True).task_failed(0, "one")
    assert execute(reg, *b.split()).actions == [CreateTimerAction(1, T0 + 11 * SEC)]

    b.timer_created(1, T0 + 11 * SEC).done()
    b.episode(T0 + 11 * SEC).timer_fired(1).task_scheduled(2, "flaky", "x").done()
    # Second failure at +12s: the next attempt (+22s) would be past the budget.
    b.episode(T0 + 12 * SEC, new=True).task_failed(2, "two")
    assert execute(reg, *b.split()).actions == [done(["gave up", "two"])]


def test_handle_predicate_decides_what_is_retried() -> None:
    policy = RetryPolicy(
        first_retry_interval=SEC,
        max_number_of_attempts=5,
        handle=lambda e: e.details.error_type != "FatalError",
    )
    reg = registry([retrying(policy)])
    b = HistoryBuilder().episode().started("retrying").task_scheduled(0, "flaky", "x").done()
    retried = HistoryBuilder().add(*b.build()).episode(new=True).task_failed(0, "hiccup", "IOError")
    assert execute(reg, *retried.split()).actions == [CreateTimerAction(1, T0 + SEC)]

    fatal = HistoryBuilder().add(*b.build()).episode(new=True).task_failed(0, "dead", "FatalError")
    assert execute(reg, *fatal.split()).actions == [done(["gave up", "dead"])]


def test_non_retriable_failure_is_not_retried() -> None:
    reg = registry([retrying(BACKOFF)])
    b = HistoryBuilder().episode().started("retrying").task_scheduled(0, "flaky", "x").done()
    b.episode(new=True).task_failed(0, "bad input", non_retriable=True)

    assert execute(reg, *b.split()).actions == [done(["gave up", "bad input"])]


def test_sub_orchestration_retry_reuses_the_child_instance_id() -> None:
    async def parent(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_sub_orchestrator("child", input=7, retry_policy=BACKOFF)

    reg = registry([parent])
    b = HistoryBuilder().episode().started("parent").sub_created(0, "child", "inst-1:0000", 7)
    b.done().episode(T0 + SEC, new=True).sub_failed(0, "child broke")
    assert execute(reg, *b.split()).actions == [CreateTimerAction(1, T0 + 2 * SEC)]

    b.timer_created(1, T0 + 2 * SEC).done().episode(T0 + 2 * SEC, new=True).timer_fired(1)
    assert execute(reg, *b.split()).actions == [
        CreateSubOrchestrationAction(2, "child", "inst-1:0000", None, "7")
    ]

    b.sub_created(2, "child", "inst-1:0000", 7).done().episode(new=True).sub_completed(2, "ok")
    assert execute(reg, *b.split()).actions == [done("ok")]


def test_handle_predicate_that_raises_fails_the_task_not_the_engine() -> None:
    def buggy(error: TaskFailedError) -> bool:
        raise RuntimeError("predicate bug")

    policy = RetryPolicy(first_retry_interval=SEC, max_number_of_attempts=5, handle=buggy)
    reg = registry([retrying(policy)])
    b = HistoryBuilder().episode().started("retrying").task_scheduled(0, "flaky", "x").done()
    b.episode(new=True).task_failed(0)

    # retrying() only catches TaskFailedError: the predicate's error fails the orchestration.
    assert failed_with(execute(reg, *b.split())) == ("RuntimeError", "predicate bug")


def test_huge_failure_messages_are_cut_and_say_so() -> None:
    from duratask.state import MAX_FAILURE_TEXT, FailureDetails

    try:
        raise ValueError("x" * (5 * 1024 * 1024))
    except ValueError as exc:
        details = FailureDetails.from_exception(exc)
    assert len(details.message) < MAX_FAILURE_TEXT + 100
    assert details.message.endswith("characters left out ...]")
    assert details.stack_trace is not None
    assert len(details.stack_trace) < MAX_FAILURE_TEXT + 100
    assert details.stack_trace.startswith("[... ")
    small = FailureDetails.from_exception(ValueError("short"))
    assert small.message == "short"
