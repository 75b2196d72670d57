"""Work sent to a worker ahead of the commit that leases it: a new instance's first episode
before its create commits, an episode's activities before the episode commits. Their
completions wait for that commit, and are refused if it failed; a client waiting on an
instance only ever sees what is stored."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from google.protobuf import wrappers_pb2

import duratask as dt
from duratask import history as h
from duratask.backends import open_store
from duratask.backends.base import (
    TERMINAL_STATUSES,
    ActivityWorkItem,
    EpisodeFence,
    OrchestrationCommit,
    OrchestrationWorkItem,
    SupportsEagerStart,
)
from duratask.backends.memory import MemoryOrchestrationService
from duratask.client import build_start_message
from duratask.converter import PayloadCodec
from duratask.errors import StoreError
from duratask.serve.client_rpcs import RawJson
from duratask.serve.episodes import CodeRequest, first_input, prepare
from duratask.worker._episode import EpisodeInput
from tests.serve import sdk_app
from tests.serve.harness import ServerThread, sdk_client_on, sdk_worker_on, serving, wait_until
from tests.serve.test_leases import RawWorker


class Gate:
    """Holds a store call until released; then it goes on, or fails once if told to."""

    def __init__(self, fail: bool) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.passed = threading.Event()  # the held call returned (it was not failed)

    async def hold(self) -> None:
        self.entered.set()
        await asyncio.to_thread(self.release.wait, 30)
        if self.fail:
            self.fail = False
            raise StoreError("the disk went away (test)")


class GatedStore(MemoryOrchestrationService):
    """Holds the first create, the first commit that schedules activities, or the first
    commit that ends an instance, at a :class:`Gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.create_gate: Gate | None = None
        self.schedule_gate: Gate | None = None
        self.end_gate: Gate | None = None

    async def create_and_lease_instance(self, *args: Any, **kwargs: Any) -> Any:
        gate, self.create_gate = self.create_gate, None
        if gate is not None:
            await gate.hold()
        item: OrchestrationWorkItem | None = await super().create_and_lease_instance(
            *args, **kwargs
        )
        return item

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        gate = None
        if commit.activities and self.schedule_gate is not None:
            gate, self.schedule_gate = self.schedule_gate, None
        elif commit.state.runtime_status.is_terminal and self.end_gate is not None:
            gate, self.end_gate = self.end_gate, None
        if gate is not None:
            await gate.hold()
        leased = await super().commit_episode(fence, commit)
        if gate is not None:
            gate.passed.set()
        return leased


def _schedule(item: Any, name: str, payload: str) -> pb.OrchestratorResponse:
    action = pb.OrchestratorAction(
        id=1,
        scheduleTask=pb.ScheduleTaskAction(
            name=name, input=wrappers_pb2.StringValue(value=payload)
        ),
    )
    return pb.OrchestratorResponse(
        instanceId=item.orchestratorRequest.instanceId,
        actions=[action],
        completionToken=item.completionToken,
    )


def _activity_done(item: Any, result: str) -> pb.ActivityResponse:
    return pb.ActivityResponse(
        instanceId=item.activityRequest.orchestrationInstance.instanceId,
        taskId=item.activityRequest.taskId,
        result=wrappers_pb2.StringValue(value=result),
        completionToken=item.completionToken,
    )


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


def _code(call: concurrent.futures.Future[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        call.result(30)
    code: grpc.StatusCode = refused.value.code()
    return code


def _streams(server: ServerThread) -> Any:
    return server.server._sidecar.streams  # type: ignore[union-attr]


def _connected(server: ServerThread, worker: RawWorker) -> None:
    """Wait until the raw worker's stream is open at the server (a start goes to it)."""
    wait_until(lambda: len(_streams(server)._streams) == 1, what="the worker's stream")


def _received(server: ServerThread, token: str) -> None:
    """Wait until the server has taken in the completion of the item sent under ``token``."""
    wait_until(lambda: token not in _streams(server)._leased, what="the completion")


@contextlib.contextmanager
def _gated_serving() -> Iterator[tuple[GatedStore, ServerThread, dt.TaskHubClient, RawWorker, Any]]:
    """A server on a gated store, with a raw worker connected and an SDK client."""
    store = GatedStore()
    with serving(store) as server, dt.TaskHubClient(store) as client:
        worker = RawWorker(server.address)
        _connected(server, worker)
        sdk = sdk_client_on(server.address)
        try:
            yield store, server, client, worker, sdk
        finally:
            sdk.close()
            worker.close()


def test_an_activity_sent_ahead_of_a_failing_commit_is_refused_and_the_episode_runs_again(
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    store = GatedStore()
    with serving(store) as server, dt.TaskHubClient(store) as client:
        worker = RawWorker(server.address)
        iid = client.schedule_new_orchestration("raw", input=1)
        episode = worker.next_item()
        assert episode.orchestratorRequest.instanceId == iid
        gate = store.schedule_gate = Gate(fail=True)
        committing = pool.submit(
            worker.stub.CompleteOrchestratorTask, _schedule(episode, "act", '"x"'), timeout=30
        )
        # The activity arrives while the commit that schedules and leases it is held.
        activity = worker.next_item()
        assert gate.entered.is_set() and not gate.release.is_set()
        assert activity.activityRequest.name == "act"
        reported = pool.submit(
            worker.stub.CompleteActivityTask, _activity_done(activity, '"early"'), timeout=30
        )
        _received(server, activity.completionToken)  # and waits for the held commit
        gate.release.set()
        assert _code(committing) is grpc.StatusCode.UNAVAILABLE
        assert _code(reported) is grpc.StatusCode.FAILED_PRECONDITION
        # Nothing of it was stored; the episode goes to a worker again and runs on.
        assert not any(
            isinstance(e, h.TaskScheduled) for e in client.get_orchestration_history(iid)
        )
        again = worker.next_item()
        assert again.orchestratorRequest.instanceId == iid
        worker.stub.CompleteOrchestratorTask(_schedule(again, "act", '"x"'), timeout=10)
        activity = worker.next_item()
        worker.stub.CompleteActivityTask(_activity_done(activity, '"late"'), timeout=10)
        last = worker.next_item()
        assert [e.WhichOneof("eventType") for e in last.orchestratorRequest.newEvents] == [
            "orchestratorStarted",
            "taskCompleted",
        ]
        assert last.orchestratorRequest.newEvents[1].taskCompleted.result.value == '"late"'
        worker.complete(last, '"done"')
        state = client.wait_for_orchestration_completion(iid, timeout=10)
        assert state.output == "done"
        history = client.get_orchestration_history(iid)
        assert sum(isinstance(e, h.TaskScheduled) for e in history) == 1
        worker.close()


def test_a_first_episode_sent_ahead_of_a_failing_create_is_refused(
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    with _gated_serving() as (store, server, client, worker, sdk):
        gate = store.create_gate = Gate(fail=True)
        starting = pool.submit(sdk.schedule_new_orchestration, "raw", instance_id="ahead-1")
        episode = worker.next_item()  # sent while the create is held
        assert episode.orchestratorRequest.instanceId == "ahead-1"
        assert gate.entered.is_set() and not starting.done()
        finishing = pool.submit(worker.complete, episode, '"too early"')
        _received(server, episode.completionToken)
        gate.release.set()
        assert _code(starting) is grpc.StatusCode.UNAVAILABLE
        assert _code(finishing) is grpc.StatusCode.FAILED_PRECONDITION
        assert client.get_orchestration_state("ahead-1") is None
        # The next start goes the same way and commits.
        iid = sdk.schedule_new_orchestration("raw", instance_id="ahead-2")
        worker.complete(worker.next_item(), '"ok"')
        assert client.wait_for_orchestration_completion(iid, timeout=10).output == "ok"


def test_a_waiting_client_is_answered_only_once_the_completion_is_stored(
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    with _gated_serving() as (store, _server, client, worker, sdk):
        iid = sdk.schedule_new_orchestration("raw")
        episode = worker.next_item()
        waiting = pool.submit(sdk.wait_for_orchestration_completion, iid, timeout=30)
        gate = store.end_gate = Gate(fail=False)
        finishing = pool.submit(worker.complete, episode, '"stored"')
        wait_until(gate.entered.is_set, what="the ending commit")
        # Held before it is stored: the client has no answer, however long it is held.
        with pytest.raises(concurrent.futures.TimeoutError):
            waiting.result(0.5)
        gate.release.set()
        state = waiting.result(30)
        assert gate.passed.is_set()
        finishing.result(30)
        assert state is not None and state.serialized_output == '"stored"'
        stored = client.get_orchestration_state(iid)
        assert stored is not None and stored.runtime_status is dt.OrchestrationStatus.COMPLETED


def test_the_answer_to_a_waiting_client_is_the_stored_row(
    hub_url: str, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    """A waiting client's answer (its tags remembered from the start, not read from the
    history) reads the same as the stored instance does afterwards."""
    with (
        serving(hub_url) as server,
        sdk_worker_on(server.address, [sdk_app.approval]),
    ):
        sdk = sdk_client_on(server.address)
        channel = grpc.insecure_channel(server.address)
        raw: Any = pb_grpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
        iid = sdk.schedule_new_orchestration(sdk_app.approval, input=[1, "a"], tags={"team": "x"})
        sdk.wait_for_orchestration_start(iid, timeout=30)
        asked = pb.GetInstanceRequest(instanceId=iid, getInputsAndOutputs=True)
        waiting = pool.submit(raw.WaitForInstanceCompletion, asked, timeout=30)
        sdk.raise_orchestration_event(iid, "approve", data="yes")
        waited = waiting.result(30)
        stored = raw.GetInstance(asked, timeout=10)
        sdk.close()
        channel.close()
    assert waited.orchestrationState.output.value == '"yes"'
    assert dict(waited.orchestrationState.tags) == {"team": "x"}
    assert waited == stored


def test_the_first_episode_planned_ahead_is_the_one_the_create_leases(hub_url: str) -> None:
    """What the server sends ahead of a create is what the leased work item gives (the
    server checks it too, and falls back to the leased item if they differ)."""

    async def both() -> tuple[object, object]:
        store = open_store(hub_url)
        await store.open()
        try:
            assert isinstance(store, SupportsEagerStart)
            message = build_start_message(
                PayloadCodec(RawJson()),
                datetime.now(UTC),
                "orchestration",
                input='"x"',
                instance_id="first",
                tags={"k": "v"},
            )
            now = datetime.now(UTC)
            ahead = prepare(first_input(message), now)
            item = await store.create_and_lease_instance(
                message, TERMINAL_STATUSES, "owner", timedelta(seconds=30)
            )
            assert item is not None
            return ahead, prepare(EpisodeInput.of(item), now)
        finally:
            await store.close()

    ahead, leased = asyncio.run(both())
    assert isinstance(ahead, CodeRequest)
    assert ahead == leased
