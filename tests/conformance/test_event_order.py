"""Events from one sender reach an instance in the order they were sent, and none is lost.

Each scenario checks the exact sequence an orchestration saw, not a sum, under a load that
makes events arrive while episodes run: events raised back to back, several instances at
once. Continue-as-new carries the events the old execution did not process into the new one
ahead of those that arrived since; suspension holds events and releases them in order.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta
from typing import Any

import duratask as dt
from duratask import history as h

from .e2e_hub import TaskHub, wait_until

STREAM = 30


async def collector(ctx: dt.OrchestrationContext, seen: list[int]) -> list[int]:
    """Waits for one value per execution; ``None`` ends the stream."""
    n = await ctx.wait_for_external_event("n")
    if n is None:
        return seen
    ctx.continue_as_new([*seen, n], save_events=True)
    return seen


def echo(ctx: dt.ActivityContext, value: int) -> int:
    return value


async def collector_with_step(ctx: dt.OrchestrationContext, seen: list[int]) -> list[int]:
    """Like :func:`collector`, with an activity between two events, so that events arrive
    while the execution waits for something else."""
    n = await ctx.wait_for_external_event("n")
    if n is None:
        return seen
    n = await ctx.call_activity(echo, input=n)
    ctx.continue_as_new([*seen, n], save_events=True)
    return seen


async def eternal_counter(ctx: dt.OrchestrationContext, total: int) -> int:
    op = await ctx.wait_for_external_event("op")
    if op == "end":
        return total
    ctx.continue_as_new(total + (1 if op == "incr" else -1), save_events=True)
    return total


async def loop_collector(ctx: dt.OrchestrationContext, count: int) -> list[int]:
    """No continue-as-new: one execution waits for ``count`` values in a loop."""
    seen: list[int] = []
    for _ in range(count):
        seen.append(await ctx.wait_for_external_event("n"))
        await ctx.call_activity(echo, input=0)
    return seen


async def send_stream(hub: TaskHub, instance_id: str, values: list[Any], name: str = "n") -> None:
    for value in values:
        await hub.client.raise_orchestration_event(instance_id, name, data=value)


async def test_events_keep_their_order_across_continue_as_new(hub: TaskHub) -> None:
    hub.register(collector)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(collector, input=[])
    await send_stream(hub, iid, [*range(STREAM), None])
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert state.output == list(range(STREAM))


async def test_events_keep_their_order_across_continue_as_new_with_activities(
    hub: TaskHub,
) -> None:
    hub.register(collector_with_step, activities=(echo,))
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(collector_with_step, input=[])
    await send_stream(hub, iid, [*range(STREAM), None])
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.output == list(range(STREAM))


async def test_several_instances_keep_their_streams_in_order(hub: TaskHub) -> None:
    hub.register(collector, collector_with_step, activities=(echo,))
    await hub.start()
    ids = []
    for i in range(6):
        fn = collector if i % 2 else collector_with_step
        ids.append(await hub.client.schedule_new_orchestration(fn, input=[]))
    streams = {iid: [*range(i * 100, i * 100 + 15), None] for i, iid in enumerate(ids)}
    await asyncio.gather(*(send_stream(hub, iid, values) for iid, values in streams.items()))
    for iid, values in streams.items():
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
        assert state.output == values[:-1], iid


async def test_eternal_counter_applies_every_operation_before_the_end(hub: TaskHub) -> None:
    hub.register(eternal_counter)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(eternal_counter, input=0)
    await send_stream(hub, iid, ["incr"] * 7 + ["decr"] * 2 + ["end"], name="op")
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.output == 5
    history = await hub.client.get_orchestration_history(iid)
    raised = [e.input for e in history if isinstance(e, h.EventRaised)]
    assert raised[-1] == '"end"', "the last execution ends with the last event sent"


async def test_events_keep_their_order_without_continue_as_new(hub: TaskHub) -> None:
    hub.register(loop_collector, activities=(echo,))
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(loop_collector, input=STREAM)
    await send_stream(hub, iid, list(range(STREAM)))
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.output == list(range(STREAM))


async def test_events_held_while_suspended_are_released_in_order(hub: TaskHub) -> None:
    hub.register(loop_collector, activities=(echo,))
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(loop_collector, input=20)
    await send_stream(hub, iid, list(range(5)))
    await hub.client.suspend_orchestration(iid, reason="hold on")

    async def suspended() -> bool:
        state = await hub.client.get_orchestration_state(iid)
        return state is not None and state.runtime_status is dt.OrchestrationStatus.SUSPENDED

    await wait_until(suspended, what="the instance to be suspended")
    await send_stream(hub, iid, list(range(5, 15)))
    await hub.client.resume_orchestration(iid, reason="go on")
    await send_stream(hub, iid, list(range(15, 20)))
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.output == list(range(20))


async def test_events_held_while_suspended_carry_over_in_order(hub: TaskHub) -> None:
    hub.register(collector_with_step, activities=(echo,))
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(collector_with_step, input=[])
    await send_stream(hub, iid, list(range(5)))
    await hub.client.suspend_orchestration(iid)
    await send_stream(hub, iid, list(range(5, 12)))
    await hub.client.resume_orchestration(iid)
    await send_stream(hub, iid, [*range(12, 20), None])
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.output == list(range(20))


async def flaky_collector(ctx: dt.OrchestrationContext, seen: list[int]) -> list[int]:
    """Its activity fails once on the value 6; a rewind runs it on from there."""
    while True:
        n = await ctx.wait_for_external_event("n")
        if n is None:
            return seen
        seen = [*seen, await ctx.call_activity(fail_once, input=n)]
        if len(seen) % 4 == 0:
            ctx.continue_as_new(seen, save_events=True)
            return seen


# Per instance: set once the test lets the activity fail (after 7 and 8 were received).
_MAY_FAIL: dict[str, threading.Event] = {}
_FAILED: set[str] = set()


def fail_once(ctx: dt.ActivityContext, value: int) -> int:
    gate = _MAY_FAIL.get(ctx.orchestration_id)
    if value == 6 and gate is not None and ctx.orchestration_id not in _FAILED:
        gate.wait(30)
        _FAILED.add(ctx.orchestration_id)
        raise RuntimeError("transient")
    return value


async def test_a_rewound_execution_keeps_the_events_it_had_received(hub: TaskHub) -> None:
    hub.register(flaky_collector, activities=(fail_once,))
    await hub.start()
    iid = f"flaky-{uuid.uuid4().hex}"
    gate = _MAY_FAIL[iid] = threading.Event()
    await hub.client.schedule_new_orchestration(flaky_collector, input=[], instance_id=iid)
    await send_stream(hub, iid, list(range(9)))

    async def received_all() -> bool:
        history = await hub.client.get_orchestration_history(iid)
        return any(isinstance(e, h.EventRaised) and e.input == "8" for e in history)

    # 7 and 8 are received by the execution before its activity fails on 6.
    await wait_until(received_all, what="the execution to receive 8")
    gate.set()
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    await hub.client.rewind_orchestration(iid, reason="try again")

    async def running_again() -> bool:
        state = await hub.client.get_orchestration_state(iid)
        return state is not None and not state.runtime_status.is_terminal

    await wait_until(running_again, what="the rewound instance to run")
    await send_stream(hub, iid, [*range(9, 14), None])
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert state.output == list(range(14))


async def test_events_sent_by_an_orchestration_arrive_in_order(hub: TaskHub) -> None:
    async def sender(ctx: dt.OrchestrationContext, target: str) -> None:
        for i in range(STREAM):
            ctx.send_event(target, "n", i)
            if i % 7 == 0:
                await ctx.create_timer(timedelta(milliseconds=1))
        ctx.send_event(target, "n", None)

    hub.register(collector, sender)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(collector, input=[])
    await hub.client.schedule_new_orchestration(sender, input=iid)
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.output == list(range(STREAM))
