"""The instance actions, shared by the API and the pages, with the checks the client leaves out.

The client refuses events, terminations, suspensions and resumptions sent to a finished
instance (``OrchestrationFinishedError``); the API and the pages answer 410 Gone for it (as
Durable Functions does), so a person or a script learns that nothing will happen.
"""

from __future__ import annotations

from typing import Any

from duratask.client import AsyncTaskHubClient
from duratask.dashboard.errors import bad_request
from duratask.errors import OrchestrationNotFoundError
from duratask.state import OrchestrationState

MAX_EVENT_NAME = 256


async def require_state(client: AsyncTaskHubClient, instance_id: str) -> OrchestrationState:
    """The instance's state; 404 if there is none."""
    state = await client.get_orchestration_state(instance_id)
    if state is None:
        raise OrchestrationNotFoundError(instance_id)
    return state


async def raise_event(client: AsyncTaskHubClient, instance_id: str, name: str, data: Any) -> None:
    """Send an external event to a live instance."""
    if not name or len(name) > MAX_EVENT_NAME:
        raise bad_request(f"event name must be 1 to {MAX_EVENT_NAME} characters")
    await client.raise_orchestration_event(instance_id, name, data)


async def terminate(client: AsyncTaskHubClient, instance_id: str, reason: str | None) -> None:
    """Ask a live instance to end as TERMINATED (the reason becomes its output)."""
    await client.terminate_orchestration(instance_id, output=reason)


async def suspend(client: AsyncTaskHubClient, instance_id: str, reason: str | None) -> None:
    """Ask a live instance to pause."""
    await client.suspend_orchestration(instance_id, reason)


async def resume(client: AsyncTaskHubClient, instance_id: str, reason: str | None) -> None:
    """Resume a suspended instance."""
    await client.resume_orchestration(instance_id, reason)


async def rewind(client: AsyncTaskHubClient, instance_id: str, reason: str | None) -> None:
    """Run a FAILED instance again from its failed step (409 unless FAILED)."""
    await client.rewind_orchestration(instance_id, reason)


async def restart(client: AsyncTaskHubClient, instance_id: str, *, new_instance_id: bool) -> str:
    """Start the instance again from its input; returns the id started."""
    return await client.restart_orchestration(instance_id, new_instance_id=new_instance_id)


async def purge(client: AsyncTaskHubClient, instance_id: str) -> int:
    """Delete a finished instance and its finished sub-orchestrations (409 if live)."""
    return await client.purge_orchestration(instance_id, recursive=True)
