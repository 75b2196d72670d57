"""The records of earlier executions: a commit that resets a non-empty history keeps one
compact record of the execution it ends, on every store alike; a worker continuing an
eternal orchestration as new leaves the chain of its executions."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta

import duratask as dt
from duratask.backends.base import (
    EXECUTION_SUMMARY_LENGTH,
    ExecutionRecord,
    OrchestrationCommit,
    TaskHubStore,
)
from duratask.state import OrchestrationStatus

from .conftest import T0, FakeClock
from .e2e_hub import TaskHub
from .test_store_contract import S, create, episode, lock, raised, started, state_of, to


async def counter(ctx: dt.OrchestrationContext, n: int) -> str:
    if n < 3:
        await ctx.create_timer(timedelta(milliseconds=1))  # each round waits once: stored
        ctx.continue_as_new(n + 1)
        return "ignored"
    return f"done at {n}"


async def test_an_eternal_orchestration_leaves_the_chain_of_its_executions(
    store_url: str,
) -> None:
    hub = TaskHub(store_url)
    try:
        hub.register(counter)
        await hub.start()
        state = await hub.run(counter, 0)
        assert state.output == "done at 3"
        records = await hub.client.get_orchestration_executions(state.instance_id)
    finally:
        await hub.stop()
    assert [r.generation for r in records] == [1, 2, 3]
    assert all(r.status is OrchestrationStatus.CONTINUED_AS_NEW for r in records)
    assert [(r.input_summary, r.output_summary) for r in records] == [
        ("0", "1"),
        ("1", "2"),
        ("2", "3"),
    ]
    ids = [r.execution_id for r in records]
    assert len(set(ids)) == 3 and state.execution_id not in ids
    assert records[0].started_at == state.created_at
    for before, after in itertools.pairwise(records):
        assert after.started_at == before.ended_at >= before.started_at
    assert {r.name for r in records} == {"counter"}


async def back_to_back(ctx: dt.OrchestrationContext, n: int) -> str:
    if n < 3:
        ctx.continue_as_new(n + 1)  # nothing awaited: the worker runs the next one at once
        return "ignored"
    return f"done at {n}"


async def inbox(ctx: dt.OrchestrationContext, seen: list[str]) -> list[str]:
    item = await ctx.wait_for_external_event("item")
    if item == "stop":
        return seen
    ctx.continue_as_new([*seen, item], save_events=True)
    return seen


async def test_executions_run_back_to_back_in_one_episode_are_recorded_too(
    store_url: str,
) -> None:
    hub = TaskHub(store_url)
    try:
        hub.register(back_to_back, inbox)
        await hub.start()
        state = await hub.run(back_to_back, 0)
        assert state.output == "done at 3"
        records = await hub.client.get_orchestration_executions(state.instance_id)

        # Events already waiting: each execution consumes one and continues as new, many of
        # them within one episode, some after a stored one.
        iid = await hub.client.schedule_new_orchestration(inbox, input=[])
        await hub.client.wait_for_orchestration_start(iid, timeout=30)
        for item in ["a", "b", "c", "d", "e", "stop"]:
            await hub.client.raise_orchestration_event(iid, "item", data=item)
        done = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
        assert done.output == ["a", "b", "c", "d", "e"]
        handled = await hub.client.get_orchestration_executions(iid)
    finally:
        await hub.stop()
    assert [(r.generation, r.input_summary, r.output_summary) for r in records] == [
        (1, "0", "1"),
        (2, "1", "2"),
        (3, "2", "3"),
    ]
    assert len({r.execution_id for r in records} | {state.execution_id}) == 4
    assert [r.generation for r in handled] == [1, 2, 3, 4, 5]
    assert [r.input_summary for r in handled] == [
        "[]",
        '["a"]',
        '["a","b"]',
        '["a","b","c"]',
        '["a","b","c","d"]',
    ]
    assert [r.output_summary for r in handled[:-1]] == [r.input_summary for r in handled[1:]]
    assert handled[-1].output_summary == '["a","b","c","d","e"]' == done.serialized_input


async def test_a_reset_keeps_a_record_of_the_execution_it_ends(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a", input='"' + "x" * 500 + '"')
    await episode(store, await lock(store))  # execution exec-1 runs
    assert await store.list_executions("a") == []

    # It continues as new on its own (no new events): its record hands on the next input.
    clock.advance(timedelta(seconds=10))
    await store.send_message(to("a", raised("go")))
    work_item = await lock(store)
    stored = await state_of(store, "a")
    ending = dataclasses.replace(
        stored, runtime_status=S.CONTINUED_AS_NEW, serialized_input='"next"'
    )
    await store.commit_episode(
        work_item.fence(),
        OrchestrationCommit(
            state=ending,
            consumed_message_ids=[m.message_id for m in work_item.messages],
            reset_history=True,
        ),
    )
    (first,) = await store.list_executions("a")
    assert first == ExecutionRecord(
        instance_id="a",
        generation=1,
        execution_id="exec-1",
        name="Greet",
        version="1.0",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=10),
        status=S.CONTINUED_AS_NEW,
        input_summary='"' + "x" * (EXECUTION_SUMMARY_LENGTH - 1),
        output_summary='"next"',
    )

    # The next execution starts on an empty history: nothing more to record.
    await store.send_message(to("a", started("a", execution_id="exec-2", input='"next"')))
    await episode(store, await lock(store))
    assert len(await store.list_executions("a")) == 1

    # It completes, and is started again: the completed execution is recorded as such.
    clock.advance(timedelta(seconds=5))
    await store.send_message(to("a", raised("finish")))
    work_item = await lock(store)
    done = dataclasses.replace(
        await state_of(store, "a"),
        runtime_status=S.COMPLETED,
        serialized_output='"result"',
        execution_id="exec-2",
    )
    await store.commit_episode(
        work_item.fence(),
        OrchestrationCommit(
            state=done,
            new_events=[m.message.event for m in work_item.messages],
            consumed_message_ids=[m.message_id for m in work_item.messages],
        ),
    )
    clock.advance(timedelta(seconds=5))
    again = started("a", execution_id="exec-3", input='"again"')
    await store.send_message(to("a", again))
    work_item = await lock(store)
    await store.commit_episode(
        work_item.fence(),
        OrchestrationCommit(
            state=dataclasses.replace(
                done, runtime_status=S.RUNNING, execution_id="exec-3", serialized_output=None
            ),
            new_events=[again],
            consumed_message_ids=[m.message_id for m in work_item.messages],
            reset_history=True,
        ),
    )
    first_again, second = await store.list_executions("a")
    assert first_again == first
    assert (second.generation, second.execution_id, second.status) == (2, "exec-2", S.COMPLETED)
    assert (second.started_at, second.ended_at) == (first.ended_at, T0 + timedelta(seconds=20))
    assert second.output_summary == '"result"'

    assert await store.list_executions("unknown") == []


async def test_records_go_with_a_purged_instance(store: TaskHubStore) -> None:
    await create(store, "a")
    await episode(store, await lock(store))
    await store.send_message(to("a", started("a", execution_id="exec-2")))
    work_item = await lock(store)
    state = dataclasses.replace(
        await state_of(store, "a"), runtime_status=S.COMPLETED, execution_id="exec-2"
    )
    await store.commit_episode(
        work_item.fence(),
        OrchestrationCommit(
            state=state,
            new_events=[m.message.event for m in work_item.messages],
            consumed_message_ids=[m.message_id for m in work_item.messages],
            reset_history=True,
        ),
    )
    assert len(await store.list_executions("a")) == 1
    assert await store.purge_instance("a")
    assert await store.list_executions("a") == []
