"""The hub integrity check: each rule catches its corruption, real hubs pass, and it is fast."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import duratask as dt
from duratask import history as h
from duratask.backends import open_store
from duratask.backends.base import OrchestrationCommit, OrchestrationMessage, TaskHubStore
from duratask.backends.memory import MemoryOrchestrationService
from duratask.integrity import (
    IntegrityProblem,
    IntegrityRule,
    check_hub,
    check_hub_sync,
    check_instance,
    scan_hub,
)
from duratask.state import FailureDetails, OrchestrationState, OrchestrationStatus
from duratask.worker._instance_state import advance_state
from tests.conformance.e2e_hub import TaskHub, wait_until
from tests.unit.history_builder import INSTANCE_ID, SEC, T0, HistoryBuilder, payload

from .figures import count

pytestmark = pytest.mark.timeout(60)
S = OrchestrationStatus
R = IntegrityRule


def row_for(events: list[h.HistoryEvent], instance_id: str = INSTANCE_ID) -> OrchestrationState:
    """The row the worker would have written for this history."""
    return advance_state(instance_id, None, events, now=T0 + 60 * SEC, custom_status=None)


def valid_history() -> list[h.HistoryEvent]:
    """Activities, a timer, a sub-orchestration, an event, sent and raised; completed."""
    b = HistoryBuilder().episode().started("orch", 1).task_scheduled(0, "a", 1).done()
    b.episode(T0 + SEC).task_completed(0, 2).timer_created(1, T0 + 5 * SEC)
    b.sub_created(2, "child", "inst-1:0002", 2).done()
    b.episode(T0 + 5 * SEC).timer_fired(1).event_raised("go", "x").done()
    b.episode(T0 + 6 * SEC).sub_completed(2, 3).event_sent(3, "peer", "hi", 1).done()
    b.episode(T0 + 7 * SEC).suspended().resumed().task_scheduled(4, "b").done()
    b.episode(T0 + 8 * SEC).task_failed(4).add(
        h.ExecutionCompleted(
            timestamp=T0 + 8 * SEC,
            status=S.FAILED,
            failure_details=FailureDetails("TaskFailedError", "b failed"),
        )
    )
    return b.done().build()


def rules(problems: list[IntegrityProblem]) -> set[IntegrityRule]:
    return {p.rule for p in problems}


def test_a_valid_history_has_no_problems() -> None:
    events = valid_history()
    assert check_instance(row_for(events), events) == []


def completed(status: S = S.COMPLETED, result: Any = "done") -> h.ExecutionCompleted:
    return h.ExecutionCompleted(timestamp=T0 + 9 * SEC, status=status, result=payload(result))


def rewound_history() -> list[h.HistoryEvent]:
    """Failed on activity #1, rewound, #1 ran again and the execution completed."""
    fail = FailureDetails("TaskFailedError", "x")
    b = HistoryBuilder().episode().started("orch").task_scheduled(0, "a").done()
    b.episode(T0 + SEC).task_completed(0).task_scheduled(1, "b").done()
    b.episode(T0 + 2 * SEC).task_failed(1)
    b.add(h.ExecutionCompleted(timestamp=T0, status=S.FAILED, failure_details=fail)).done()
    b.episode(T0 + 3 * SEC).add(h.ExecutionRewound(timestamp=T0 + 3 * SEC)).done()
    b.episode(T0 + 4 * SEC).task_completed(1, "ok").add(completed()).done()
    return b.build()


def test_a_rewound_history_has_no_problems() -> None:
    events = rewound_history()
    assert check_instance(row_for(events), events) == []


def test_a_rewound_execution_may_fail_and_be_rewound_again() -> None:
    fail = FailureDetails("TaskFailedError", "x")
    events = rewound_history()[:-4]  # up to the rewind episode
    b = HistoryBuilder(T0 + 4 * SEC).episode().task_failed(1)
    b.add(h.ExecutionCompleted(timestamp=T0, status=S.FAILED, failure_details=fail)).done()
    b.episode().add(h.ExecutionRewound(timestamp=T0)).done()
    b.episode().task_completed(1, "ok").add(completed()).done()
    events += b.build()
    assert check_instance(row_for(events), events) == []


def test_the_row_of_a_running_instance_may_lag_nothing() -> None:
    events = valid_history()[:6]  # through the second episode's first events... then cut
    events = [*valid_history()[:4]]
    assert check_instance(row_for(events), events) == []
    assert row_for(events).runtime_status is S.RUNNING


# -- every rule, from a corrupted history ------------------------------------------------------
def _drop_start(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [x for x in e if not isinstance(x, h.ExecutionStarted)]


def _start_later(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [e[0], e[2], e[1], *e[3:]]


def _start_other(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    start = e[1]
    assert isinstance(start, h.ExecutionStarted)
    return [e[0], dataclasses.replace(start, instance_id="someone-else"), *e[2:]]


def _second_start(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [*e[:4], e[1], *e[4:]]


def _outside_episode(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [*e[:4], h.EventRaised(timestamp=T0, name="x"), *e[4:]]


def _unclosed(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return e[:-1]


def _nested_episode(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [e[0], e[0], *e[1:]]


def _negative_id(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [*e[:2], dataclasses.replace(e[2], event_id=-5), *e[3:]]


def _duplicate_scheduled(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    scheduled = e[2]
    assert isinstance(scheduled, h.TaskScheduled)
    return [*e[:3], dataclasses.replace(scheduled, name="again"), *e[3:]]


def _retyped_id(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    # The timer takes the activity's id 0.
    return [dataclasses.replace(x, event_id=0) if isinstance(x, h.TimerCreated) else x for x in e]


def _orphan(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [*e[:5], h.TaskCompleted(timestamp=T0, task_scheduled_id=42), *e[5:]]


def _wrong_kind(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    # A TimerFired answering the activity #0.
    return [*e[:5], h.TimerFired(timestamp=T0, timer_id=0, fire_at=T0), *e[5:]]


def _result_first(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    # The activity's result before its scheduling event.
    return [e[0], e[1], e[5], e[2], e[3], e[4], *e[6:]]


def _duplicate_result(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [*e[:6], e[5], *e[6:]]


def _after_completion(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [*e[:-1], h.EventRaised(timestamp=T0, name="late"), e[-1]]


def _episode_after_completion(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [*e, h.OrchestratorStarted(timestamp=T0), h.OrchestratorCompleted(timestamp=T0)]


def _rewind_of_running(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    return [*e[:4], h.ExecutionRewound(timestamp=T0), *e[4:]]


def _rewind_then_duplicate_of_success(e: list[h.HistoryEvent]) -> list[h.HistoryEvent]:
    # After the rewind only the failed task #4 may get a new result, not the activity #0.
    return [
        *e,
        h.OrchestratorStarted(timestamp=T0),
        h.ExecutionRewound(timestamp=T0),
        h.OrchestratorCompleted(timestamp=T0),
        h.OrchestratorStarted(timestamp=T0),
        h.TaskCompleted(timestamp=T0, task_scheduled_id=0),
        h.OrchestratorCompleted(timestamp=T0),
    ]


CORRUPTIONS: dict[str, tuple[Callable[[list[h.HistoryEvent]], list[h.HistoryEvent]], R]] = {
    "no-start": (_drop_start, R.MISSING_START),
    "start-later": (_start_later, R.START_NOT_FIRST),
    "start-of-other": (_start_other, R.START_NAMES_OTHER_INSTANCE),
    "second-start": (_second_start, R.DUPLICATE_START),
    "outside-episode": (_outside_episode, R.EPISODE_STRUCTURE),
    "unclosed-episode": (_unclosed, R.EPISODE_STRUCTURE),
    "nested-episode": (_nested_episode, R.EPISODE_STRUCTURE),
    "negative-id": (_negative_id, R.BAD_SCHEDULING_ID),
    "duplicate-scheduled": (_duplicate_scheduled, R.DUPLICATE_SCHEDULING_ID),
    "id-reused-by-timer": (_retyped_id, R.DUPLICATE_SCHEDULING_ID),
    "orphan-result": (_orphan, R.ORPHAN_RESULT),
    "result-of-wrong-kind": (_wrong_kind, R.ORPHAN_RESULT),
    "result-before-scheduled": (_result_first, R.ORPHAN_RESULT),
    "duplicate-result": (_duplicate_result, R.DUPLICATE_RESULT),
    "event-after-completion": (_after_completion, R.EVENT_AFTER_COMPLETION),
    "episode-after-completion": (_episode_after_completion, R.EVENT_AFTER_COMPLETION),
    "rewind-of-running": (_rewind_of_running, R.REWIND_WITHOUT_FAILURE),
    "result-after-rewind-of-success": (_rewind_then_duplicate_of_success, R.DUPLICATE_RESULT),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_rule_catches_its_corruption(name: str) -> None:
    corrupt, rule = CORRUPTIONS[name]
    good = valid_history()
    bad = corrupt(list(good))
    problems = check_instance(row_for(good), bad)
    assert rule in rules(problems), problems
    problem = next(p for p in problems if p.rule is rule)
    assert problem.instance_id == INSTANCE_ID
    assert INSTANCE_ID in str(problem) and str(rule) in str(problem)
    if problem.event_index is not None:
        assert problem.event is bad[problem.event_index]
        assert f"#{problem.event_index}" in str(problem)
    assert problem.to_dict()["rule"] == str(rule)


def test_a_duplicate_timer_after_a_rewind_is_caught() -> None:
    # A rewound execution must not see a timer that already fired fire again.
    fail = FailureDetails("TaskFailedError", "x")
    b = HistoryBuilder().episode().started("orch").timer_created(0, T0 + SEC)
    b.task_scheduled(1, "a").done()
    b.episode(T0 + SEC).timer_fired(0).task_failed(1)
    b.add(h.ExecutionCompleted(timestamp=T0, status=S.FAILED, failure_details=fail)).done()
    b.episode().add(h.ExecutionRewound(timestamp=T0)).done()
    b.episode().timer_fired(0).task_completed(1).done()
    events = b.build()
    problems = check_instance(row_for(events), events)
    assert rules(problems) == {R.DUPLICATE_RESULT}
    assert "task 0" in problems[0].message


ROW_CORRUPTIONS: dict[str, tuple[dict[str, Any], R]] = {
    "status": ({"runtime_status": S.RUNNING}, R.STATUS_MISMATCH),
    "other-terminal-status": ({"runtime_status": S.COMPLETED}, R.STATUS_MISMATCH),
    "name": ({"name": "renamed"}, R.ROW_MISMATCH),
    "execution-id": ({"execution_id": "other-exec"}, R.ROW_MISMATCH),
    "input": ({"serialized_input": "99"}, R.ROW_MISMATCH),
    "parent": ({"parent_instance_id": "dad"}, R.ROW_MISMATCH),
    "task-queue": ({"task_queue": "elsewhere"}, R.ROW_MISMATCH),
    "output": ({"serialized_output": '"forged"'}, R.OUTPUT_MISMATCH),
    "failure": ({"failure_details": FailureDetails("X", "other")}, R.OUTPUT_MISMATCH),
    "completion-time": ({"completed_at": None}, R.OUTPUT_MISMATCH),
}


@pytest.mark.parametrize("name", list(ROW_CORRUPTIONS))
def test_a_row_that_disagrees_with_its_history_is_caught(name: str) -> None:
    changes, rule = ROW_CORRUPTIONS[name]
    events = valid_history()
    row = dataclasses.replace(row_for(events), **changes)
    assert rules(check_instance(row, events)) == {rule}


def test_an_unfinished_row_with_an_output_is_caught() -> None:
    events = valid_history()[:4]
    row = dataclasses.replace(row_for(events), serialized_output='"early"')
    problems = check_instance(row, events)
    assert rules(problems) == {R.OUTPUT_MISMATCH}
    assert "RUNNING" in problems[0].message


@pytest.mark.parametrize("status", list(S))
def test_an_empty_history_fits_only_pending_and_continued_as_new(status: S) -> None:
    row = dataclasses.replace(row_for(valid_history()[:2]), runtime_status=status)
    problems = check_instance(row, [])
    if status in (S.PENDING, S.CONTINUED_AS_NEW):
        assert problems == []
    else:
        assert R.STATUS_MISMATCH in rules(problems)


# -- real hubs ---------------------------------------------------------------------------------
def work(ctx: dt.ActivityContext, n: int) -> int:
    return n + 1


def fail(ctx: dt.ActivityContext, n: int) -> int:
    raise ValueError(f"no {n}")


async def child(ctx: dt.OrchestrationContext, n: int) -> int:
    return int(await ctx.call_activity(work, input=n))


async def everything(ctx: dt.OrchestrationContext, n: int) -> Any:
    a = await ctx.call_activity(work, input=n)
    b = await ctx.call_sub_orchestrator(child, input=a)
    await ctx.create_timer(timedelta(milliseconds=1))
    try:
        await ctx.call_activity(fail, input=b)
    except dt.TaskFailedError:
        pass
    go = await ctx.wait_for_external_event("go")
    ctx.send_event(ctx.instance_id, "self", go)
    return [a, b, go]


async def doomed(ctx: dt.OrchestrationContext, n: int) -> int:
    return int(await ctx.call_activity(fail, input=n))


async def waits(ctx: dt.OrchestrationContext, _: None) -> Any:
    return await ctx.wait_for_external_event("never")


async def counts_down(ctx: dt.OrchestrationContext, n: int) -> int:
    if n > 0:
        ctx.continue_as_new(n - 1)
        return 0
    return int(await ctx.call_activity(work, input=100))


async def populate(hub: TaskHub) -> dict[str, S]:
    """Instances in every state the public API can reach; returns the expected statuses."""
    c = hub.client
    ids = {
        "done": await c.schedule_new_orchestration(everything, input=1, instance_id="done"),
        "failed": await c.schedule_new_orchestration(doomed, input=1, instance_id="failed"),
        "looped": await c.schedule_new_orchestration(counts_down, input=3, instance_id="looped"),
        "running": await c.schedule_new_orchestration(waits, instance_id="running"),
        "suspended": await c.schedule_new_orchestration(waits, instance_id="suspended"),
        "terminated": await c.schedule_new_orchestration(waits, instance_id="terminated"),
        "later": await c.schedule_new_orchestration(
            waits, instance_id="later", start_at=datetime.now(UTC) + timedelta(hours=1)
        ),
    }
    await c.raise_orchestration_event("done", "go", "yes")
    for iid in ("running", "suspended", "terminated"):
        await c.wait_for_orchestration_start(iid, timeout=30)
    await c.suspend_orchestration("suspended")
    await c.terminate_orchestration("terminated", output="bye")
    for iid in ("done", "failed", "looped", "terminated"):
        await c.wait_for_orchestration_completion(iid, timeout=30)

    async def suspended() -> bool:
        state = await c.get_orchestration_state("suspended")
        return state is not None and state.runtime_status is S.SUSPENDED

    await wait_until(suspended, what="the instance to be suspended")
    assert ids["done"] == "done"
    return {
        "done": S.COMPLETED,
        "done:0001": S.COMPLETED,
        "failed": S.FAILED,
        "looped": S.COMPLETED,
        "running": S.RUNNING,
        "suspended": S.SUSPENDED,
        "terminated": S.TERMINATED,
        "later": S.PENDING,
    }


async def test_a_real_hub_passes_through_every_kind_of_target(store_url: str) -> None:
    hub = TaskHub(store_url)
    hub.register(everything, child, doomed, waits, counts_down, activities=(work, fail))
    await hub.start()
    try:
        expected = await populate(hub)
        page = await hub.client.query_orchestrations(page_size=1000)
        assert {s.instance_id: s.runtime_status for s in page.states} == expected
        done = await hub.client.get_orchestration_state("done")
        assert done is not None and done.output == [2, 3, "yes"]

        report = await scan_hub(hub.client)
        assert report.problems == []
        assert (report.instances_checked, report.instances_skipped) == (len(expected), 0)
        assert await check_hub(hub.client.store) == []
        assert await check_hub(store_url) == []
        # The synchronous forms, from another thread as synchronous callers would be.
        assert await asyncio.to_thread(check_hub_sync, store_url) == []
        with dt.TaskHubClient(store_url) as sync_client:
            assert await asyncio.to_thread(check_hub_sync, sync_client) == []
        count("integrity: real instances checked", report.instances_checked)
    finally:
        await hub.stop()


async def test_corruption_committed_through_the_store_is_found(store: TaskHubStore) -> None:
    """A bad episode slipped in through the store protocol (as a buggy worker would)."""
    start = h.ExecutionStarted(
        timestamp=T0, name="orch", instance_id="victim", execution_id="e1", input=payload(1)
    )
    await store.create_instance(OrchestrationMessage("victim", start), replaceable=frozenset())
    await store.create_instance(
        OrchestrationMessage("bystander", dataclasses.replace(start, instance_id="bystander")),
        replaceable=frozenset(),
    )
    for _ in range(2):
        item = await store.lock_next_orchestration_work_item("w", timedelta(minutes=1))
        assert item is not None
        events = [
            h.OrchestratorStarted(timestamp=T0),
            item.messages[0].message.event,
            h.TaskScheduled(event_id=0, timestamp=T0, name="a"),
            h.TaskCompleted(timestamp=T0, task_scheduled_id=0, result="1"),
            h.OrchestratorCompleted(timestamp=T0),
        ]
        if item.instance_id == "victim":
            events.insert(4, h.TaskCompleted(timestamp=T0, task_scheduled_id=0, result="2"))
        state = advance_state(item.instance_id, item.state, events, now=T0, custom_status=None)
        commit = OrchestrationCommit(
            state=state,
            new_events=events,
            consumed_message_ids=[m.message_id for m in item.messages],
        )
        await store.commit_episode(item.fence(), commit)

    problems = await check_hub(store)
    assert [(p.instance_id, p.rule, p.event_index) for p in problems] == [
        ("victim", R.DUPLICATE_RESULT, 4)
    ]
    assert "a second result for task 0" in str(problems[0])


async def test_a_row_changing_while_read_is_read_again() -> None:
    """A live hub: the row moves between the reads; the check retries, then skips it."""
    store = MemoryOrchestrationService()
    events = valid_history()
    start = events[1]
    assert isinstance(start, h.ExecutionStarted)
    await store.create_instance(OrchestrationMessage(INSTANCE_ID, start), frozenset())
    item = await store.lock_next_orchestration_work_item("w", timedelta(minutes=1))
    assert item is not None
    commit = OrchestrationCommit(
        state=row_for(events), new_events=events, consumed_message_ids=[item.messages[0].message_id]
    )
    await store.commit_episode(item.fence(), commit)
    real_get_instance = store.get_instance
    calls = 0

    async def moving(instance_id: str) -> OrchestrationState | None:
        nonlocal calls
        calls += 1
        state = await real_get_instance(instance_id)
        assert state is not None
        return dataclasses.replace(state, last_updated_at=state.last_updated_at + calls * SEC)

    store.get_instance = moving  # type: ignore[method-assign]
    report = await scan_hub(store)
    assert (report.instances_checked, report.instances_skipped, report.problems) == (0, 1, [])
    assert calls == 3

    calls = -(10**6)  # moves no more once the first re-read settles it
    store.get_instance = real_get_instance  # type: ignore[method-assign]
    assert (await scan_hub(store)).instances_checked == 1


async def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="store URL, a store or a task hub client"):
        await check_hub(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency"):
        await check_hub("memory://x", concurrency=0)


# -- speed -------------------------------------------------------------------------------------
async def seed(store: TaskHubStore, n: int) -> None:
    """``n`` completed instances with a 4-episode history each, written as a worker would."""
    template = HistoryBuilder().episode().started("orch", 1).task_scheduled(0, "a", 1).done()
    template.episode().task_completed(0, 2).timer_created(1, T0 + SEC).done()
    template.episode().timer_fired(1).sub_created(2, "c", "c-1").done()
    template.episode().sub_completed(2, 3).add(completed(result=3)).done()
    events = template.build()
    started = events[1]
    assert isinstance(started, h.ExecutionStarted)

    async def create(i: int) -> None:
        iid = f"i-{i:06d}"
        start = dataclasses.replace(started, instance_id=iid, execution_id=uuid.uuid4().hex)
        await store.create_instance(OrchestrationMessage(iid, start), frozenset())

    async def run_one() -> None:
        item = await store.lock_next_orchestration_work_item("w", timedelta(minutes=5))
        assert item is not None
        history = [events[0], item.messages[0].message.event, *events[2:]]
        state = advance_state(item.instance_id, item.state, history, now=T0, custom_status=None)
        await store.commit_episode(
            item.fence(),
            OrchestrationCommit(
                state=state,
                new_events=history,
                consumed_message_ids=[m.message_id for m in item.messages],
            ),
        )

    batch = 100  # concurrent writes share SQLite commits; small batches keep locking cheap
    for first in range(0, n, batch):
        size = min(batch, n - first)
        await asyncio.gather(*(create(i) for i in range(first, first + size)))
        await asyncio.gather(*(run_one() for _ in range(size)))


@pytest.mark.parametrize(("kind", "n"), [("memory", 3000), ("sqlite", 3000)])
async def test_thousands_of_instances_are_all_checked(kind: str, n: int, tmp_path: Path) -> None:
    """Every instance of a big hub is read and checked (the rate is a figure, printed; a
    speed target would belong in benchmarks/)."""
    url = f"memory://{uuid.uuid4().hex}" if kind == "memory" else f"sqlite:///{tmp_path}/h.db"
    store = open_store(url)
    await store.open()
    try:
        await seed(store, n)
        began = time.perf_counter()
        report = await scan_hub(store)
        took = time.perf_counter() - began
    finally:
        await store.close()
    assert (report.instances_checked, report.problems) == (n, [])
    count(f"integrity: {kind} instances checked per second (of {n})", int(n / took))


# -- entities --------------------------------------------------------------------------------
def tally(ctx: dt.EntityContext, amount: int) -> None:
    ctx.set_state(ctx.get_state(int, 0) + amount)


async def hold_the_lock(ctx: dt.OrchestrationContext, _: None) -> None:
    async with ctx.lock_entities("@tally@held"):
        await ctx.wait_for_external_event("let-go")


async def test_entities_are_checked_and_their_corruptions_found(tmp_path: Path) -> None:
    """A live lock and real states pass; a state that is not JSON and a lock whose holder
    is gone (written into the file, as a crash of some other tool might leave them) are
    each reported, and the orphaned lock no longer once clean_entity_storage released it."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = TaskHub(url)
    hub.register(hold_the_lock)
    hub.worker.add_entity(tally)
    await hub.start()
    try:
        client = hub.client
        for key in ("a", "b", "c"):
            await client.signal_entity(f"@tally@{key}", "add", 2)
        holder = await client.schedule_new_orchestration(hold_the_lock)

        async def settled() -> bool:
            held = await client.get_entity("@tally@held")
            found = [await client.get_entity(f"@tally@{k}") for k in "abc"]
            return held is not None and held.locked_by == holder and all(found)

        await wait_until(settled, 30, "the states and the lock")
        report = await scan_hub(client)
        assert report.problems == [] and report.entities_checked == 4
    finally:
        await hub.stop()

    with sqlite3.connect(tmp_path / "hub.db") as db:
        db.execute("UPDATE entities SET state = '{\"count\": ' WHERE entity_id = '@tally@a'")
        db.execute("UPDATE entities SET locked_by = 'gone' WHERE entity_id = '@tally@b'")
    problems = await check_hub(url)
    assert sorted((p.instance_id, p.rule) for p in problems) == [
        ("@tally@a", R.ENTITY_STATE_NOT_JSON),
        ("@tally@b", R.ENTITY_LOCK_ORPHANED),
    ], problems
    orphan = next(p for p in problems if p.rule is R.ENTITY_LOCK_ORPHANED)
    assert "'gone', which does not exist" in orphan.message
    async with dt.AsyncTaskHubClient(url) as client:
        cleaned = await client.clean_entity_storage()
        assert cleaned.orphaned_locks_released == 1
        assert [p.rule for p in await check_hub(client)] == [R.ENTITY_STATE_NOT_JSON]
