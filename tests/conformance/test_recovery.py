"""Rewind, restart, counts and purge by completion time, the same on every store."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duratask as dt
from duratask import history as h
from duratask.backends.base import ActivityWorkItem

from .e2e_hub import TaskHub

pytestmark = pytest.mark.timeout(60)
COMPLETED = dt.OrchestrationStatus.COMPLETED
FAILED = dt.OrchestrationStatus.FAILED

# Activities fail while their key is in ``_broken``; ``_runs`` counts every execution.
_broken: set[str] = set()
_runs: Counter[str] = Counter()
_lock = threading.Lock()


def _key() -> str:
    key = uuid.uuid4().hex
    with _lock:
        _broken.add(key)
    return key


def _repair(key: str) -> None:
    with _lock:
        _broken.discard(key)


def work(ctx: dt.ActivityContext, item: str) -> str:
    """Records the run; fails if the key (the part before ':') is broken."""
    with _lock:
        _runs[item] += 1
        broken = item.split(":")[0] in _broken
    if broken:
        raise RuntimeError(f"{item} is broken")
    return item.upper()


async def sequence(ctx: dt.OrchestrationContext, key: str) -> list[str]:
    first = await ctx.call_activity(work, input="ok:first")
    second = await ctx.call_activity(work, input=f"{key}:second")
    third = await ctx.call_activity(work, input="ok:third")
    return [first, second, third]


async def fan_out(ctx: dt.OrchestrationContext, key: str) -> list[str]:
    items = [f"ok:{i}" for i in range(5)] + [f"{key}:bad"]
    return await dt.when_all([ctx.call_activity(work, input=i) for i in items])


async def with_retries(ctx: dt.OrchestrationContext, key: str) -> str:
    policy = dt.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=10), max_number_of_attempts=2
    )
    result: str = await ctx.call_activity(work, input=f"{key}:retried", retry_policy=policy)
    return result


async def child(ctx: dt.OrchestrationContext, key: str) -> str:
    result: str = await ctx.call_activity(work, input=f"{key}:child")
    return result


async def parent(ctx: dt.OrchestrationContext, key: str) -> str:
    before = await ctx.call_activity(work, input="ok:parent")
    result = await ctx.call_sub_orchestrator(
        child, input=key, instance_id=f"{ctx.instance_id}-child"
    )
    return f"{before}+{result}"


async def echo(ctx: dt.OrchestrationContext, value: int) -> int:
    return value


async def waits(ctx: dt.OrchestrationContext, _: None) -> str:
    return str(await ctx.wait_for_external_event("go"))


async def _failed(hub: TaskHub, orchestration: object, key: str) -> str:
    iid = await hub.client.schedule_new_orchestration(orchestration, input=key)  # type: ignore[arg-type]
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.runtime_status is FAILED
    return iid


async def _rewound(hub: TaskHub, iid: str) -> dt.OrchestrationState:
    await hub.client.rewind_orchestration(iid, reason="fixed")
    return await hub.client.wait_for_orchestration_completion(iid, timeout=30)


async def test_rewind_reruns_the_failed_step_and_keeps_completed_work(hub: TaskHub) -> None:
    hub.register(sequence, activities=(work,))
    await hub.start()
    key = _key()
    iid = await _failed(hub, sequence, key)
    first_runs = _runs["ok:first"]
    _repair(key)

    state = await _rewound(hub, iid)
    assert state.runtime_status is COMPLETED
    assert state.output == ["OK:FIRST", f"{key.upper()}:SECOND", "OK:THIRD"]
    assert state.failure_details is None
    assert _runs["ok:first"] == first_runs, "completed work is not redone"
    assert _runs[f"{key}:second"] == 2
    history = await hub.client.get_orchestration_history(iid)
    assert sum(isinstance(e, h.ExecutionRewound) for e in history) == 1
    assert isinstance(history[-2], h.ExecutionCompleted)
    assert history[-2].status is COMPLETED


async def test_rewind_of_a_failed_fan_out(hub: TaskHub) -> None:
    hub.register(fan_out, activities=(work,))
    await hub.start()
    key = _key()
    iid = await _failed(hub, fan_out, key)
    _repair(key)
    state = await _rewound(hub, iid)
    assert state.runtime_status is COMPLETED
    assert state.output == [f"OK:{i}" for i in range(5)] + [f"{key.upper()}:BAD"]


async def test_rewind_after_retries_were_exhausted(hub: TaskHub) -> None:
    hub.register(with_retries, activities=(work,))
    await hub.start()
    key = _key()
    iid = await _failed(hub, with_retries, key)
    assert _runs[f"{key}:retried"] == 2
    _repair(key)
    state = await _rewound(hub, iid)
    assert state.runtime_status is COMPLETED
    assert state.output == f"{key.upper()}:RETRIED"
    assert _runs[f"{key}:retried"] == 3


async def test_rewind_fails_again_while_still_broken_and_can_be_rewound_again(
    hub: TaskHub,
) -> None:
    hub.register(sequence, activities=(work,))
    await hub.start()
    key = _key()
    iid = await _failed(hub, sequence, key)
    state = await _rewound(hub, iid)
    assert state.runtime_status is FAILED
    assert "broken" in (state.failure_details.message if state.failure_details else "")
    _repair(key)
    state = await _rewound(hub, iid)
    assert state.runtime_status is COMPLETED
    assert _runs[f"{key}:second"] == 3


async def test_rewinding_a_parent_rewinds_its_failed_child(hub: TaskHub) -> None:
    hub.register(parent, child, activities=(work,))
    await hub.start()
    key = _key()
    iid = await _failed(hub, parent, key)
    child_state = await hub.client.get_orchestration_state(f"{iid}-child")
    assert child_state is not None and child_state.runtime_status is FAILED
    _repair(key)
    state = await _rewound(hub, iid)
    assert state.runtime_status is COMPLETED
    assert state.output == f"OK:PARENT+{key.upper()}:CHILD"
    child_state = await hub.client.get_orchestration_state(f"{iid}-child")
    assert child_state is not None and child_state.runtime_status is COMPLETED
    assert _runs["ok:parent"] >= 1


async def test_rewind_refuses_instances_that_did_not_fail(hub: TaskHub) -> None:
    hub.register(echo, waits)
    await hub.start()
    done = await hub.run(echo, 1)
    with pytest.raises(dt.InvalidOperationError, match="only FAILED"):
        await hub.client.rewind_orchestration(done.instance_id)
    running = await hub.client.schedule_new_orchestration(waits)
    await hub.client.wait_for_orchestration_start(running, timeout=30)
    with pytest.raises(dt.InvalidOperationError, match="RUNNING"):
        await hub.client.rewind_orchestration(running)
    with pytest.raises(dt.OrchestrationNotFoundError):
        await hub.client.rewind_orchestration("no-such-instance")


async def test_restart_under_the_same_id_runs_a_new_execution(hub: TaskHub) -> None:
    hub.register(echo)
    await hub.start()
    first = await hub.run(echo, 7, instance_id="restart-me")
    restarted = await hub.client.restart_orchestration("restart-me")
    assert restarted == "restart-me"
    state = await hub.client.wait_for_orchestration_completion(restarted, timeout=30)
    assert state.execution_id != first.execution_id
    history = await hub.client.get_orchestration_history(restarted)
    assert sum(isinstance(e, h.ExecutionStarted) for e in history) == 1
    assert state.output == 7
    assert state.name == first.name


async def test_restart_with_a_new_id_leaves_the_original(hub: TaskHub) -> None:
    hub.register(echo, waits)
    await hub.start()
    running = await hub.client.schedule_new_orchestration(waits, instance_id="still-running")
    await hub.client.wait_for_orchestration_start(running, timeout=30)
    with pytest.raises(dt.InvalidOperationError, match="still-running"):
        await hub.client.restart_orchestration(running)
    original = await hub.run(echo, 3)
    new_id = await hub.client.restart_orchestration(original.instance_id, new_instance_id=True)
    assert new_id != original.instance_id
    state = await hub.client.wait_for_orchestration_completion(new_id, timeout=30)
    assert state.output == 3
    assert await hub.client.get_orchestration_state(original.instance_id) is not None
    with pytest.raises(dt.OrchestrationNotFoundError):
        await hub.client.restart_orchestration("no-such-instance")


async def test_counts_by_status_and_children_query(hub: TaskHub) -> None:
    hub.register(echo, waits, parent, child, activities=(work,))
    await hub.start()
    for i in range(3):
        await hub.run(echo, i, instance_id=f"count-{i}")
    waiting = await hub.client.schedule_new_orchestration(waits, instance_id="count-wait")
    await hub.client.wait_for_orchestration_start(waiting, timeout=30)
    key = _key()
    failed = await _failed(hub, parent, key)

    counts = await hub.client.count_orchestrations()
    assert set(counts) == set(dt.OrchestrationStatus)
    assert counts[COMPLETED] == 3
    assert counts[dt.OrchestrationStatus.RUNNING] == 1
    assert counts[FAILED] == 2  # the parent and its child
    assert sum(counts.values()) == 6
    assert (await hub.client.count_orchestrations(instance_id_prefix="count-"))[COMPLETED] == 3
    assert sum((await hub.client.count_orchestrations(name="nothing")).values()) == 0

    children = await hub.client.query_orchestrations(parent_instance_id=failed)
    assert [s.instance_id for s in children.states] == [f"{failed}-child"]


async def test_purge_by_completion_time(hub: TaskHub) -> None:
    hub.register(echo, waits)
    await hub.start()
    done = [(await hub.run(echo, i)).instance_id for i in range(2)]
    waiting = await hub.client.schedule_new_orchestration(waits)
    await hub.client.wait_for_orchestration_start(waiting, timeout=30)
    past = datetime(2000, 1, 1, tzinfo=UTC)
    assert await hub.client.purge_orchestrations(completed_before=past) == 0
    future = datetime.now(UTC) + timedelta(days=1)
    assert await hub.client.purge_orchestrations(completed_before=future) == 2
    for iid in done:
        assert await hub.client.get_orchestration_state(iid) is None
    assert await hub.client.get_orchestration_state(waiting) is not None


# -- poison work ------------------------------------------------------------------------------
def _crash_first_delivery(hub: TaskHub, kind: str, victim: str) -> list[int]:
    """Make the store hand the victim's work to a worker that "crashes": the first delivery
    is abandoned unprocessed, as if its worker died, and the next delivery is returned."""
    store = hub.worker.store
    name = "lock_next_activity_work_items" if kind == "activity" else f"lock_next_{kind}_work_item"
    lock = getattr(store, name)
    abandon = getattr(store, f"abandon_{kind}_work_item")
    seen: list[int] = []

    def instance_of(work_item: Any) -> str | None:
        return getattr(work_item, "instance_id", None) or getattr(
            getattr(work_item, "request", None), "instance_id", None
        )

    async def crashing_lock(*args: object, **kwargs: object) -> object:
        found = await lock(*args, **kwargs)
        items = found if isinstance(found, list) else [found]
        if any(instance_of(i) == victim for i in items if i is not None) and not seen:
            seen.append(1)
            for item in items:
                if item is not None:
                    await abandon(item)
            found = await lock(*args, **kwargs)
        return found

    setattr(store, name, crashing_lock)
    if kind == "activity":
        # The worker that schedules an activity may lease it at once, in the same commit.
        complete = store.commit_episode

        async def crashing_complete(*args: Any, **kwargs: Any) -> list[ActivityWorkItem]:
            leased = await complete(*args, **kwargs)
            if leased and leased[0].request.instance_id == victim and not seen:
                seen.append(1)
                # The worker "dies" holding them: its leases end, the deliveries count.
                await store.break_leases(hub.worker.worker_id)
                return []
            return leased

        store.commit_episode = crashing_complete  # type: ignore[method-assign]
    return seen


async def test_poisoned_orchestration_is_failed_and_can_be_rewound(store_url: str) -> None:
    hub = TaskHub(store_url, max_deliveries=1)
    try:
        hub.register(echo)
        seen = _crash_first_delivery(hub, "orchestration", "poisoned")
        await hub.client.schedule_new_orchestration(echo, input=5, instance_id="poisoned")
        await hub.start()
        state = await hub.client.wait_for_orchestration_completion("poisoned", timeout=30)
        assert seen, "the first delivery was crashed"
        assert state.runtime_status is FAILED
        assert state.failure_details is not None
        assert state.failure_details.error_type == "PoisonWorkError"
        assert "delivered 2 times" in state.failure_details.message
        healthy = await hub.run(echo, 6)
        assert healthy.output == 6, "the rest of the hub keeps moving"

        state = await _rewound(hub, "poisoned")
        assert state.runtime_status is COMPLETED
        assert state.output == 5
    finally:
        await hub.stop()


async def catches_poison(ctx: dt.OrchestrationContext, key: str) -> str:
    try:
        result: str = await ctx.call_activity(work, input=f"{key}:poison")
        return result
    except dt.TaskFailedError as exc:
        assert exc.details is not None
        return f"gave up: {exc.details.error_type}"


async def test_poisoned_activity_fails_its_task(store_url: str) -> None:
    hub = TaskHub(store_url, max_deliveries=1)
    try:
        hub.register(catches_poison, activities=(work,))
        key = uuid.uuid4().hex
        iid = f"poison-activity-{key}"
        seen = _crash_first_delivery(hub, "activity", iid)
        await hub.start()
        state = await hub.run(catches_poison, key, instance_id=iid)
        assert seen
        assert state.output == "gave up: PoisonWorkError"
        assert _runs[f"{key}:poison"] == 0, "given-up work is not run again"
    finally:
        await hub.stop()
