"""An activity's result goes straight into the instance's next episode, run by the worker
that ran the activity: one commit per step, the result never stored as a message."""

from __future__ import annotations

import json

from duratask.backends.base import ActivityWorkItem, OrchestrationMessage
from duratask.backends.memory import MemoryOrchestrationService
from tests.serve import sdk_app
from tests.serve.harness import sdk_client_on, sdk_worker_on, serving


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
