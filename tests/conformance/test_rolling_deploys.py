"""Workers lease only what they registered: during a rolling deploy, an old worker never
fails instances of an orchestration (or version) only the new one knows; they wait
PENDING until a worker that can run them is there. Workers report themselves, so a client
can tell that no connected worker registered what an instance waits for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import duratask as dt

from .e2e_hub import TaskHub, stays, wait_until

S = dt.OrchestrationStatus


async def greet(ctx: dt.OrchestrationContext, name: str) -> str:
    return f"hello {name}"


async def greet_v2(ctx: dt.OrchestrationContext, name: str) -> str:
    return f"hi {name}"


async def ships(ctx: dt.OrchestrationContext, order: str) -> str:
    return str(await ctx.call_activity("ship", input=order))


def ship(ctx: dt.ActivityContext, order: str) -> str:
    return f"shipped {order}"


@pytest.fixture
async def hubs(store_url: str) -> AsyncIterator[list[TaskHub]]:
    started: list[TaskHub] = []
    yield started
    for hub in started:
        await hub.stop()


async def start(hubs: list[TaskHub], url: str, *fns: object, **options: object) -> TaskHub:
    hub = TaskHub(url, **options)
    for fn in fns:
        if fn is ship:
            hub.worker.add_activity(ship)
        elif fn is greet_v2:
            hub.worker.add_orchestration(greet_v2, name="greet", version="2")
        else:
            hub.worker.add_orchestration(fn)  # type: ignore[arg-type]
    hubs.append(hub)
    await hub.start()
    return hub


async def test_an_orchestration_no_worker_registered_waits_for_one_that_did(
    hubs: list[TaskHub], store_url: str
) -> None:
    old = await start(hubs, store_url, ships)
    client = old.client
    iid = await client.schedule_new_orchestration(greet, input="ada")
    await stays(client, iid, S.PENDING, 1.0)

    await start(hubs, store_url, greet)  # the new version of the app arrives
    state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert (state.runtime_status, state.output) == (S.COMPLETED, "hello ada")


async def test_a_version_no_worker_registered_waits_for_one_that_did(
    hubs: list[TaskHub], store_url: str
) -> None:
    old = await start(hubs, store_url, greet)
    client = old.client
    v1 = await client.schedule_new_orchestration(greet, input="ada")
    v2 = await client.schedule_new_orchestration("greet", input="bob", version="2")
    assert (await client.wait_for_orchestration_completion(v1, timeout=30)).output == "hello ada"
    await stays(client, v2, S.PENDING, 1.0)

    await start(hubs, store_url, greet_v2)
    state = await client.wait_for_orchestration_completion(v2, timeout=30)
    assert (state.runtime_status, state.output) == (S.COMPLETED, "hi bob")


async def test_an_activity_no_worker_registered_waits_for_one_that_did(
    hubs: list[TaskHub], store_url: str
) -> None:
    orchestrations_only = await start(hubs, store_url, ships)
    client = orchestrations_only.client
    iid = await client.schedule_new_orchestration(ships, input="A-1")
    await client.wait_for_orchestration_start(iid, timeout=30)
    await stays(client, iid, S.RUNNING, 1.0)
    await wait_until(
        lambda: _ids(client, {orchestrations_only.worker.worker_id}), what="the worker's row"
    )
    state = await client.get_orchestration_state(iid)
    assert state is not None
    waiting = await client.why_waiting(state)
    assert waiting is not None and "no connected worker has registered activity 'ship'" in waiting

    await start(hubs, store_url, ship)
    state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert (state.runtime_status, state.output) == (S.COMPLETED, "shipped A-1")


async def test_workers_report_what_they_registered_while_they_run(
    hubs: list[TaskHub], store_url: str
) -> None:
    first = await start(hubs, store_url, ships, worker_id="first")
    await start(hubs, store_url, ship, greet, greet_v2, worker_id="second")
    await wait_until(
        lambda: _ids(first.client, {"first", "second"}), timeout=10, what="both workers' rows"
    )
    workers = {w.worker_id: w for w in await first.client.list_workers(connected_only=True)}
    assert workers["first"].orchestrations == {("ships", None)}
    assert workers["first"].activities == frozenset()
    assert workers["second"].orchestrations == {("greet", None), ("greet", "2")}
    assert workers["second"].activities == {"ship"}
    assert workers["second"].runs_orchestration("greet", "2")
    assert not workers["first"].runs_activity("ship")

    await hubs.pop().stop()  # a worker that stops says so
    await wait_until(
        lambda: _ids(first.client, {"first"}), timeout=10, what="the stopped worker's row gone"
    )


async def _ids(client: dt.AsyncTaskHubClient, expected: set[str]) -> bool:
    return {w.worker_id for w in await client.list_workers()} == expected


async def test_the_client_names_instances_no_connected_worker_can_run(
    hubs: list[TaskHub], store_url: str
) -> None:
    hub = await start(hubs, store_url, greet, worker_id="only")
    client = hub.client
    await wait_until(lambda: _ids(client, {"only"}), timeout=10, what="the worker's row")
    unknown = await client.schedule_new_orchestration("nobody_runs_this", input=None)
    v2 = await client.schedule_new_orchestration("greet", input="x", version="2")
    known = await client.schedule_new_orchestration(greet, input="y")
    await client.wait_for_orchestration_completion(known, timeout=30)
    for iid, name in ((unknown, "'nobody_runs_this'"), (v2, "'greet' version '2'")):
        state = await client.get_orchestration_state(iid)
        assert state is not None
        waiting = await client.why_waiting(state)
        assert waiting is not None and name in waiting, waiting
        assert "no connected worker has registered" in waiting
    done = await client.get_orchestration_state(known)
    assert done is not None and await client.why_waiting(done) is None


async def test_fail_fast_stays_available(hubs: list[TaskHub], store_url: str) -> None:
    hub = await start(hubs, store_url, ships, unknown_work="fail")
    state = await hub.run("greet", "ada")
    assert state.runtime_status is S.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type == "OrchestrationNotRegisteredError"
    with pytest.raises(ValueError, match="unknown_work"):
        dt.TaskHubWorker(store_url, unknown_work="skip")  # type: ignore[arg-type]
