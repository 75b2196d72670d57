"""Rewind and restart leave a consistent hub: ``check_hub`` after each recovery, every store."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

import duratask as dt
from duratask import history as h
from duratask.integrity import check_hub
from tests.conformance.e2e_hub import TaskHub

from .figures import count

pytestmark = pytest.mark.timeout(60)
S = dt.OrchestrationStatus

_attempts: Counter[str] = Counter()
_attempts_lock = threading.Lock()
FAILING_ATTEMPTS = {"once": 1, "twice": 2}


def flaky(ctx: dt.ActivityContext, key: str) -> str:
    """Fails the first attempts for ``key`` ("once": one, "twice": two), then succeeds."""
    with _attempts_lock:
        _attempts[key] += 1
        attempt = _attempts[key]
    kind = key.split(":", 1)[0]
    if attempt <= FAILING_ATTEMPTS.get(kind, 0):
        raise ValueError(f"attempt {attempt} of {key}")
    return f"ok after {attempt}"


def steady(ctx: dt.ActivityContext, value: str) -> str:
    return value.upper()


async def sequence(ctx: dt.OrchestrationContext, key: str) -> list[str]:
    first = await ctx.call_activity(steady, input="a")
    second = await ctx.call_activity(flaky, input=key)
    return [first, second]


async def parent(ctx: dt.OrchestrationContext, key: str) -> list[str]:
    result: list[str] = await ctx.call_sub_orchestrator(
        sequence, input=key, instance_id=f"{ctx.instance_id}-child"
    )
    return result


async def timer_and_task(ctx: dt.OrchestrationContext, key: str) -> str:
    timer = ctx.create_timer(timedelta(seconds=1))
    result: str = await ctx.call_activity(flaky, input=key)
    await timer
    return result


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[TaskHub]:
    task_hub = TaskHub(store_url)
    task_hub.register(sequence, parent, timer_and_task, activities=(flaky, steady))
    await task_hub.start()
    yield task_hub
    await task_hub.stop()


async def consistent(hub: TaskHub) -> None:
    problems = await check_hub(hub.client)
    assert problems == [], "\n".join(map(str, problems))
    count("recovery: hubs checked")


async def fail_then_rewind(hub: TaskHub, orchestration: object, key: str) -> dt.OrchestrationState:
    c = hub.client
    iid = await c.schedule_new_orchestration(orchestration, input=key)  # type: ignore[arg-type]
    failed = await c.wait_for_orchestration_completion(iid, timeout=30)
    assert failed.runtime_status is S.FAILED
    await consistent(hub)
    await c.rewind_orchestration(iid, reason="fixed")
    return await c.wait_for_orchestration_completion(iid, timeout=30)


async def test_a_rewound_activity_failure(hub: TaskHub, store_url: str) -> None:
    key = f"once:{store_url}"
    state = await fail_then_rewind(hub, sequence, key)
    assert (state.runtime_status, state.output) == (S.COMPLETED, ["A", "ok after 2"])
    history = await hub.client.get_orchestration_history(state.instance_id)
    assert sum(e.event_type is dt.EventType.EXECUTION_REWOUND for e in history) == 1
    await consistent(hub)


async def test_rewinding_twice(hub: TaskHub, store_url: str) -> None:
    c = hub.client
    key = f"twice:{store_url}"
    state = await fail_then_rewind(hub, sequence, key)
    assert state.runtime_status is S.FAILED  # the second attempt failed too
    await consistent(hub)
    await c.rewind_orchestration(state.instance_id)
    state = await c.wait_for_orchestration_completion(state.instance_id, timeout=30)
    assert (state.runtime_status, state.output) == (S.COMPLETED, ["A", "ok after 3"])
    await consistent(hub)


async def test_a_rewound_sub_orchestration_failure(hub: TaskHub, store_url: str) -> None:
    state = await fail_then_rewind(hub, parent, f"once:parent:{store_url}")
    assert (state.runtime_status, state.output) == (S.COMPLETED, ["A", "ok after 2"])
    child = await hub.client.get_orchestration_state(f"{state.instance_id}-child")
    assert child is not None and child.runtime_status is S.COMPLETED
    await consistent(hub)


async def test_restarts(hub: TaskHub) -> None:
    c = hub.client
    iid = await c.schedule_new_orchestration(sequence, input="steady")
    first = await c.wait_for_orchestration_completion(iid, timeout=30)
    same = await c.restart_orchestration(iid)
    assert same == iid
    again = await c.wait_for_orchestration_completion(iid, timeout=30)
    # Same input, run again (the activity counts its runs, so the output says which run).
    assert (again.runtime_status, again.input) == (S.COMPLETED, first.input)
    assert again.execution_id != first.execution_id
    assert again.output != first.output
    other = await c.restart_orchestration(iid, new_instance_id=True)
    assert other != iid
    restarted = await c.wait_for_orchestration_completion(other, timeout=30)
    assert (restarted.runtime_status, restarted.input) == (S.COMPLETED, first.input)
    history = await c.get_orchestration_history(iid)
    assert sum(isinstance(e, h.ExecutionStarted) for e in history) == 1
    await consistent(hub)


async def test_rewinding_while_a_timer_is_pending(hub: TaskHub, store_url: str) -> None:
    key = f"once:timer:{store_url}"
    state = await fail_then_rewind(hub, timer_and_task, key)
    assert (state.runtime_status, state.output) == (S.COMPLETED, "ok after 2")
    history = await hub.client.get_orchestration_history(state.instance_id)
    assert sum(isinstance(e, h.TimerFired) for e in history) == 1
    await consistent(hub)
