"""A hub shared by duratask's own worker and an SDK worker with work-item filters: each
leases only what it registered."""

from __future__ import annotations

import json
from datetime import timedelta

import duratask as dt
from tests.serve import sdk_app
from tests.serve.harness import sdk_client_on, sdk_worker_on, serving, wait_until


def shout(ctx: dt.ActivityContext, text: str) -> str:
    return text.upper() + "!"


async def dt_flow(ctx: dt.OrchestrationContext, words: list[str]) -> list[str]:
    return [await ctx.call_activity(shout, input=w) for w in words]


def test_each_worker_leases_only_what_it_registered(hub_url: str) -> None:
    mine = dt.TaskHubWorker(hub_url, lease_duration=timedelta(seconds=10))
    mine.add_orchestration(dt_flow)
    mine.add_activity(shout)
    with (
        serving(hub_url) as server,
        dt.TaskHubClient(hub_url) as client,
        mine,
        sdk_worker_on(server.address, [sdk_app.sequence], [sdk_app.greet], filters=True),
    ):
        sdk = sdk_client_on(server.address)
        theirs = [
            sdk.schedule_new_orchestration(sdk_app.sequence, input=[f"n{i}", "x"]) for i in range(4)
        ]
        ours = [client.schedule_new_orchestration(dt_flow, input=[f"w{i}"]) for i in range(4)]
        for i, iid in enumerate(theirs):
            state = sdk.wait_for_orchestration_completion(iid, timeout=30)
            assert state is not None
            assert json.loads(state.serialized_output or "") == [f"Hello n{i}!", "Hello x!"]
        for i, iid in enumerate(ours):
            assert client.wait_for_orchestration_completion(iid, timeout=30).output == [f"W{i}!"]
        # The SDK worker reports what it registered, as duratask's workers do.
        workers = wait_until(
            lambda: [w for w in client.list_workers() if w.runs_orchestration("sequence", None)],
            what="the SDK worker to report itself",
        )
        assert workers[0].runs_activity("greet") and not workers[0].runs_activity("shout")
        sdk.close()


def test_sdk_workers_serve_the_default_task_queue_only(hub_url: str) -> None:
    """An instance duratask's client starts on another task queue is left to duratask
    workers of that queue, even by an SDK worker that registered its orchestration."""
    with (
        serving(hub_url) as server,
        dt.TaskHubClient(hub_url) as client,
        sdk_worker_on(server.address, [sdk_app.sequence], [sdk_app.greet]),
    ):
        elsewhere = client.schedule_new_orchestration(
            "sequence", input=["p"], task_queue="payments"
        )
        here = client.schedule_new_orchestration("sequence", input=["d"])
        done = client.wait_for_orchestration_completion(here, timeout=30)
        assert done.runtime_status is dt.OrchestrationStatus.COMPLETED
        state = client.get_orchestration_state(elsewhere)
        assert state is not None and state.runtime_status is dt.OrchestrationStatus.PENDING
        assert state.task_queue == "payments"
        client.terminate_orchestration(elsewhere)
