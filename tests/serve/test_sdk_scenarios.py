"""The official Python SDK (client and worker) on ``duratask serve``, on SQLite and
PostgreSQL: the SDK's features, and one instance seen the same from both sides.

One server, SDK worker and hub per store kind for the module (starting an SDK worker and
stopping it costs about a second); every test works on instance ids of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from durabletask import client as sdk_client
from durabletask import worker as sdk_worker

import duratask as dt
from duratask import history as h
from tests.serve import sdk_app
from tests.serve.conftest import SERVE_STORES, cleanup, fresh_url
from tests.serve.harness import ServerThread, sdk_client_on, sdk_worker_on, wait_until

SDK = sdk_client.OrchestrationStatus


@dataclass
class Hub:
    url: str
    server: ServerThread
    sdk: sdk_client.TaskHubGrpcClient
    worker: sdk_worker.TaskHubGrpcWorker
    client: dt.TaskHubClient


@pytest.fixture(scope="module", params=SERVE_STORES)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp: Path = tmp_path_factory.mktemp("serve")
    url = fresh_url(request.param, tmp)
    server = ServerThread(url).start()
    sdk = sdk_client_on(server.address)
    client = dt.TaskHubClient(url)
    try:
        with sdk_worker_on(server.address, sdk_app.ORCHESTRATORS, sdk_app.ACTIVITIES) as worker:
            yield Hub(url, server, sdk, worker, client)
    finally:
        sdk.close()
        client.close()
        server.stop()
        cleanup(request.param, url)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def completed(hub: Hub, instance_id: str) -> sdk_client.OrchestrationState:
    state = hub.sdk.wait_for_orchestration_completion(instance_id, timeout=30)
    assert state is not None
    return state


def test_activity_sequence_is_one_instance_on_both_sides(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(
        sdk_app.sequence, input=["Tokyo", "London"], instance_id=new_id("seq")
    )
    state = completed(hub, iid)
    assert state.runtime_status is SDK.COMPLETED
    assert json.loads(state.serialized_output or "") == ["Hello Tokyo!", "Hello London!"]
    # duratask's client reads the same instance and its history.
    mine = hub.client.get_orchestration_state(iid)
    assert mine is not None
    assert mine.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert mine.output == ["Hello Tokyo!", "Hello London!"]
    kinds = [type(e).__name__ for e in hub.client.get_orchestration_history(iid)]
    assert kinds.count("TaskScheduled") == 2 and kinds.count("TaskCompleted") == 2
    assert kinds[-2:] == ["ExecutionCompleted", "OrchestratorCompleted"]


def test_started_by_duratask_runs_on_the_sdk_worker(hub: Hub) -> None:
    iid = hub.client.schedule_new_orchestration("fan_out", input=5, instance_id=new_id("dt"))
    state = hub.client.wait_for_orchestration_completion(iid, timeout=30)
    assert state.output == sum(i * i for i in range(5))
    seen = hub.sdk.get_orchestration_state(iid)
    assert seen is not None and seen.runtime_status is SDK.COMPLETED


def test_fan_out_fan_in(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(sdk_app.fan_out, input=20, instance_id=new_id("fan"))
    state = completed(hub, iid)
    assert state.serialized_output == str(sum(i * i for i in range(20)))
    scheduled = [
        e for e in hub.client.get_orchestration_history(iid) if isinstance(e, h.TaskScheduled)
    ]
    assert len(scheduled) == 20


def test_timer_then_external_event(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(sdk_app.timer_then_event, instance_id=new_id("tm"))
    wait_until(
        lambda: any(isinstance(e, h.TimerFired) for e in hub.client.get_orchestration_history(iid)),
        what="the timer to fire",
    )
    hub.sdk.raise_orchestration_event(iid, "approve", data={"by": "ops"})
    state = completed(hub, iid)
    assert json.loads(state.serialized_output or "") == {"waited": True, "value": {"by": "ops"}}


def test_sub_orchestrations(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(sdk_app.parent, input=3, instance_id=new_id("par"))
    state = completed(hub, iid)
    assert state.serialized_output == str(9 + 16)
    child = hub.client.get_orchestration_state(f"{iid}-child")
    assert child is not None and child.parent_instance_id == iid
    assert child.runtime_status is dt.OrchestrationStatus.COMPLETED


def test_activity_retries(hub: Hub) -> None:
    key = new_id("retry")
    iid = hub.sdk.schedule_new_orchestration(sdk_app.with_retries, input=key, instance_id=key)
    state = completed(hub, iid)
    assert state.runtime_status is SDK.COMPLETED
    assert json.loads(state.serialized_output or "") == f"{key} after 3"
    failed = [e for e in hub.client.get_orchestration_history(iid) if isinstance(e, h.TaskFailed)]
    assert len(failed) == 2
    assert "attempt 1" in failed[0].failure_details.message


def test_recursive_terminate_reaches_the_child(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(sdk_app.waiting_parent, instance_id=new_id("term"))
    hub.sdk.wait_for_orchestration_start(f"{iid}-child", timeout=30)
    hub.sdk.terminate_orchestration(iid, output="enough", recursive=True)
    state = completed(hub, iid)
    assert state.runtime_status is SDK.TERMINATED
    assert json.loads(state.serialized_output or "") == "enough"
    child = completed(hub, f"{iid}-child")
    assert child.runtime_status is SDK.TERMINATED


def test_suspend_buffers_events_until_resume(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(sdk_app.approval, instance_id=new_id("sus"))
    hub.sdk.wait_for_orchestration_start(iid, timeout=30)
    hub.sdk.suspend_orchestration(iid)
    wait_until(
        lambda: (
            hub.client.get_orchestration_state(iid).runtime_status  # type: ignore[union-attr]
            is dt.OrchestrationStatus.SUSPENDED
        ),
        what="SUSPENDED",
    )
    hub.sdk.raise_orchestration_event(iid, "approve", data="yes")
    wait_until(
        lambda: any(
            isinstance(e, h.EventRaised) for e in hub.client.get_orchestration_history(iid)
        ),
        what="the event to be recorded",
    )
    state = hub.sdk.get_orchestration_state(iid)
    assert state is not None and state.runtime_status is SDK.SUSPENDED
    hub.sdk.resume_orchestration(iid)
    assert completed(hub, iid).serialized_output == '"yes"'


def test_query_with_paging_then_purge(hub: Hub) -> None:
    prefix = new_id("q")
    ids = [
        hub.sdk.schedule_new_orchestration(sdk_app.sequence, input=[], instance_id=f"{prefix}-{i}")
        for i in range(5)
    ]
    for iid in ids:
        completed(hub, iid)
    query = sdk_client.OrchestrationQuery(
        instance_id_prefix=prefix, max_instance_count=2, fetch_inputs_and_outputs=True
    )
    states = hub.sdk.get_all_orchestration_states(query)  # follows the continuation tokens
    assert sorted(s.instance_id for s in states) == sorted(ids)
    assert all(s.serialized_output == "[]" for s in states)
    assert hub.sdk.purge_orchestration(ids[0]).deleted_instance_count == 1
    assert hub.client.get_orchestration_state(ids[0]) is None
    assert hub.sdk.get_orchestration_state(ids[0]) is None


def test_purge_refuses_a_running_instance(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(sdk_app.approval, instance_id=new_id("pr"))
    hub.sdk.wait_for_orchestration_start(iid, timeout=30)
    with pytest.raises(Exception, match="only finished instances can be purged"):
        hub.sdk.purge_orchestration(iid)
    hub.sdk.terminate_orchestration(iid)
    completed(hub, iid)


def test_continue_as_new_carries_events(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(sdk_app.counter, input=0, instance_id=new_id("can"))
    hub.sdk.wait_for_orchestration_start(iid, timeout=30)
    for value in (1, 2, 3):
        hub.sdk.raise_orchestration_event(iid, "add", data=value)
    assert completed(hub, iid).serialized_output == "6"


def test_version_and_tags(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(
        sdk_app.versioned, instance_id=new_id("ver"), version="2.1", tags={"team": "ops"}
    )
    assert completed(hub, iid).serialized_output == '"2.1"'
    state = hub.client.get_orchestration_state(iid)
    assert state is not None and state.version == "2.1"
    start = hub.client.get_orchestration_history(iid)[1]
    assert isinstance(start, h.ExecutionStarted) and start.tags == {"team": "ops"}


def test_rewind_reruns_the_failed_step(hub: Hub) -> None:
    key = new_id("rw")
    iid = hub.sdk.schedule_new_orchestration(sdk_app.rewindable, input=key, instance_id=key)
    assert completed(hub, iid).runtime_status is SDK.FAILED
    hub.sdk.rewind_orchestration(iid, reason="fixed")
    state = completed(hub, iid)
    assert state.runtime_status is SDK.COMPLETED
    assert json.loads(state.serialized_output or "") == [f"Hello {key}!", f"{key} ok"]
    greets = [
        e
        for e in hub.client.get_orchestration_history(iid)
        if isinstance(e, h.TaskScheduled) and e.name == "greet"
    ]
    assert len(greets) == 1  # completed work is kept, not run again


def test_restart_and_history_stream(hub: Hub) -> None:
    iid = hub.sdk.schedule_new_orchestration(
        sdk_app.sequence, input=["a"], instance_id=new_id("rs")
    )
    completed(hub, iid)
    again = hub.sdk.restart_orchestration(iid, restart_with_new_instance_id=True)
    assert again != iid
    assert completed(hub, again).serialized_output == '["Hello a!"]'
    events = hub.sdk.get_orchestration_history(again)
    names = [type(e).__name__ for e in events]
    assert names[0] == "OrchestratorStartedEvent"
    assert "TaskScheduledEvent" in names and names[-1] == "OrchestratorCompletedEvent"
    assert len(events) == len(hub.client.get_orchestration_history(again))


def test_list_instance_ids_pages_finished_instances(hub: Hub) -> None:
    since = datetime.now(UTC)
    ids = [
        hub.sdk.schedule_new_orchestration(sdk_app.sequence, input=[], instance_id=new_id("li"))
        for _ in range(3)
    ]
    for iid in ids:
        completed(hub, iid)
    seen: list[str] = []
    token = None
    while True:
        page = hub.sdk.list_instance_ids(
            completed_time_from=since, page_size=2, continuation_token=token
        )
        seen.extend(page.items)
        token = page.continuation_token
        if token is None:
            break
    assert set(ids) <= set(seen)


def test_scheduled_start_waits_for_its_time(hub: Hub) -> None:
    start_at = datetime.now(UTC) + timedelta(seconds=1)
    iid = hub.sdk.schedule_new_orchestration(
        sdk_app.sequence, input=["later"], instance_id=new_id("sch"), start_at=start_at
    )
    state = hub.sdk.get_orchestration_state(iid)
    assert state is not None and state.runtime_status is SDK.PENDING
    completed(hub, iid)
    history = hub.client.get_orchestration_history(iid)
    assert history[0].timestamp >= start_at


def test_purge_by_filter_takes_only_finished_instances(hub: Hub) -> None:
    since = datetime.now(UTC)
    done = hub.sdk.schedule_new_orchestration(sdk_app.sequence, input=[], instance_id=new_id("pf"))
    completed(hub, done)
    running = hub.sdk.schedule_new_orchestration(sdk_app.approval, instance_id=new_id("pf"))
    hub.sdk.wait_for_orchestration_start(running, timeout=30)
    result = hub.sdk.purge_orchestrations_by(
        created_time_from=since, runtime_status=[SDK.COMPLETED, SDK.RUNNING]
    )
    assert result.deleted_instance_count == 1
    assert hub.sdk.get_orchestration_state(done) is None
    assert hub.sdk.get_orchestration_state(running) is not None
    hub.sdk.terminate_orchestration(running)
    completed(hub, running)
