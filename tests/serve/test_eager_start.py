"""An SDK client's start reaches a connected SDK worker that can run it in the transaction
that creates the instance (eager start): no wake-up, fetch or lease of its own."""

from __future__ import annotations

import json
from datetime import timedelta

from duratask.backends.base import OrchestrationWorkItem
from duratask.backends.memory import MemoryOrchestrationService
from tests.serve import sdk_app
from tests.serve.harness import sdk_client_on, sdk_worker_on, serving


class CountingStore(MemoryOrchestrationService):
    """Counts the instances leased by a fetch and those leased as they were created."""

    fetched = 0
    leased_at_create = 0

    async def lock_next_orchestration_work_item(
        self, owner: str, lease: timedelta, *args: object, **kwargs: object
    ) -> OrchestrationWorkItem | None:
        item = await super().lock_next_orchestration_work_item(owner, lease, *args, **kwargs)  # type: ignore[arg-type]
        self.fetched += item is not None
        return item

    async def create_and_lease_instance(
        self, *args: object, **kwargs: object
    ) -> OrchestrationWorkItem | None:
        item = await super().create_and_lease_instance(*args, **kwargs)  # type: ignore[arg-type]
        self.leased_at_create += item is not None
        return item


def test_starts_go_to_a_connected_worker_without_a_fetch() -> None:
    store = CountingStore()
    with (
        serving(store) as server,
        sdk_worker_on(server.address, [sdk_app.sequence], [sdk_app.greet]),
    ):
        sdk = sdk_client_on(server.address)

        def run(name: str) -> object:
            iid = sdk.schedule_new_orchestration(sdk_app.sequence, input=[name])
            state = sdk.wait_for_orchestration_completion(iid, timeout=30)
            assert state is not None and state.serialized_output is not None
            return json.loads(state.serialized_output)

        run("warm-up")  # the worker's stream is open once this has run
        store.fetched = store.leased_at_create = 0
        outputs = [run(f"n{i}") for i in range(5)]
        sdk.close()
    assert outputs == [[f"Hello n{i}!"] for i in range(5)]
    assert (store.leased_at_create, store.fetched) == (5, 0)


def test_a_start_no_connected_worker_can_run_is_created_for_a_fetch() -> None:
    """A worker whose filters leave the orchestration out does not get it at creation."""
    store = CountingStore()
    with (
        serving(store) as server,
        sdk_worker_on(server.address, [sdk_app.fan_out], [sdk_app.square], filters=True),
    ):
        sdk = sdk_client_on(server.address)
        iid = sdk.schedule_new_orchestration(sdk_app.sequence, input=["x"])
        state = sdk.get_orchestration_state(iid)
        sdk.close()
    assert state is not None and state.runtime_status.name == "PENDING"
    assert store.leased_at_create == 0
