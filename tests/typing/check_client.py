"""The clients' return types, async and sync."""

from __future__ import annotations

from typing import Any, assert_type

import duratask as dt
from duratask.backends import OrchestrationServiceClient
from duratask.backends.base import QueryPage


async def greet(ctx: dt.OrchestrationContext, name: str) -> str:
    return f"Hello, {name}!"


def check_sync_client(client: dt.TaskHubClient) -> None:
    assert_type(client.schedule_new_orchestration(greet, input="world"), str)
    assert_type(client.schedule_new_orchestration("greet", instance_id="i-1"), str)
    assert_type(client.get_orchestration_state("i-1"), dt.OrchestrationState | None)
    assert_type(client.get_orchestration_history("i-1"), list[dt.HistoryEvent])
    assert_type(client.query_orchestrations(name="greet"), QueryPage)
    assert_type(client.count_orchestrations(), dict[dt.OrchestrationStatus, int])
    assert_type(client.wait_for_orchestration_start("i-1"), dt.OrchestrationState)
    assert_type(client.wait_for_orchestration_completion("i-1"), dt.OrchestrationState)
    assert_type(client.raise_orchestration_event("i-1", "approve", True), None)
    assert_type(client.terminate_orchestration("i-1"), None)
    assert_type(client.suspend_orchestration("i-1"), None)
    assert_type(client.resume_orchestration("i-1"), None)
    assert_type(client.rewind_orchestration("i-1"), None)
    assert_type(client.restart_orchestration("i-1"), str)
    assert_type(client.purge_orchestration("i-1"), int)
    assert_type(client.purge_orchestrations(), int)
    assert_type(client.store, OrchestrationServiceClient)
    assert_type(client.data_converter, dt.DataConverter)


async def check_async_client(client: dt.AsyncTaskHubClient) -> None:
    assert_type(await client.schedule_new_orchestration(greet, input="world"), str)
    assert_type(await client.get_orchestration_state("i-1"), dt.OrchestrationState | None)
    assert_type(await client.get_orchestration_history("i-1"), list[dt.HistoryEvent])
    assert_type(await client.query_orchestrations(), QueryPage)
    assert_type(await client.count_orchestrations(), dict[dt.OrchestrationStatus, int])
    assert_type(await client.wait_for_orchestration_start("i-1"), dt.OrchestrationState)
    assert_type(await client.wait_for_orchestration_completion("i-1"), dt.OrchestrationState)
    assert_type(await client.raise_orchestration_event("i-1", "approve"), None)
    assert_type(await client.restart_orchestration("i-1", new_instance_id=True), str)
    assert_type(await client.purge_orchestration("i-1"), int)
    assert_type(await client.purge_orchestrations(), int)


def check_state(state: dt.OrchestrationState, page: QueryPage) -> None:
    assert_type(state.instance_id, str)
    assert_type(state.runtime_status, dt.OrchestrationStatus)
    assert_type(state.failure_details, dt.FailureDetails | None)
    assert_type(state.input, Any)
    assert_type(state.output, Any)
    assert_type(state.custom_status, Any)
    assert_type(state.raise_if_failed(), None)
    assert_type(page.states, list[dt.OrchestrationState])
    assert_type(page.continuation_token, str | None)


def check_reuse_id_policy() -> None:
    assert_type(dt.ReuseIdPolicy.replace_terminal(), dt.ReuseIdPolicy)
    assert_type(dt.ReuseIdPolicy.error_if_exists(), dt.ReuseIdPolicy)
