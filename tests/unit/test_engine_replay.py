"""The replay engine: each history event's handling, replay matching, and the context API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from duratask import history as h
from duratask._actions import (
    CompleteOrchestrationAction,
    CreateSubOrchestrationAction,
    CreateTimerAction,
    ScheduleTaskAction,
    SendEventAction,
    TerminateOrchestrationAction,
)
from duratask._registry import Registry
from duratask.context import OrchestrationContext
from duratask.converter import PayloadCodec
from duratask.errors import PayloadTooLargeError, TaskFailedError
from duratask.state import OrchestrationStatus
from duratask.task import Task, when_all
from tests.unit.history_builder import SEC, T0, HistoryBuilder, execute, payload, registry

COMPLETED = OrchestrationStatus.COMPLETED
FAILED = OrchestrationStatus.FAILED


def done(value: Any) -> CompleteOrchestrationAction:
    return CompleteOrchestrationAction(COMPLETED, payload(value))


# -- orchestrations shared by several tests ---------------------------------------------------
async def double_then_inc(ctx: OrchestrationContext, n: int) -> int:
    a = await ctx.call_activity("double", input=n)
    result: int = await ctx.call_activity("inc", input=a)
    return result


def double_then_inc_gen(ctx: OrchestrationContext, n: int) -> Generator[Task[Any], Any, int]:
    a = yield ctx.call_activity("double", input=n)
    result = yield ctx.call_activity("inc", input=a)
    return int(result)


# -- ExecutionStarted ---------------------------------------------------------------------------
def test_execution_started_passes_input_and_identity() -> None:
    seen: dict[str, Any] = {}

    def identity(ctx: OrchestrationContext, value: int) -> int:
        seen.update(
            instance_id=ctx.instance_id,
            execution_id=ctx.execution_id,
            name=ctx.name,
            version=ctx.version,
            parent=ctx.parent_instance_id,
            value=value,
        )
        return value * 2

    reg = Registry()
    reg.add_orchestration(identity, version="v2")
    parent = h.ParentInstanceInfo("boss", "exec-b", "boss_orch", 7)
    new = HistoryBuilder().episode().started("identity", 21, version="v2", parent=parent).build()

    result = execute(reg, [], new)

    assert result.actions == [done(42)]
    assert seen == {
        "instance_id": "inst-1",
        "execution_id": "exec-1",
        "name": "identity",
        "version": "v2",
        "parent": "boss",
        "value": 21,
    }


# -- TaskScheduled / TaskCompleted --------------------------------------------------------------
@pytest.mark.parametrize("orchestration", [double_then_inc, double_then_inc_gen])
def test_activity_chain_episode_by_episode(orchestration: Any) -> None:
    reg = Registry()
    reg.add_orchestration(orchestration, name="chain")
    b = HistoryBuilder().episode(new=True).started("chain", 3)

    assert execute(reg, *b.split()).actions == [ScheduleTaskAction(0, "double", None, "3")]

    b.task_scheduled(0, "double", 3).done()
    b.episode(new=True).task_completed(0, 6)
    assert execute(reg, *b.split()).actions == [ScheduleTaskAction(1, "inc", None, "6")]

    b.task_scheduled(1, "inc", 6).done()
    b.episode(new=True).task_completed(1, 7)
    assert execute(reg, *b.split()).actions == [done(7)]


def test_replayed_scheduling_event_consumes_its_action() -> None:
    reg = registry([double_then_inc])
    past = HistoryBuilder().episode().started("double_then_inc", 3)
    past.task_scheduled(0, "double", 3).done()

    # Nothing new happened: the activity is already scheduled, so there is nothing to do.
    assert execute(reg, past.build()).actions == []


def test_activity_failure_is_task_failed_error_with_details() -> None:
    async def careful(ctx: OrchestrationContext, _: Any) -> Any:
        try:
            await ctx.call_activity("charge")
        except TaskFailedError as e:
            return [e.details.error_type, e.details.message, e.task_id, str(e)]
        return "no error"

    reg = registry([careful])
    b = HistoryBuilder().episode().started("careful").task_scheduled(0, "charge").done()
    b.episode(new=True).task_failed(0, "card declined", "PaymentError")

    assert execute(reg, *b.split()).actions == [
        done(
            [
                "PaymentError",
                "card declined",
                0,
                "activity 'charge' failed: PaymentError: card declined",
            ]
        )
    ]


def test_uncaught_activity_failure_fails_the_orchestration_with_its_details() -> None:
    reg = registry([double_then_inc])
    b = HistoryBuilder().episode().started("double_then_inc", 3)
    b.task_scheduled(0, "double", 3).done()
    b.episode(new=True).task_failed(0, "overflow", "ArithmeticError")

    result = execute(reg, *b.split())

    assert len(result.actions) == 1
    completion = result.completion
    assert completion is not None and completion.status is FAILED
    assert completion.failure_details is not None
    assert completion.failure_details.error_type == "TaskFailedError"
    assert "ArithmeticError: overflow" in completion.failure_details.message
    assert "'double'" in completion.failure_details.message


def test_duplicate_completion_is_ignored() -> None:
    reg = registry([double_then_inc])
    b = HistoryBuilder().episode().started("double_then_inc", 3)
    b.task_scheduled(0, "double", 3).done()
    b.episode().task_completed(0, 6).task_scheduled(1, "inc", 6).done()
    b.episode(new=True).task_completed(0, 100)  # a redelivered result for the first activity

    assert execute(reg, *b.split()).actions == []


# -- sub-orchestrations -------------------------------------------------------------------------
async def parent_orch(ctx: OrchestrationContext, _: Any) -> Any:
    first = await ctx.call_sub_orchestrator("child", input=1)
    try:
        await ctx.call_sub_orchestrator("child", input=2, instance_id="fixed-id", version="v9")
    except TaskFailedError as e:
        return [first, e.details.error_type, e.details.message]
    return [first]


def test_sub_orchestration_created_completed_and_failed() -> None:
    reg = registry([parent_orch])
    b = HistoryBuilder().episode(new=True).started("parent_orch")
    assert execute(reg, *b.split()).actions == [
        CreateSubOrchestrationAction(0, "child", "inst-1:0000", None, "1")
    ]

    b.sub_created(0, "child", "inst-1:0000", 1).done()
    b.episode(new=True).sub_completed(0, "one")
    assert execute(reg, *b.split()).actions == [
        CreateSubOrchestrationAction(1, "child", "fixed-id", "v9", "2")
    ]

    b.sub_created(1, "child", "fixed-id", 2).done()
    b.episode(new=True).sub_failed(1, "bad child", "RuntimeError")
    assert execute(reg, *b.split()).actions == [done(["one", "RuntimeError", "bad child"])]


# -- timers -------------------------------------------------------------------------------------
async def sleeper(ctx: OrchestrationContext, _: Any) -> str:
    await ctx.create_timer(timedelta(seconds=5))
    await ctx.create_timer(T0 + timedelta(hours=1))
    return ctx.current_utc_datetime.isoformat()


def test_timers_relative_and_absolute() -> None:
    reg = registry([sleeper])
    b = HistoryBuilder().episode(new=True).started("sleeper")
    assert execute(reg, *b.split()).actions == [CreateTimerAction(0, T0 + 5 * SEC)]

    b.timer_created(0, T0 + 5 * SEC).done()
    b.episode(T0 + 6 * SEC, new=True).timer_fired(0)
    assert execute(reg, *b.split()).actions == [CreateTimerAction(1, T0 + timedelta(hours=1))]

    b.timer_created(1, T0 + timedelta(hours=1)).done()
    end = T0 + timedelta(hours=1, seconds=2)
    b.episode(end, new=True).timer_fired(1)
    assert execute(reg, *b.split()).actions == [done(end.isoformat())]


def test_timer_needs_an_aware_datetime() -> None:
    async def naive(ctx: OrchestrationContext, _: Any) -> None:
        await ctx.create_timer(datetime(2030, 1, 1))

    result = execute(registry([naive]), HistoryBuilder().episode().started("naive").build())

    completion = result.completion
    assert completion is not None and completion.status is FAILED
    assert completion.failure_details is not None
    assert completion.failure_details.error_type == "ValueError"
    assert "timezone-aware" in completion.failure_details.message
    assert result.actions == [completion]


# -- EventSent / EventRaised / ignored events ---------------------------------------------------
async def notifier(ctx: OrchestrationContext, _: Any) -> Any:
    ctx.send_event("other-1", "Ping", {"n": 1})
    return await ctx.wait_for_external_event("Pong")


def test_send_event_and_event_raised() -> None:
    reg = registry([notifier])
    b = HistoryBuilder().episode(new=True).started("notifier")
    assert execute(reg, *b.split()).actions == [SendEventAction(0, "other-1", "Ping", '{"n":1}')]

    b.event_sent(0, "other-1", "Ping", {"n": 1}).done()
    assert execute(reg, b.build()).actions == []

    b.episode(new=True).event_raised("Pong", {"n": 2})
    assert execute(reg, *b.split()).actions == [done({"n": 2})]


def test_orchestrator_completed_and_generic_events_change_nothing() -> None:
    reg = registry([double_then_inc])
    b = HistoryBuilder().episode().started("double_then_inc", 3)
    b.add(h.GenericEvent(timestamp=T0, data="hello")).task_scheduled(0, "double", 3).done()
    b.done().episode(new=True).add(h.GenericEvent(timestamp=T0)).task_completed(0, 6).done()

    assert execute(reg, *b.split()).actions == [ScheduleTaskAction(1, "inc", None, "6")]


# -- multi-episode replay -----------------------------------------------------------------------
def test_full_replay_reproduces_pending_actions_and_is_replaying() -> None:
    trace: list[tuple[str, bool, datetime]] = []

    async def pipeline(ctx: OrchestrationContext, n: int) -> Any:
        def note(step: str) -> None:
            trace.append((step, ctx.is_replaying, ctx.current_utc_datetime))

        note("start")
        a = await ctx.call_activity("double", input=n)
        note("doubled")
        timer = ctx.create_timer(timedelta(seconds=30))
        inc = ctx.call_activity("inc", input=a)
        await timer
        note("timer fired")
        b = await inc  # completed in an earlier episode: returns at once
        note("incremented")
        go = await ctx.wait_for_external_event("go")
        note("got event")
        c = await ctx.call_sub_orchestrator("child", input=b)
        note("child done")
        ctx.send_event("watcher", "finished", c)
        return [a, b, go, c]

    reg = registry([pipeline])
    t1, t2, t3, t4, t5 = (T0 + k * SEC for k in (1, 2, 31, 40, 50))
    b = HistoryBuilder()
    # Each step: the new events of an episode, then what the engine must schedule for it.
    steps: list[tuple[list[Any], list[h.HistoryEvent]]] = []

    def episode_then(expect: list[Any]) -> None:
        past, new = b.split()
        steps.append((expect, [*past, *new]))
        assert execute(reg, past, new).actions == expect

    b.episode(new=True).started("pipeline", 3)
    episode_then([ScheduleTaskAction(0, "double", None, "3")])
    b.task_scheduled(0, "double", 3).done()

    b.episode(t1, new=True).task_completed(0, 6)
    episode_then([CreateTimerAction(1, t1 + 30 * SEC), ScheduleTaskAction(2, "inc", None, "6")])
    b.timer_created(1, t1 + 30 * SEC).task_scheduled(2, "inc", 6).done()

    b.episode(t2, new=True).task_completed(2, 7)
    episode_then([])
    b.done()

    b.episode(t3, new=True).timer_fired(1)
    episode_then([])
    b.done()

    b.episode(t4, new=True).event_raised("go", "yes")
    episode_then([CreateSubOrchestrationAction(3, "child", "inst-1:0003", None, "7")])
    b.sub_created(3, "child", "inst-1:0003", 7).done()

    trace.clear()
    b.episode(t5, new=True).sub_completed(3, 8)
    episode_then([SendEventAction(4, "watcher", "finished", "8"), done([6, 7, "yes", 8])])

    # The last run replayed everything before the final episode, then ran it live.
    assert trace == [
        ("start", True, T0),
        ("doubled", True, t1),
        ("timer fired", True, t3),
        ("incremented", True, t3),
        ("got event", True, t4),
        ("child done", False, t5),
    ]

    # Replaying any episode's events as past (without what they scheduled) reproduces the
    # very actions that episode produced live, with is_replaying True throughout.
    for expect, events in steps:
        trace.clear()
        assert execute(reg, events).actions == expect
        assert trace and all(replaying for _, replaying, _ in trace)


# -- deterministic context API ------------------------------------------------------------------
def test_new_uuid_is_stable_across_replays_and_unique_per_call() -> None:
    ids: list[uuid.UUID] = []

    async def ids_orch(ctx: OrchestrationContext, _: Any) -> Any:
        ids.append(ctx.new_uuid())
        ids.append(ctx.new_uuid())
        await ctx.create_timer(timedelta(seconds=1))
        ids.append(ctx.new_uuid())
        return [str(ids[-3]), str(ids[-2]), str(ids[-1])]

    reg = registry([ids_orch])
    b = HistoryBuilder().episode().started("ids_orch").timer_created(0, T0 + SEC).done()
    b.episode(T0 + SEC, new=True).timer_fired(0)

    first = execute(reg, *b.split())
    first_ids = list(ids)
    ids.clear()
    again = execute(reg, *b.split())

    assert ids == first_ids
    assert len(set(first_ids)) == 3
    assert first.actions == again.actions == [done([str(u) for u in first_ids])]

    ids.clear()
    execute(reg, *b.split(), instance_id="another-instance")
    assert set(ids).isdisjoint(first_ids)


def test_current_utc_datetime_is_the_episode_start() -> None:
    times: list[datetime] = []

    async def clock(ctx: OrchestrationContext, _: Any) -> None:
        times.append(ctx.current_utc_datetime)
        await ctx.call_activity("work")
        times.append(ctx.current_utc_datetime)
        await ctx.call_activity("work")
        times.append(ctx.current_utc_datetime)

    reg = registry([clock])
    b = HistoryBuilder().episode().started("clock").task_scheduled(0, "work").done()
    b.episode(T0 + 7 * SEC).task_completed(0).task_scheduled(1, "work").done()
    b.episode(T0 + 99 * SEC, new=True).task_completed(1)

    execute(reg, *b.split())

    assert times == [T0, T0 + 7 * SEC, T0 + 99 * SEC]


def test_custom_status_is_the_last_value_set() -> None:
    async def status(ctx: OrchestrationContext, _: Any) -> None:
        ctx.set_custom_status({"stage": "started"})
        await ctx.call_activity("work")
        ctx.set_custom_status({"stage": "working", "pct": 50})
        await ctx.call_activity("work")

    reg = registry([status])
    b = HistoryBuilder().episode(new=True).started("status")
    assert execute(reg, *b.split()).custom_status == '{"stage":"started"}'

    b.task_scheduled(0, "work").done().episode(new=True).task_completed(0)
    assert execute(reg, *b.split()).custom_status == '{"stage":"working","pct":50}'


def test_generator_orchestration_matches_async_def() -> None:
    async_reg, gen_reg = registry([double_then_inc]), registry([double_then_inc_gen])
    for name, reg in (("double_then_inc", async_reg), ("double_then_inc_gen", gen_reg)):
        b = HistoryBuilder().episode().started(name, 5).task_scheduled(0, "double", 5).done()
        b.episode().task_completed(0, 10).task_scheduled(1, "inc", 10).done()
        b.episode(new=True).task_completed(1, 11)
        assert execute(reg, *b.split()).actions == [done(11)]


def test_plain_function_orchestration_completes_at_once() -> None:
    def plain(ctx: OrchestrationContext, n: int) -> int:
        return n + 1

    result = execute(registry([plain]), HistoryBuilder().episode().started("plain", 1).build())
    assert result.actions == [done(2)]


# -- errors in orchestration code ---------------------------------------------------------------
def failure_of(result: Any) -> tuple[str, str]:
    completion = result.completion
    assert completion is not None and completion.status is FAILED, result.actions
    assert completion.failure_details is not None
    assert result.actions == [completion]
    return completion.failure_details.error_type, completion.failure_details.message


def test_awaiting_asyncio_sleep_fails_naming_it() -> None:
    async def sleepy(ctx: OrchestrationContext, _: Any) -> None:
        await ctx.call_activity("work")
        await asyncio.sleep(0)

    b = HistoryBuilder().episode().started("sleepy").task_scheduled(0, "work").done()
    b.episode(new=True).task_completed(0)

    error_type, message = failure_of(execute(registry([sleepy]), *b.split()))
    assert error_type == "TypeError"
    assert "not a duratask task" in message
    what_was_awaited = message.split("which is not")[0].replace("'sleepy'", "")
    assert "sleep" in what_was_awaited, message


def test_awaiting_an_asyncio_future_fails_naming_it() -> None:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()

        async def futuristic(ctx: OrchestrationContext, _: Any) -> None:
            await future

        result = execute(
            registry([futuristic]), HistoryBuilder().episode().started("futuristic").build()
        )
    finally:
        loop.close()

    error_type, message = failure_of(result)
    assert error_type == "TypeError"
    assert "not a duratask task" in message
    assert "Future" in message.split("which is not")[0], message


def test_exception_in_orchestration_fails_it() -> None:
    async def broken(ctx: OrchestrationContext, _: Any) -> None:
        ctx.call_activity("scheduled but discarded")
        raise KeyError("missing")

    result = execute(registry([broken]), HistoryBuilder().episode().started("broken").build())

    assert failure_of(result) == ("KeyError", "'missing'")


def test_unknown_orchestration_name_fails() -> None:
    result = execute(
        registry([double_then_inc]), HistoryBuilder().episode().started("nope").build()
    )

    error_type, message = failure_of(result)
    assert error_type == "OrchestrationNotRegisteredError"
    assert "'nope'" in message
    assert "double_then_inc" in message


def test_unknown_orchestration_version_fails() -> None:
    reg = Registry()
    reg.add_orchestration(double_then_inc, version="v1")
    new = HistoryBuilder().episode().started("double_then_inc", 1, version="v2").build()

    error_type, message = failure_of(execute(reg, [], new))
    assert error_type == "OrchestrationNotRegisteredError"
    assert "'double_then_inc'" in message
    assert "'v2'" in message
    assert "'v1'" in message


# -- typed payloads -----------------------------------------------------------------------------
@dataclass
class Order:
    item: str
    qty: int


@dataclass
class Quote:
    total: float
    currency: str


def price(ctx: Any, order: Order) -> Quote:
    return Quote(order.qty * 2.5, "EUR")


async def typed_orch(ctx: OrchestrationContext, order: Order) -> Any:
    assert isinstance(order, Order), type(order)
    by_fn = await ctx.call_activity(price, input=order)
    by_name = await ctx.call_activity("price", input=order)
    untyped = await ctx.call_activity("unregistered", input=order)
    told = await ctx.call_activity("unregistered", input=order, return_type=Quote)
    return [
        type(by_fn).__name__,
        by_fn.total,
        type(by_name).__name__,
        type(untyped).__name__,
        type(told).__name__,
    ]


def test_typed_input_and_activity_result_decoding() -> None:
    reg = registry([typed_orch], [price])
    quote = {"total": 10.0, "currency": "EUR"}
    b = HistoryBuilder().episode(new=True).started("typed_orch", {"item": "pen", "qty": 4})
    assert execute(reg, *b.split()).actions == [
        ScheduleTaskAction(0, "price", None, '{"item":"pen","qty":4}')
    ]

    b.task_scheduled(0, "price").done().episode().task_completed(0, quote)
    b.task_scheduled(1, "price").done().episode().task_completed(1, quote)
    b.task_scheduled(2, "unregistered").done().episode().task_completed(2, quote)
    b.task_scheduled(3, "unregistered").done().episode(new=True).task_completed(3, quote)

    # An activity named by a string decodes to plain JSON, unless return_type says more.
    assert execute(reg, *b.split()).actions == [done(["Quote", 10.0, "Quote", "dict", "Quote"])]


def test_undecodable_input_fails_the_orchestration() -> None:
    new = HistoryBuilder().episode().started("typed_orch", {"item": "pen"}).build()

    error_type, message = failure_of(execute(registry([typed_orch]), [], new))
    assert error_type == "SerializationError"
    assert "Order" in message


# -- payload size limit -------------------------------------------------------------------------
SMALL = PayloadCodec(max_payload_bytes=100)
BIG = "x" * 200


def test_oversize_activity_input_raises_inside_the_orchestration() -> None:
    async def big_input(ctx: OrchestrationContext, _: Any) -> Any:
        try:
            ctx.call_activity("store", input=BIG)
        except PayloadTooLargeError as e:
            return ["caught", e.size, e.limit]
        return "not raised"

    new = HistoryBuilder().episode().started("big_input").build()
    assert execute(registry([big_input]), [], new, codec=SMALL).actions == [
        done(["caught", 202, 100])
    ]


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda ctx: ctx.call_activity("store", input=BIG), "input of activity 'store'"),
        (lambda ctx: ctx.call_sub_orchestrator("sub", input=BIG), "input of sub-orchestration"),
        (lambda ctx: ctx.send_event("x", "evt", BIG), "data of event 'evt'"),
        (lambda ctx: ctx.set_custom_status(BIG), "custom status"),
        (lambda ctx: ctx.continue_as_new(BIG), "input of continue_as_new"),
    ],
)
def test_uncaught_oversize_payload_fails_naming_the_call_site(call: Any, what: str) -> None:
    async def oversize(ctx: OrchestrationContext, _: Any) -> None:
        call(ctx)

    new = HistoryBuilder().episode().started("oversize").build()
    error_type, message = failure_of(execute(registry([oversize]), [], new, codec=SMALL))
    assert error_type == "PayloadTooLargeError"
    assert what in message
    assert "100 bytes" in message


@pytest.mark.parametrize("style", ["async", "plain"])
def test_oversize_or_unserialisable_output_fails_the_orchestration(style: str) -> None:
    async def big_async(ctx: OrchestrationContext, _: Any) -> str:
        return BIG

    def big_plain(ctx: OrchestrationContext, _: Any) -> str:
        return BIG

    async def unserialisable(ctx: OrchestrationContext, _: Any) -> object:
        return object()

    fn = big_async if style == "async" else big_plain
    reg = Registry()
    reg.add_orchestration(fn, name="big")
    reg.add_orchestration(unserialisable)

    new = HistoryBuilder().episode().started("big").build()
    error_type, message = failure_of(execute(reg, [], new, codec=SMALL))
    assert error_type == "PayloadTooLargeError"
    assert "output of orchestration 'big'" in message

    new = HistoryBuilder().episode().started("unserialisable").build()
    error_type, message = failure_of(execute(reg, [], new))
    assert error_type == "SerializationError"
    assert "object" in message


# -- continue-as-new ----------------------------------------------------------------------------
def make_collector(save_events: bool) -> Any:
    async def collector(ctx: OrchestrationContext, items: list[str]) -> None:
        await ctx.call_activity("prepare")
        first = await ctx.wait_for_external_event("item")
        ctx.continue_as_new([*items, first], save_events=save_events)

    return collector


@pytest.mark.parametrize("save_events", [True, False])
def test_continue_as_new_carries_unconsumed_events_only_with_save_events(
    save_events: bool,
) -> None:
    reg = registry([make_collector(save_events)])
    b = HistoryBuilder().episode().started("collector", ["z"]).task_scheduled(0, "prepare").done()
    b.episode(new=True).event_raised("item", "a").event_raised("noise", 1)
    b.task_completed(0).event_raised("item", "b").event_raised("Item", "c")
    _, new = b.split()
    noise, b_event, c_event = new[2], new[4], new[5]

    result = execute(reg, *b.split())

    # "noise" was received and never consumed; "b" and "c" came after the end: not applied,
    # they are the next execution's whatever save_events says (the worker leaves them queued).
    carried = (noise,) if save_events else ()
    assert result.actions == [
        CompleteOrchestrationAction(
            OrchestrationStatus.CONTINUED_AS_NEW, '["z","a"]', carryover_events=carried
        )
    ]
    assert new.index(b_event) == result.events_applied
    assert c_event is new[-1]


def test_continue_as_new_keeps_actions_scheduled_before_it() -> None:
    async def restart(ctx: OrchestrationContext, n: int) -> None:
        ctx.send_event("watcher", "round", n)
        ctx.continue_as_new(n + 1)

    new = HistoryBuilder().episode().started("restart", 1).build()

    assert execute(registry([restart]), [], new).actions == [
        SendEventAction(0, "watcher", "round", "1"),
        CompleteOrchestrationAction(OrchestrationStatus.CONTINUED_AS_NEW, "2"),
    ]


def test_nothing_scheduled_after_continue_as_new_is_emitted() -> None:
    async def restarts(ctx: OrchestrationContext, n: int) -> None:
        ctx.send_event("watcher", "round", n)
        ctx.continue_as_new(n + 1)
        await ctx.call_activity("after_continue_as_new")

    new = HistoryBuilder().episode().started("restarts", 1).build()

    assert execute(registry([restarts]), [], new).actions == [
        SendEventAction(0, "watcher", "round", "1"),
        CompleteOrchestrationAction(OrchestrationStatus.CONTINUED_AS_NEW, "2"),
    ]


# -- suspend / resume ---------------------------------------------------------------------------
async def two_events(ctx: OrchestrationContext, _: Any) -> Any:
    a = await ctx.call_activity("A")
    first = await ctx.wait_for_external_event("go")
    second = await ctx.wait_for_external_event("go")
    return [a, first, second]


def test_events_while_suspended_are_held_until_resumed() -> None:
    reg = registry([two_events])
    b = HistoryBuilder().episode().started("two_events").task_scheduled(0, "A").done()
    b.episode(new=True).suspended("maintenance").task_completed(0, 1)
    b.event_raised("go", "first").event_raised("go", "second")

    assert execute(reg, *b.split()).actions == []

    b.done().episode(new=True).resumed()
    assert execute(reg, *b.split()).actions == [done([1, "first", "second"])]


def test_suspend_and_resume_in_one_batch_delivers_in_order() -> None:
    reg = registry([two_events])
    b = HistoryBuilder().episode().started("two_events").task_scheduled(0, "A").done()
    b.episode(new=True).event_raised("go", "before").suspended().task_completed(0, 1)
    b.event_raised("go", "held").resumed()

    assert execute(reg, *b.split()).actions == [done([1, "before", "held"])]


def test_suspended_instance_can_be_terminated() -> None:
    reg = registry([two_events])
    b = HistoryBuilder().episode().started("two_events").task_scheduled(0, "A").done()
    b.episode(new=True).suspended().task_completed(0, 1).terminated("stop")

    assert execute(reg, *b.split()).actions == [
        CompleteOrchestrationAction(OrchestrationStatus.TERMINATED, '"stop"')
    ]


# -- terminate ----------------------------------------------------------------------------------
async def fan_out_children(ctx: OrchestrationContext, _: Any) -> Any:
    tasks = [
        ctx.call_sub_orchestrator("child", input=1),
        ctx.call_sub_orchestrator("child", input=2, instance_id="kid-2"),
        ctx.call_sub_orchestrator("child", input=3),
    ]
    return await when_all(tasks)


def fan_out_history() -> HistoryBuilder:
    b = HistoryBuilder().episode().started("fan_out_children")
    b.sub_created(0, "child", "inst-1:0000", 1).sub_created(1, "child", "kid-2", 2)
    b.sub_created(2, "child", "inst-1:0002", 3).done()
    return b.episode().sub_completed(1, "ok").done()


def test_terminate_recurses_into_open_sub_orchestrations() -> None:
    b = fan_out_history().episode(new=True).terminated("stop", recurse=True)

    assert execute(registry([fan_out_children]), *b.split()).actions == [
        TerminateOrchestrationAction("inst-1:0000", '"stop"', recurse=True),
        TerminateOrchestrationAction("inst-1:0002", '"stop"', recurse=True),
        CompleteOrchestrationAction(OrchestrationStatus.TERMINATED, '"stop"'),
    ]


def test_terminate_without_recurse_leaves_children_alone() -> None:
    b = fan_out_history().episode(new=True).terminated("stop", recurse=False)

    assert execute(registry([fan_out_children]), *b.split()).actions == [
        CompleteOrchestrationAction(OrchestrationStatus.TERMINATED, '"stop"')
    ]


def test_terminate_drops_actions_of_the_same_episode_and_later_events() -> None:
    reg = registry([double_then_inc])
    b = HistoryBuilder().episode().started("double_then_inc", 1).task_scheduled(0, "double", 1)
    b.done().episode(new=True).task_completed(0, 2).terminated().task_completed(1, 3)

    assert execute(reg, *b.split()).actions == [
        CompleteOrchestrationAction(OrchestrationStatus.TERMINATED, None)
    ]
