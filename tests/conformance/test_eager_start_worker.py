"""Eager start end to end: a client of the worker's process starts an instance, and the
worker runs its first episode without fetching it (no orchestration lease of its own), on
every store kind that can lease at creation; otherwise the usual path."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duratask as dt
from duratask import _local_workers
from duratask.backends.base import OrchestrationWorkItem, SupportsEagerStart

from .e2e_hub import TaskHub, wait_until


async def double(ctx: dt.ActivityContext, value: int) -> int:
    return value * 2


async def one_step(ctx: dt.OrchestrationContext, value: int) -> int:
    return await ctx.call_activity(double, input=value)


class Fetches:
    """The instances the worker's orchestration fetches leased."""

    def __init__(self, worker: dt.TaskHubWorker) -> None:
        self.leased: list[str] = []
        store = worker.store
        fetch = store.lock_next_orchestration_work_item

        async def counted(*args: Any, **kwargs: Any) -> OrchestrationWorkItem | None:
            item = await fetch(*args, **kwargs)
            if item is not None:
                self.leased.append(item.instance_id)
            return item

        store.lock_next_orchestration_work_item = counted  # type: ignore[method-assign]


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[TaskHub]:
    hub = TaskHub(store_url)
    hub.register(one_step, activities=(double,))
    if not isinstance(hub.worker.store, SupportsEagerStart):
        pytest.skip(f"{hub.worker.store.describe().kind}: no eager start")
    yield hub
    await hub.stop()


async def test_a_local_start_runs_without_a_fetch(hub: TaskHub) -> None:
    fetches = Fetches(hub.worker)
    await hub.start()
    await wait_until(lambda: _running(hub), what="the worker offering eager starts")
    for value in range(5):
        state = await hub.run(one_step, value)
        assert state.runtime_status == dt.OrchestrationStatus.COMPLETED
        assert state.output == value * 2
    assert fetches.leased == []


async def test_a_start_the_worker_cannot_run_now_takes_the_usual_path(hub: TaskHub) -> None:
    fetches = Fetches(hub.worker)
    await hub.start()
    await wait_until(lambda: _running(hub), what="the worker offering eager starts")
    # Not registered here: created by the client, left for a worker that knows it.
    unknown = await hub.client.schedule_new_orchestration("Unknown")
    # On a task queue this worker does not serve: created unleased, left for one that does.
    elsewhere = await hub.client.schedule_new_orchestration(
        one_step, input=1, task_queue="payments"
    )
    # A start ahead: created unleased, fetched when due.
    later = datetime.now(UTC) + timedelta(milliseconds=300)
    delayed = await hub.client.schedule_new_orchestration(one_step, input=4, start_at=later)
    state = await hub.client.wait_for_orchestration_completion(delayed, timeout=30)
    assert state.output == 8
    assert delayed in fetches.leased
    unknown_state = await hub.client.get_orchestration_state(unknown)
    assert unknown_state is not None
    assert unknown_state.runtime_status == dt.OrchestrationStatus.PENDING
    assert unknown not in fetches.leased
    elsewhere_state = await hub.client.get_orchestration_state(elsewhere)
    assert elsewhere_state is not None
    assert elsewhere_state.runtime_status == dt.OrchestrationStatus.PENDING
    assert elsewhere not in fetches.leased


async def test_a_replaced_instance_is_fetched(hub: TaskHub) -> None:
    fetches = Fetches(hub.worker)
    await hub.start()
    await wait_until(lambda: _running(hub), what="the worker offering eager starts")
    first = await hub.run(one_step, 1, instance_id="same")
    assert first.output == 2 and fetches.leased == []
    again = await hub.run(
        one_step, 2, instance_id="same", reuse_id_policy=dt.ReuseIdPolicy.replace_terminal()
    )
    assert again.output == 4
    assert fetches.leased == ["same"]


RELEASE = threading.Event()


async def held(ctx: dt.OrchestrationContext, _: object = None) -> str:
    """Its first episode blocks until the test releases it."""
    if not ctx.is_replaying:
        RELEASE.wait(30)
    return "released"


async def test_a_start_does_not_wait_for_a_slow_first_episode(store_url: str) -> None:
    """The create's durability waits for the first episode's commit only briefly: a client
    whose instance's first episode blocks is told it exists all the same."""
    RELEASE.clear()
    hub = TaskHub(store_url)
    hub.register(held)
    if not isinstance(hub.worker.store, SupportsEagerStart):
        pytest.skip(f"{hub.worker.store.describe().kind}: no eager start")
    try:
        await hub.start()
        await wait_until(lambda: _running(hub), what="the worker offering eager starts")
        iid = await asyncio.wait_for(hub.client.schedule_new_orchestration(held), 10)
        state = await hub.client.get_orchestration_state(iid)
        assert state is not None and not state.runtime_status.is_terminal
        RELEASE.set()
        done = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
        assert done.output == "released"
    finally:
        RELEASE.set()
        await hub.stop()


async def test_a_stopped_worker_takes_no_more_starts(hub: TaskHub) -> None:
    await hub.start()
    await wait_until(lambda: _running(hub), what="the worker offering eager starts")
    await hub.worker.shutdown()
    assert hub._run is not None
    await asyncio.wait_for(hub._run, timeout=30)
    hub._run = None
    iid = await hub.client.schedule_new_orchestration(one_step, input=1)
    state = await hub.client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status == dt.OrchestrationStatus.PENDING
    waiting = [(e.kind, e.name, e.ready, e.leased) for e in await hub.client.backlog()]
    assert waiting == [("orchestration", "one_step", 1, 0)]  # not leased: waits for a fetch


def test_a_sync_client_hands_over_to_a_worker_thread(store_url: str) -> None:
    """The worker on a thread and loop of its own, the client on another: the start is
    handed to the worker's loop, and still needs no fetch."""
    worker = dt.TaskHubWorker(store_url, lease_duration=timedelta(seconds=10))
    worker.add_orchestration(one_step)
    worker.add_activity(double)
    if not isinstance(worker.store, SupportsEagerStart):
        pytest.skip(f"{worker.store.describe().kind}: no eager start")
    fetches = Fetches(worker)
    with worker, dt.TaskHubClient(store_url) as client:
        for value in range(3):
            iid = client.schedule_new_orchestration(one_step, input=value)
            state = client.wait_for_orchestration_completion(iid, timeout=30)
            assert state.output == value * 2
    assert fetches.leased == []


async def _running(hub: TaskHub) -> bool:
    return bool(_local_workers._workers.get(hub.worker.store.describe().hub))
