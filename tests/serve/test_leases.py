"""Work items given to SDK workers are leases: a dropped stream hands them back at once, a
completion for a lease that was taken over is refused and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from google.protobuf import wrappers_pb2

import duratask as dt
from duratask.backends import open_store
from tests.serve.harness import ServerThread, serving


class RawWorker:
    """A worker speaking the protocol directly, one stream at a time."""

    def __init__(self, address: str, **request: Any) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub: Any = pb_grpc.TaskHubSidecarServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.stream: Any = self.stub.GetWorkItems(pb.GetWorkItemsRequest(**request), timeout=30)

    def next_item(self) -> Any:
        for item in self.stream:
            if not item.HasField("healthPing"):
                return item
        raise AssertionError("the stream ended")

    def drop(self) -> None:
        self.stream.cancel()

    def complete(self, item: Any, result: str) -> None:
        action = pb.OrchestratorAction(
            id=-1,
            completeOrchestration=pb.CompleteOrchestrationAction(
                orchestrationStatus=pb.ORCHESTRATION_STATUS_COMPLETED,
                result=wrappers_pb2.StringValue(value=result),
            ),
        )
        self.stub.CompleteOrchestratorTask(
            pb.OrchestratorResponse(
                instanceId=item.orchestratorRequest.instanceId,
                actions=[action],
                completionToken=item.completionToken,
            ),
            timeout=10,
        )

    def close(self) -> None:
        self.drop()
        self.channel.close()


@pytest.fixture
def server(hub_url: str) -> Iterator[ServerThread]:
    with serving(hub_url) as running:
        yield running


def test_a_dropped_stream_hands_its_items_back_at_once(server: ServerThread, hub_url: str) -> None:
    with dt.TaskHubClient(hub_url) as client:
        iid = client.schedule_new_orchestration("raw", input=1)
        first = RawWorker(server.address)
        item = first.next_item()
        assert item.orchestratorRequest.instanceId == iid
        kinds = [e.WhichOneof("eventType") for e in item.orchestratorRequest.newEvents]
        assert kinds == ["orchestratorStarted", "executionStarted"]
        first.drop()
        # Redelivered to the next worker without waiting for the 30 s lease to expire.
        second = RawWorker(server.address)
        again = second.next_item()
        assert again.orchestratorRequest.instanceId == iid
        assert again.completionToken != item.completionToken
        with pytest.raises(grpc.RpcError) as refused:
            first.complete(item, '"stale"')
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        second.complete(again, '"fresh"')
        state = client.wait_for_orchestration_completion(iid, timeout=10)
        assert state.output == "fresh"
        first.close()
        second.close()


def test_a_completion_for_a_lease_taken_over_is_refused(server: ServerThread, hub_url: str) -> None:
    with dt.TaskHubClient(hub_url) as client:
        iid = client.schedule_new_orchestration("raw", input=1)
        # One item at a time: this worker cannot lease the instance again itself.
        first = RawWorker(server.address, maxConcurrentOrchestrationWorkItems=1)
        item = first.next_item()

        async def break_first() -> None:
            # What an expired lease amounts to: another worker may take the instance.
            store = open_store(hub_url)
            await store.open()
            try:
                for holder in await store.lease_holders():
                    await store.break_leases(holder.owner)
            finally:
                await store.close()

        asyncio.run(break_first())
        second = RawWorker(server.address)
        taken = second.next_item()
        assert taken.orchestratorRequest.instanceId == iid
        with pytest.raises(grpc.RpcError) as refused:
            first.complete(item, '"stale"')
        # The commit is fenced by the lease: the first worker's no longer holds.
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        second.complete(taken, '"fresh"')
        assert client.wait_for_orchestration_completion(iid, timeout=10).output == "fresh"
        history = client.get_orchestration_history(iid)
        assert sum(isinstance(e, dt.history.ExecutionCompleted) for e in history) == 1
        first.close()
        second.close()


def test_unknown_and_bad_entity_rpcs_answer_clearly(server: ServerThread) -> None:
    worker = RawWorker(server.address)
    with pytest.raises(grpc.RpcError) as refused:
        worker.stub.SignalEntity(pb.SignalEntityRequest(instanceId="counter-a", name="add"))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "@name@key" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as unknown:
        worker.stub.CompleteEntityTask(pb.EntityBatchResult(completionToken="nothing"))
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as missing:
        worker.stub.RaiseEvent(pb.RaiseEventRequest(instanceId="nobody", name="x"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    worker.close()


def _batch_result(item: Any, state: str, results: int) -> pb.EntityBatchResult:
    success = pb.OperationResult(success=pb.OperationResultSuccess())
    return pb.EntityBatchResult(
        results=[success] * results,
        entityState=wrappers_pb2.StringValue(value=state),
        completionToken=item.completionToken,
    )


def test_an_entity_batch_is_leased_and_its_completion_checked(
    server: ServerThread, hub_url: str
) -> None:
    with dt.TaskHubClient(hub_url) as client:
        client.signal_entity("@counter@a", "add", 3)
        first = RawWorker(server.address, maxConcurrentEntityWorkItems=1)
        item = first.next_item()
        batch = item.entityRequest
        assert batch.instanceId == "@counter@a" and not batch.HasField("entityState")
        assert [(op.operation, op.input.value) for op in batch.operations] == [("add", "3")]
        # A result that does not answer each operation is refused and the batch handed back.
        with pytest.raises(grpc.RpcError) as refused:
            first.stub.CompleteEntityTask(_batch_result(item, "3", results=2), timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "answered 2 of the batch's 1 operations" in (refused.value.details() or "")
        again = first.next_item()
        assert again.entityRequest.instanceId == "@counter@a"
        first.stub.CompleteEntityTask(_batch_result(again, "3", results=1), timeout=10)
        found = client.get_entity("@counter@a")
        assert found is not None and found.state == 3
        # A completion whose lease is gone changes nothing.
        with pytest.raises(grpc.RpcError) as stale:
            first.stub.CompleteEntityTask(_batch_result(again, "99", results=1), timeout=10)
        assert stale.value.code() is grpc.StatusCode.NOT_FOUND
        found = client.get_entity("@counter@a")
        assert found is not None and found.state == 3
        first.close()
