"""Signals to a finished instance through ``duratask serve``: the sidecar answers as the
client, the CLI and the REST API do, with the client's refusal (``FAILED_PRECONDITION``
naming the instance and its status), and stores nothing."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

import duratask as dt
from tests.serve.harness import sdk_client_on, serving


async def quick(ctx: dt.OrchestrationContext, _: object) -> str:
    return "done"


def test_signals_to_a_finished_instance_fail_their_precondition(hub_url: str) -> None:
    worker = dt.TaskHubWorker(hub_url)
    worker.add_orchestration(quick)
    with worker, dt.TaskHubClient(hub_url) as client:
        iid = client.schedule_new_orchestration(quick, instance_id="done-1")
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
        history = client.get_orchestration_history(iid)
        with serving(hub_url) as server:
            sdk = sdk_client_on(server.address)
            signals: list[Callable[[], object]] = [
                lambda: sdk.raise_orchestration_event(iid, "late", data=1),
                lambda: sdk.terminate_orchestration(iid),
                lambda: sdk.suspend_orchestration(iid),
                lambda: sdk.resume_orchestration(iid),
            ]
            for signal in signals:
                with pytest.raises(grpc.RpcError) as refused:
                    signal()
                assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                details = refused.value.details() or ""
                assert "orchestration 'done-1': it has already finished (COMPLETED)" in details
        assert client.get_orchestration_history(iid) == history
