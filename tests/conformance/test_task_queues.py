"""Task queues route work to groups of workers: an instance runs on the queue it was started
on, its activities and sub-orchestrations go to that queue unless their call names another,
and a worker leases only work on the queues it serves. What no connected worker serves waits,
and the client says which queue nobody serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import duratask as dt
from duratask.history import TaskScheduled

from .e2e_hub import TaskHub, stays, wait_until

S = dt.OrchestrationStatus


async def greet(ctx: dt.OrchestrationContext, name: str) -> str:
    return f"hello {name}"


async def charges(ctx: dt.OrchestrationContext, order: str) -> str:
    return str(await ctx.call_activity("charge", input=order, task_queue="gpu"))


async def checkout(ctx: dt.OrchestrationContext, order: str) -> list[str]:
    child = await ctx.call_sub_orchestrator(
        "pays", input=order, instance_id=f"{ctx.instance_id}:pays"
    )
    mine = await ctx.call_activity("where", input=order)
    return [str(child), str(mine)]


async def pays(ctx: dt.OrchestrationContext, order: str) -> str:
    return str(await ctx.call_activity("where", input=order))


async def counts_down(ctx: dt.OrchestrationContext, n: int) -> int:
    if n > 0:
        ctx.continue_as_new(n - 1)
    return n


def ran_on(queue: str) -> Callable[[dt.ActivityContext, str], str]:
    """An activity that says which group of workers ran it."""

    def activity(ctx: dt.ActivityContext, order: str) -> str:
        return f"{order} on {queue}"

    return activity


@pytest.fixture
async def hubs() -> AsyncIterator[list[TaskHub]]:
    started: list[TaskHub] = []
    yield started
    for hub in started:
        await hub.stop()


async def start(
    hubs: list[TaskHub],
    url: str,
    orchestrations: tuple[Any, ...] = (),
    activities: dict[str, Any] | None = None,
    **options: Any,
) -> TaskHub:
    hub = TaskHub(url, **options)
    for fn in orchestrations:
        hub.worker.add_orchestration(fn)
    for name, fn in (activities or {}).items():
        hub.worker.add_activity(fn, name=name)
    hubs.append(hub)
    await hub.start()
    return hub


async def reported(client: dt.AsyncTaskHubClient, ids: set[str]) -> None:
    async def seen() -> bool:
        return ids <= {w.worker_id for w in await client.list_workers(connected_only=True)}

    await wait_until(seen, timeout=10, what="the workers' rows")


async def test_an_instance_on_a_queue_waits_for_a_worker_serving_it(
    hubs: list[TaskHub], store_url: str
) -> None:
    default = await start(hubs, store_url, (greet,), worker_id="default-worker")
    client = default.client
    iid = await client.schedule_new_orchestration(greet, input="ada", task_queue="payments")
    await stays(client, iid, S.PENDING, 1.0)
    await reported(client, {"default-worker"})
    state = await client.get_orchestration_state(iid)
    assert state is not None and state.task_queue == "payments"
    waiting = await client.why_waiting(state)
    assert waiting is not None and "no connected worker serves task queue 'payments'" in waiting

    await start(hubs, store_url, (greet,), task_queues={"payments"})
    state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert (state.runtime_status, state.output, state.task_queue) == (
        S.COMPLETED,
        "hello ada",
        "payments",
    )
    # A default-queue instance still runs on the default worker.
    assert (await default.run(greet, "bob")).output == "hello bob"


async def test_an_activity_sent_to_another_queue_runs_only_there(
    hubs: list[TaskHub], store_url: str
) -> None:
    # The default worker registered "charge" too: it must still leave the activity alone.
    default = await start(
        hubs, store_url, (charges,), {"charge": ran_on("default")}, worker_id="cpu"
    )
    client = default.client
    iid = await client.schedule_new_orchestration(charges, input="A-1")
    await client.wait_for_orchestration_start(iid, timeout=30)
    await stays(client, iid, S.RUNNING, 1.0)
    await reported(client, {"cpu"})
    state = await client.get_orchestration_state(iid)
    assert state is not None and state.task_queue == "default"
    waiting = await client.why_waiting(state)
    assert waiting is not None and "no connected worker serves task queue 'gpu'" in waiting

    await start(hubs, store_url, (), {"charge": ran_on("gpu")}, task_queues=["gpu"])
    state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert (state.runtime_status, state.output) == (S.COMPLETED, "A-1 on gpu")
    history = await client.get_orchestration_history(iid)
    scheduled = [e for e in history if isinstance(e, TaskScheduled)]
    assert [e.task_queue for e in scheduled] == ["gpu"]


async def test_sub_orchestrations_and_activities_inherit_the_instance_queue(
    hubs: list[TaskHub], store_url: str
) -> None:
    # Both groups can run everything; only the queue decides which does.
    await start(hubs, store_url, (checkout, pays), {"where": ran_on("default")})
    payments = await start(
        hubs, store_url, (checkout, pays), {"where": ran_on("payments")}, task_queues=["payments"]
    )
    client = payments.client
    iid = await client.schedule_new_orchestration(checkout, input="o-7", task_queue="payments")
    state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.runtime_status is S.COMPLETED, state.failure_details
    assert state.output == ["o-7 on payments", "o-7 on payments"]
    child = await client.get_orchestration_state(f"{iid}:pays")
    assert child is not None and child.task_queue == "payments"


async def test_continue_as_new_stays_on_the_queue(hubs: list[TaskHub], store_url: str) -> None:
    # Only a "payments" worker runs: a new execution on any other queue would never run.
    hub = await start(hubs, store_url, (counts_down,), task_queues=["payments"])
    iid = await hub.client.schedule_new_orchestration(counts_down, input=2, task_queue="payments")
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert (state.runtime_status, state.output, state.task_queue) == (S.COMPLETED, 0, "payments")


async def test_a_worker_serves_several_queues_and_reports_them(
    hubs: list[TaskHub], store_url: str
) -> None:
    hub = await start(
        hubs, store_url, (greet,), task_queues=["default", "payments"], worker_id="both"
    )
    client = hub.client
    on_payments = await client.schedule_new_orchestration(greet, input="a", task_queue="payments")
    on_default = await client.schedule_new_orchestration(greet, input="b")
    for iid in (on_payments, on_default):
        state = await client.wait_for_orchestration_completion(iid, timeout=30)
        assert state.runtime_status is S.COMPLETED
    await reported(client, {"both"})
    (worker,) = [w for w in await client.list_workers() if w.worker_id == "both"]
    assert worker.task_queues == {"default", "payments"}
    assert worker.serves_queue("payments") and not worker.serves_queue("gpu")


async def test_failing_unknown_work_still_keeps_to_the_worker_queues(
    hubs: list[TaskHub], store_url: str
) -> None:
    # A worker that fails what it has not registered must not lease (and fail) work on a
    # queue it does not serve: that work is another group's.
    hub = await start(hubs, store_url, (), unknown_work="fail")
    client = hub.client
    iid = await client.schedule_new_orchestration("elsewhere", input=None, task_queue="other")
    await stays(client, iid, S.PENDING, 1.0)
    assert (await hub.run("nobody_has_this", None)).runtime_status is S.FAILED
