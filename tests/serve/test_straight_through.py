"""An activity's result goes straight into the instance's next episode, run by the worker
that ran the activity: one commit per step, the result never stored as a message."""

from __future__ import annotations

import json
import threading
from typing import Any

from durabletask import task
from durabletask.worker import ConcurrencyOptions

import duratask as dt
from duratask import history as h
from duratask.backends.base import ActivityWorkItem, OrchestrationMessage
from duratask.backends.memory import MemoryOrchestrationService
from tests.serve import sdk_app
from tests.serve.harness import sdk_client_on, sdk_worker_on, serving, wait_until


class CountingStore(MemoryOrchestrationService):
    """Counts the activity results stored as messages."""

    stored_results = 0

    async def complete_activity_work_item(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> None:
        self.stored_results += 1
        await super().complete_activity_work_item(work_item, result)


def test_activity_results_flow_straight_into_the_next_episode() -> None:
    store = CountingStore()
    with (
        serving(store) as server,
        sdk_worker_on(server.address, [sdk_app.sequence], [sdk_app.greet]),
    ):
        sdk = sdk_client_on(server.address)
        iid = sdk.schedule_new_orchestration(sdk_app.sequence, input=["a", "b", "c"])
        state = sdk.wait_for_orchestration_completion(iid, timeout=30)
        sdk.close()
    assert state is not None
    assert json.loads(state.serialized_output or "") == ["Hello a!", "Hello b!", "Hello c!"]
    assert store.stored_results == 0


STARTED: list[int] = []
RELEASE = threading.Event()


def gated_square(ctx: task.ActivityContext, n: int) -> int:
    STARTED.append(n)
    RELEASE.wait(30)
    return n * n


def step_event_step(ctx: task.OrchestrationContext, n: int) -> Any:
    """An activity, an event (raised while the first one runs), another activity."""
    first = yield ctx.call_activity(gated_square, input=n)
    extra = yield ctx.wait_for_external_event("extra")
    second = yield ctx.call_activity(sdk_app.square, input=first + extra)
    return [first, extra, second]


def test_two_servers_on_one_hub_move_each_other_s_instances_on(hub_url: str) -> None:
    """Each server remembers what it committed for an instance. Events raised while the
    first activities run are taken in by either server, so the other one's memory of the
    instance is stale when the activity's result comes back to it: that step is refused by
    the commit's fence and taken the stored way. Every instance ends with the right output."""
    count = 12
    functions = ([step_event_step], [gated_square, sdk_app.square])
    # Room for every gated activity on either worker, beside the episodes.
    roomy = ConcurrencyOptions(
        maximum_concurrent_activity_work_items=count,
        maximum_thread_pool_workers=2 * count,
    )
    STARTED.clear()
    RELEASE.clear()
    with (
        serving(hub_url) as one,
        serving(hub_url) as two,
        dt.TaskHubClient(hub_url) as client,
        sdk_worker_on(one.address, *functions, concurrency_options=roomy),
        sdk_worker_on(two.address, *functions, concurrency_options=roomy),
    ):
        sdks = [sdk_client_on(one.address), sdk_client_on(two.address)]
        try:
            ids = [
                sdks[n % 2].schedule_new_orchestration(step_event_step, input=n)
                for n in range(count)
            ]
            wait_until(lambda: len(STARTED) == count, what="every first activity running")
            for n, iid in enumerate(ids):
                sdks[(n + 1) % 2].raise_orchestration_event(iid, "extra", data=n)

            def taken_in(iid: str) -> bool:
                return any(
                    isinstance(e, h.EventRaised) for e in client.get_orchestration_history(iid)
                )

            wait_until(lambda: all(taken_in(iid) for iid in ids), what="every event taken in")
            RELEASE.set()
            outputs = []
            for iid in ids:
                state = sdks[0].wait_for_orchestration_completion(iid, timeout=60)
                assert state is not None
                outputs.append(json.loads(state.serialized_output or ""))
        finally:
            RELEASE.set()
            for sdk in sdks:
                sdk.close()
    assert outputs == [[n * n, n, (n * n + n) ** 2] for n in range(count)]
