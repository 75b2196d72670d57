"""End-to-end behaviour of orchestrations, the same on every store."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duratask as dt
from duratask import history as h
from duratask.backends.base import InstanceUnchanged, OrchestrationWorkItem, SupportsEagerStart

from .e2e_hub import TaskHub, wait_until

pytestmark = pytest.mark.timeout(60)


# -- activities ----------------------------------------------------------------------------
def say_hello(ctx: dt.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


async def double(ctx: dt.ActivityContext, n: int) -> int:
    return n * 2


def explode(ctx: dt.ActivityContext, message: str) -> None:
    raise ValueError(message)


_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


def flaky(ctx: dt.ActivityContext, key: str) -> str:
    """Fails on the first two attempts for a key, succeeds on the third."""
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        attempt = _attempts[key]
    if attempt < 3:
        raise ConnectionError(f"attempt {attempt} failed")
    return f"ok after {attempt}"


# -- orchestrations ------------------------------------------------------------------------------
async def hello_sequence(ctx: dt.OrchestrationContext, _: None) -> list[str]:
    return [
        await ctx.call_activity(say_hello, input=city) for city in ("Tokyo", "Seattle", "London")
    ]


async def fan_out(ctx: dt.OrchestrationContext, n: int) -> int:
    results = await dt.when_all([ctx.call_activity(double, input=i) for i in range(n)])
    return sum(results)


async def catch_failure(ctx: dt.OrchestrationContext, _: None) -> str:
    try:
        await ctx.call_activity(explode, input="boom")
    except dt.TaskFailedError as err:
        return f"caught {err.details.error_type}: {err.details.message}"
    return "not reached"


async def uncaught_failure(ctx: dt.OrchestrationContext, _: None) -> None:
    await ctx.call_activity(explode, input="kaput")


async def retrying(ctx: dt.OrchestrationContext, key: str) -> str:
    policy = dt.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=20), max_number_of_attempts=5
    )
    result: str = await ctx.call_activity(flaky, input=key, retry_policy=policy)
    return result


async def sleeper(ctx: dt.OrchestrationContext, ms: int) -> str:
    start = ctx.current_utc_datetime
    await ctx.create_timer(timedelta(milliseconds=ms))
    return f"{(ctx.current_utc_datetime - start).total_seconds() * 1000:.0f}"


async def approval(ctx: dt.OrchestrationContext, _: None) -> Any:
    return await ctx.wait_for_external_event("approve")


async def approval_with_timeout(ctx: dt.OrchestrationContext, ms: int) -> str:
    try:
        value = await ctx.wait_for_external_event("approve", timeout=timedelta(milliseconds=ms))
    except dt.EventTimeoutError:
        return "timed out"
    return f"approved by {value}"


async def child(ctx: dt.OrchestrationContext, n: int) -> int:
    if n < 0:
        raise RuntimeError("negative input")
    doubled: int = await ctx.call_activity(double, input=n)
    return doubled


async def parent(ctx: dt.OrchestrationContext, n: int) -> Any:
    try:
        return await ctx.call_sub_orchestrator(
            child, input=n, instance_id=f"{ctx.instance_id}-child"
        )
    except dt.TaskFailedError as err:
        return f"child failed: {err.details.message}"


async def counter(ctx: dt.OrchestrationContext, total: int) -> int:
    await ctx.wait_for_external_event("add")
    total += 1
    ctx.set_custom_status(total)
    if total < 50:
        ctx.continue_as_new(total, save_events=True)
    return total


async def waits_forever(ctx: dt.OrchestrationContext, _: None) -> None:
    await ctx.wait_for_external_event("never")


async def tree(ctx: dt.OrchestrationContext, depth: int) -> None:
    if depth > 0:
        await ctx.call_sub_orchestrator(tree, input=depth - 1, instance_id=f"{ctx.instance_id}/c")
    else:
        await ctx.wait_for_external_event("never")


async def two_events(ctx: dt.OrchestrationContext, _: None) -> list[Any]:
    first = await ctx.wait_for_external_event("step")
    second = await ctx.wait_for_external_event("step")
    return [first, second]


async def staged(ctx: dt.OrchestrationContext, _: None) -> None:
    ctx.set_custom_status({"stage": "waiting"})
    await ctx.wait_for_external_event("go")
    ctx.set_custom_status({"stage": "done"})


async def inbox(ctx: dt.OrchestrationContext, count: int) -> list[Any]:
    return [await ctx.wait_for_external_event("ping") for _ in range(count)]


async def pinger(ctx: dt.OrchestrationContext, target: str) -> str:
    ctx.send_event(target, "ping", data=ctx.instance_id)
    return "sent"


async def quick(ctx: dt.OrchestrationContext, value: Any) -> Any:
    return value


def generator_style(ctx: dt.OrchestrationContext, name: str) -> Any:
    greeting = yield ctx.call_activity(say_hello, input=name)
    doubled = yield dt.when_all([ctx.call_activity(double, input=i) for i in range(3)])
    return [greeting, doubled]


@dataclasses.dataclass
class Point:
    x: int
    y: int


async def typed(ctx: dt.OrchestrationContext, p: Point) -> dict[str, Any]:
    return {"kind": type(p).__name__, "sum": p.x + p.y}


async def big_output(ctx: dt.OrchestrationContext, size: int) -> str:
    return "x" * size


# -- tests ----------------------------------------------------------------------------------------
async def test_hello_sequence(hub: TaskHub) -> None:
    hub.register(hello_sequence, activities=(say_hello,))
    await hub.start()
    state = await hub.run(hello_sequence)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert state.output == ["Hello, Tokyo!", "Hello, Seattle!", "Hello, London!"]
    history = await hub.client.get_orchestration_history(state.instance_id)
    scheduled = [e for e in history if isinstance(e, h.TaskScheduled)]
    assert [e.event_id for e in scheduled] == [0, 1, 2]
    assert isinstance(history[-2], h.ExecutionCompleted)


async def test_cached_episodes_replay_nothing(hub: TaskHub, cache_size: int) -> None:
    hub.register(hello_sequence, activities=(say_hello,))
    store = hub.worker.store
    events_read: list[int] = []

    straight: list[int] = []

    lock, commit = store.lock_next_orchestration_work_item, store.commit_episode

    # Episodes run on a leased work item (a fetch), or on the result of an activity this
    # worker ran, straight away, committed with it: no lease, no read.
    async def leasing(*args: Any, **kwargs: Any) -> Any:
        work_item = await lock(*args, **kwargs)
        if isinstance(work_item, OrchestrationWorkItem):
            events_read.append(len(work_item.history))
        return work_item

    async def committing(fence: Any, *args: Any, **kwargs: Any) -> Any:
        leased = await commit(fence, *args, **kwargs)
        if isinstance(fence, InstanceUnchanged):
            events_read.append(0)
            straight.append(1)
        return leased

    originals: dict[str, Any] = {
        "lock_next_orchestration_work_item": lock,
        "commit_episode": commit,
    }
    store.lock_next_orchestration_work_item = leasing  # type: ignore[method-assign]
    store.commit_episode = committing  # type: ignore[method-assign]
    if isinstance(store, SupportsEagerStart):  # the first episode may start with the create
        create = originals["create_and_lease_instance"] = store.create_and_lease_instance

        async def creating(*args: Any, **kwargs: Any) -> Any:
            work_item = await create(*args, **kwargs)
            if work_item is not None:
                events_read.append(len(work_item.history))
            return work_item

        store.create_and_lease_instance = creating  # type: ignore[method-assign]
    try:
        await hub.start()
        await hub.run(hello_sequence)
        # The client may see the end before the worker's last commit call has returned.
        await hub.stop()
    finally:
        for name, lease in originals.items():
            setattr(store, name, lease)
    cache = hub.worker.orchestration_cache
    assert len(events_read) == 4, "one episode to start, one per activity result"
    if cache_size == 0:
        assert cache.hits == 0
        assert sum(events_read) > 0
    else:
        # Each activity result continues the cursor the episode before left in the cache,
        # and the store sends no history for it.
        assert cache.hits == 3
        assert events_read == [0, 0, 0, 0]
        assert len(straight) == 3, "each result ran the next step at once"
        assert len(cache) == 0, "a completed instance leaves the cache"


async def test_fan_out_fan_in_of_100_activities(hub: TaskHub) -> None:
    hub.register(fan_out, activities=(double,))
    await hub.start()
    state = await hub.run(fan_out, 100)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert state.output == sum(i * 2 for i in range(100))


async def test_handled_activity_failure(hub: TaskHub) -> None:
    hub.register(catch_failure, activities=(explode,))
    await hub.start()
    state = await hub.run(catch_failure)
    assert state.output == "caught ValueError: boom"


async def test_unhandled_activity_failure_fails_instance(hub: TaskHub) -> None:
    hub.register(uncaught_failure, activities=(explode,))
    await hub.start()
    state = await hub.run(uncaught_failure)
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type == "TaskFailedError"
    assert "kaput" in state.failure_details.message
    with pytest.raises(dt.OrchestrationFailedError, match="kaput"):
        state.raise_if_failed()


async def test_retry_succeeds_on_third_attempt(
    hub: TaskHub, request: pytest.FixtureRequest
) -> None:
    hub.register(retrying, activities=(flaky,))
    await hub.start()
    key = request.node.nodeid
    state = await hub.run(retrying, key)
    assert state.output == "ok after 3"
    history = await hub.client.get_orchestration_history(state.instance_id)
    assert sum(isinstance(e, h.TaskFailed) for e in history) == 2
    assert sum(isinstance(e, h.TimerCreated) for e in history) == 2


async def test_durable_timer(hub: TaskHub) -> None:
    hub.register(sleeper)
    await hub.start()
    state = await hub.run(sleeper, 50)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert int(state.output) >= 50
    history = await hub.client.get_orchestration_history(state.instance_id)
    fired = [e for e in history if isinstance(e, h.TimerFired)]
    assert len(fired) == 1


async def test_external_event_raised_after_the_wait(hub: TaskHub) -> None:
    hub.register(approval)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(approval)

    async def waiting() -> bool:
        history = await hub.client.get_orchestration_history(iid)
        return any(isinstance(e, h.OrchestratorCompleted) for e in history)

    await wait_until(waiting, what="the orchestration to start waiting")
    await hub.client.raise_orchestration_event(iid, "approve", data={"by": "alice"})
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.output == {"by": "alice"}


async def test_external_event_raised_before_the_wait_is_buffered(hub: TaskHub) -> None:
    hub.register(approval)
    iid = await hub.client.schedule_new_orchestration(approval)
    await hub.client.raise_orchestration_event(iid, "APPROVE", data="early")
    await hub.start()
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.output == "early"


async def test_events_are_delivered_in_order(hub: TaskHub) -> None:
    hub.register(two_events)
    iid = await hub.client.schedule_new_orchestration(two_events)
    for value in ("first", "second"):
        await hub.client.raise_orchestration_event(iid, "step", data=value)
    await hub.start()
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.output == ["first", "second"]


async def test_event_wait_times_out(hub: TaskHub) -> None:
    hub.register(approval_with_timeout)
    await hub.start()
    state = await hub.run(approval_with_timeout, 30)
    assert state.output == "timed out"


async def test_event_wait_with_timeout_gets_the_event(hub: TaskHub) -> None:
    hub.register(approval_with_timeout)
    iid = await hub.client.schedule_new_orchestration(approval_with_timeout, input=60_000)
    await hub.client.raise_orchestration_event(iid, "approve", data="bob")
    await hub.start()
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.output == "approved by bob"


async def test_sub_orchestration_success(hub: TaskHub) -> None:
    hub.register(parent, child, activities=(double,))
    await hub.start()
    state = await hub.run(parent, 21)
    assert state.output == 42
    child_state = await hub.client.get_orchestration_state(f"{state.instance_id}-child")
    assert child_state is not None
    assert child_state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert child_state.parent_instance_id == state.instance_id


async def test_sub_orchestration_failure(hub: TaskHub) -> None:
    hub.register(parent, child, activities=(double,))
    await hub.start()
    state = await hub.run(parent, -1)
    assert state.output == "child failed: negative input"
    child_state = await hub.client.get_orchestration_state(f"{state.instance_id}-child")
    assert child_state is not None
    assert child_state.runtime_status is dt.OrchestrationStatus.FAILED


async def test_continue_as_new_eternal_counter_keeps_every_event(hub: TaskHub) -> None:
    hub.register(counter)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(counter, input=0)
    for _ in range(50):
        await hub.client.raise_orchestration_event(iid, "add")
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=60)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert state.output == 50
    history = await hub.client.get_orchestration_history(iid)
    started = [e for e in history if isinstance(e, h.ExecutionStarted)]
    assert len(started) == 1, "continue-as-new starts each execution with a fresh history"


async def test_terminate_is_recursive(hub: TaskHub) -> None:
    hub.register(tree)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(tree, input=2, instance_id="root")
    leaf = "root/c/c"

    async def leaf_running() -> bool:
        state = await hub.client.get_orchestration_state(leaf)
        return state is not None and state.runtime_status is dt.OrchestrationStatus.RUNNING

    await wait_until(leaf_running, what="the grandchild to run")
    await hub.client.terminate_orchestration(iid, output="enough")
    for instance in ("root", "root/c", leaf):
        state = await hub.client.wait_for_orchestration_completion(instance, timeout=30)
        assert state.runtime_status is dt.OrchestrationStatus.TERMINATED, instance
    root = await hub.client.get_orchestration_state("root")
    assert root is not None and root.output == "enough"


async def test_terminate_not_recursive_leaves_children(hub: TaskHub) -> None:
    hub.register(tree)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(tree, input=1, instance_id="solo")

    async def child_running() -> bool:
        state = await hub.client.get_orchestration_state("solo/c")
        return state is not None and state.runtime_status is dt.OrchestrationStatus.RUNNING

    await wait_until(child_running, what="the child to run")
    await hub.client.terminate_orchestration(iid, recursive=False)
    await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    state = await hub.client.get_orchestration_state("solo/c")
    assert state is not None and state.runtime_status is dt.OrchestrationStatus.RUNNING


async def test_suspend_and_resume_with_event_raised_while_suspended(hub: TaskHub) -> None:
    hub.register(approval)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(approval)
    await hub.client.wait_for_orchestration_start(iid, timeout=30)
    await hub.client.suspend_orchestration(iid, reason="maintenance")

    async def suspended() -> bool:
        state = await hub.client.get_orchestration_state(iid)
        return state is not None and state.runtime_status is dt.OrchestrationStatus.SUSPENDED

    await wait_until(suspended, what="SUSPENDED")
    await hub.client.raise_orchestration_event(iid, "approve", data="while suspended")

    async def event_recorded() -> bool:
        history = await hub.client.get_orchestration_history(iid)
        return any(isinstance(e, h.EventRaised) for e in history)

    await wait_until(event_recorded, what="the event to be recorded")
    state = await hub.client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status is dt.OrchestrationStatus.SUSPENDED
    await hub.client.resume_orchestration(iid)
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.output == "while suspended"


async def test_purge_single_and_by_filter(hub: TaskHub) -> None:
    hub.register(quick)
    await hub.start()
    ids = [(await hub.run(quick, i)).instance_id for i in range(3)]
    assert await hub.client.purge_orchestration(ids[0]) == 1
    assert await hub.client.get_orchestration_state(ids[0]) is None
    with pytest.raises(dt.OrchestrationNotFoundError):
        await hub.client.get_orchestration_history(ids[0])
    purged = await hub.client.purge_orchestrations(
        created_before=datetime.now(UTC) + timedelta(seconds=1),
        statuses=[dt.OrchestrationStatus.COMPLETED],
    )
    assert purged == 2
    for iid in ids:
        assert await hub.client.get_orchestration_state(iid) is None


async def test_purge_of_running_instance_is_refused(hub: TaskHub) -> None:
    hub.register(waits_forever)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(waits_forever)
    await hub.client.wait_for_orchestration_start(iid, timeout=30)
    with pytest.raises(dt.InvalidOperationError):
        await hub.client.purge_orchestration(iid)
    assert await hub.client.get_orchestration_state(iid) is not None


async def test_query_with_paging(hub: TaskHub) -> None:
    hub.register(quick)
    await hub.start()
    for i in range(7):
        await hub.run(quick, i, instance_id=f"q-{i}")
    await hub.run(quick, 99, instance_id="other")
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await hub.client.query_orchestrations(
            instance_id_prefix="q-", page_size=3, continuation_token=token
        )
        seen.extend(s.instance_id for s in page.states)
        pages += 1
        token = page.continuation_token
        if token is None:
            break
    assert sorted(seen) == [f"q-{i}" for i in range(7)]
    assert pages == 3
    by_name = await hub.client.query_orchestrations(
        name="quick", statuses=[dt.OrchestrationStatus.COMPLETED]
    )
    assert len(by_name.states) == 8


async def test_scheduled_start(hub: TaskHub) -> None:
    hub.register(quick)
    await hub.start()
    start_at = datetime.now(UTC) + timedelta(milliseconds=300)
    iid = await hub.client.schedule_new_orchestration(quick, input="later", start_at=start_at)
    state = await hub.client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status is dt.OrchestrationStatus.PENDING
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.output == "later"
    history = await hub.client.get_orchestration_history(iid)
    assert history[0].timestamp >= start_at


async def test_duplicate_instance_id(hub: TaskHub) -> None:
    hub.register(waits_forever)
    await hub.start()
    await hub.client.schedule_new_orchestration(waits_forever, instance_id="dup")
    with pytest.raises(dt.OrchestrationAlreadyExistsError):
        await hub.client.schedule_new_orchestration(waits_forever, instance_id="dup")


async def test_completed_instance_id_can_be_reused(hub: TaskHub) -> None:
    hub.register(quick)
    await hub.start()
    await hub.run(quick, 1, instance_id="again")
    state = await hub.run(quick, 2, instance_id="again")
    assert state.output == 2


async def test_unknown_orchestration_name_fails_clearly_when_told_to(store_url: str) -> None:
    hub = TaskHub(store_url, unknown_work="fail")
    hub.register(quick)
    try:
        await hub.start()
        state = await hub.run("no_such_orchestration")
    finally:
        await hub.stop()
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type == "OrchestrationNotRegisteredError"
    assert "no_such_orchestration" in state.failure_details.message


async def test_unknown_version_fails_clearly_when_told_to(store_url: str) -> None:
    hub = TaskHub(store_url, unknown_work="fail")
    hub.register(quick)
    try:
        await hub.start()
        state = await hub.run(quick, 1, version="9")
    finally:
        await hub.stop()
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "'9'" in state.failure_details.message


async def test_non_serialisable_input_stores_nothing(hub: TaskHub) -> None:
    hub.register(quick)
    with pytest.raises(dt.SerializationError, match="quick"):
        await hub.client.schedule_new_orchestration(quick, input=object(), instance_id="bad")
    assert await hub.client.get_orchestration_state("bad") is None


async def test_oversize_payload(store_url: str) -> None:
    hub = TaskHub(store_url, max_payload_bytes=1000)
    hub.client = dt.AsyncTaskHubClient(store_url, max_payload_bytes=1000)
    hub.register(big_output)
    try:
        with pytest.raises(dt.PayloadTooLargeError):
            await hub.client.schedule_new_orchestration(
                big_output, input="y" * 5000, instance_id="x"
            )
        assert await hub.client.get_orchestration_state("x") is None
        await hub.start()
        state = await hub.run(big_output, 5000)
        assert state.runtime_status is dt.OrchestrationStatus.FAILED
        assert state.failure_details is not None
        assert state.failure_details.error_type == "PayloadTooLargeError"
    finally:
        await hub.stop()


async def test_generator_orchestration(hub: TaskHub) -> None:
    hub.register(generator_style, activities=(say_hello, double))
    await hub.start()
    state = await hub.run(generator_style, "gen")
    assert state.output == ["Hello, gen!", [0, 2, 4]]


async def test_dataclass_input_is_decoded_to_annotated_type(hub: TaskHub) -> None:
    hub.register(typed)
    await hub.start()
    state = await hub.run(typed, Point(2, 3))
    assert state.output == {"kind": "Point", "sum": 5}


async def test_custom_status_is_visible(hub: TaskHub) -> None:
    hub.register(staged)
    await hub.start()
    iid = await hub.client.schedule_new_orchestration(staged)

    async def status_is(expected: Any) -> bool:
        state = await hub.client.get_orchestration_state(iid)
        return state is not None and state.custom_status == expected

    await wait_until(lambda: status_is({"stage": "waiting"}), what="custom status 'waiting'")
    await hub.client.raise_orchestration_event(iid, "go")
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.custom_status == {"stage": "done"}


async def test_send_event_between_instances(hub: TaskHub) -> None:
    hub.register(inbox, pinger)
    await hub.start()
    target = await hub.client.schedule_new_orchestration(inbox, input=2, instance_id="target")
    for sender in ("sender-1", "sender-2"):
        assert (await hub.run(pinger, target, instance_id=sender)).output == "sent"
    state = await hub.client.wait_for_orchestration_completion(target, timeout=30)
    assert sorted(state.output) == ["sender-1", "sender-2"]


async def test_terminate_pending_scheduled_instance(hub: TaskHub) -> None:
    hub.register(quick)
    await hub.start()
    later = datetime.now(UTC) + timedelta(hours=1)
    iid = await hub.client.schedule_new_orchestration(quick, input=1, start_at=later)
    await hub.client.terminate_orchestration(iid, output="cancelled")
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.runtime_status is dt.OrchestrationStatus.TERMINATED
    assert state.output == "cancelled"


async def test_purge_is_recursive(hub: TaskHub) -> None:
    hub.register(parent, child, activities=(double,))
    await hub.start()
    state = await hub.run(parent, 1, instance_id="p")
    assert state.output == 2
    assert await hub.client.get_orchestration_state("p-child") is not None
    assert await hub.client.purge_orchestration("p") == 2
    assert await hub.client.get_orchestration_state("p-child") is None


async def test_terminate_racing_a_deferred_scheduled_start(hub: TaskHub) -> None:
    """A terminate that lands while the worker is putting a scheduled start back still wins."""
    hub.register(quick)
    store = hub.worker.store
    deferring, release = asyncio.Event(), asyncio.Event()
    abandon = store.abandon_orchestration_work_item

    async def held_abandon(work_item: Any, retry_at: Any = None) -> None:
        deferring.set()
        await release.wait()
        await abandon(work_item, retry_at)

    store.abandon_orchestration_work_item = held_abandon  # type: ignore[method-assign]
    try:
        await hub.start()
        later = datetime.now(UTC) + timedelta(hours=1)
        iid = await hub.client.schedule_new_orchestration(quick, input=1, start_at=later)
        await asyncio.wait_for(deferring.wait(), timeout=20)
        await hub.client.terminate_orchestration(iid, output="cancelled")
        release.set()
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=20)
    finally:
        store.abandon_orchestration_work_item = abandon  # type: ignore[method-assign]
    assert state.runtime_status is dt.OrchestrationStatus.TERMINATED
    assert state.output == "cancelled"
