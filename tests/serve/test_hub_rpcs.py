"""CreateTaskHub and DeleteTaskHub through the protocol."""

from __future__ import annotations

from typing import Any

import grpc
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

import duratask as dt
from tests.serve.harness import serving


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
