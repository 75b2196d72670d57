"""A worker lost while it held an instance shows on the instance's timeline and in the REST
API: a worker leases the instance and dies (its lease is never released), another takes it
over once the lease has run out."""

from __future__ import annotations

import uuid
from datetime import timedelta

import duratask as dt
from duratask.backends import open_store
from tests.dashboard import workflows
from tests.dashboard.conftest import Hub

DEAD_LEASE = timedelta(milliseconds=300)


async def test_the_gap_a_lost_worker_left_is_marked_on_the_timeline() -> None:
    url = f"memory://lost-{uuid.uuid4().hex}"
    hub = Hub(url)
    try:
        iid = await hub.start_instance(workflows.echo, "after the crash", instance_id="crashed")
        store = open_store(url)
        dead = await store.lock_next_orchestration_work_item("dead-worker", DEAD_LEASE)
        assert dead is not None and dead.instance_id == iid  # and its worker never comes back
        await hub.start()
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=20)
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
        web = hub.web()

        page = (await web.get(f"/instances/{iid}")).text
        assert 'data-kind="lost"' in page
        assert "worker lost" in page
        assert "lease of dead-worker ran out unreleased" in page
        assert "taken over by " + hub.worker.worker_id in page

        api = await web.get(f"/api/instances/{iid}/takeovers")
        assert api.status_code == 200
        (takeover,) = api.json()
        assert takeover["previous_owner"] == "dead-worker"
        assert takeover["taken_by"] == hub.worker.worker_id
        assert takeover["taken_at"] >= takeover["lease_expired_at"]
        assert (await web.get("/api/instances/nobody/takeovers")).status_code == 404
    finally:
        await hub.stop()


async def test_an_instance_whose_worker_released_its_lease_shows_no_lost_worker(
    hub: Hub,
) -> None:
    await hub.finish(workflows.echo, "fine", instance_id="fine")
    web = hub.web()
    page = (await web.get("/instances/fine")).text
    assert 'data-kind="lost"' not in page
    assert (await web.get("/api/instances/fine/takeovers")).json() == []
