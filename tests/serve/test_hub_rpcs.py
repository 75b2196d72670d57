"""CreateTaskHub and DeleteTaskHub through the protocol."""

from __future__ import annotations

from typing import Any

import grpc
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

import duratask as dt
from tests.serve.harness import serving, wait_until


def test_delete_then_create_task_hub(hub_url: str) -> None:
    with serving(hub_url) as server, grpc.insecure_channel(server.address) as channel:
        stub: Any = pb_grpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
        with dt.TaskHubClient(hub_url) as client:
            iid = client.schedule_new_orchestration("any")
            stub.DeleteTaskHub(pb.DeleteTaskHubRequest(), timeout=30)
            stub.CreateTaskHub(pb.CreateTaskHubRequest(), timeout=30)
            found = stub.GetInstance(pb.GetInstanceRequest(instanceId=iid), timeout=10)
            assert not found.exists  # the hub was dropped with its instances
            started = stub.StartInstance(
                pb.CreateInstanceRequest(instanceId="again", name="any"), timeout=10
            )
            assert started.instanceId == "again"
            state = client.get_orchestration_state("again")
            assert state is not None and state.runtime_status is dt.OrchestrationStatus.PENDING


def tally(ctx: dt.EntityContext, amount: int) -> None:
    ctx.set_state(ctx.get_state(int, 0) + amount)


def test_a_retried_signal_with_the_sdks_request_id_applies_once(hub_url: str) -> None:
    """An SDK retrying SignalEntity (after a deadline, say) sends the same request id."""
    from google.protobuf import wrappers_pb2

    worker = dt.TaskHubWorker(hub_url)
    worker.add_entity(tally)
    with (
        serving(hub_url) as server,
        grpc.insecure_channel(server.address) as channel,
        worker,
        dt.TaskHubClient(hub_url) as client,
    ):
        stub: Any = pb_grpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
        for request_id, amount in (("r1", 5), ("r1", 5), ("r1", 5), ("r2", 1), ("", 10)):
            stub.SignalEntity(
                pb.SignalEntityRequest(
                    instanceId="@tally@sdk",
                    name="add",
                    input=wrappers_pb2.StringValue(value=str(amount)),
                    requestId=request_id,
                ),
                timeout=10,
            )

        def applied() -> dt.EntityMetadata | None:
            found = client.get_entity("@tally@sdk")
            return found if found is not None and not found.backlog else None

        found = wait_until(applied, timeout=30, what="the signals to be applied")
        assert found.state == 16
