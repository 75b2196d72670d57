"""One behaviour for signals sent to a finished instance, on every surface and every store:
the client raises OrchestrationFinishedError naming the instance and its status, the CLI
exits 1 saying so, the REST API answers 410 with a JSON error; nothing is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from click.testing import CliRunner

import duratask as dt
from duratask.cli.main import main
from duratask.dashboard import create_app

from .e2e_hub import TaskHub

pytestmark = pytest.mark.timeout(60)


async def quick(ctx: dt.OrchestrationContext, _: object) -> str:
    return "done"


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[TaskHub]:
    hub = TaskHub(store_url)
    hub.register(quick)
    await hub.start()
    yield hub
    await hub.stop()


async def _finished(hub: TaskHub) -> tuple[str, list[dt.HistoryEvent]]:
    state = await hub.run(quick, instance_id="done-1")
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    return state.instance_id, await hub.client.get_orchestration_history(state.instance_id)


async def test_the_async_and_sync_clients_refuse_signals(hub: TaskHub) -> None:
    iid, history = await _finished(hub)
    client = hub.client
    for signal in (
        client.raise_orchestration_event(iid, "late", {"n": 1}),
        client.terminate_orchestration(iid),
        client.suspend_orchestration(iid),
        client.resume_orchestration(iid),
    ):
        with pytest.raises(dt.OrchestrationFinishedError) as refused:
            await signal
        assert refused.value.instance_id == iid
        assert refused.value.status is dt.OrchestrationStatus.COMPLETED
        assert isinstance(refused.value, dt.InvalidOperationError)
    assert "cannot raise event 'late' on orchestration 'done-1': it has already finished " in str(
        await _raised_by(client.raise_orchestration_event(iid, "late"))
    )

    def sync_raise() -> None:
        with dt.TaskHubClient(hub.url) as sync:
            sync.raise_orchestration_event(iid, "late")

    with pytest.raises(dt.OrchestrationFinishedError, match=r"already finished \(COMPLETED\)"):
        await asyncio.to_thread(sync_raise)
    assert await client.get_orchestration_history(iid) == history


async def _raised_by(signal: object) -> BaseException:
    try:
        await signal  # type: ignore[misc]
    except BaseException as exc:
        return exc
    raise AssertionError("the signal was not refused")


async def test_the_cli_exits_1_naming_the_instance_and_its_status(hub: TaskHub) -> None:
    iid, history = await _finished(hub)
    runner = CliRunner(env={"DURATASK_STORE": hub.url, "COLUMNS": "200"})
    for args in (["raise-event", iid, "late"], ["terminate", iid], ["suspend", iid]):
        result = await asyncio.to_thread(runner.invoke, main, args)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().startswith("Error: cannot ")
        assert f"orchestration {iid!r}: it has already finished (COMPLETED)" in result.stderr
    assert await hub.client.get_orchestration_history(iid) == history


async def test_the_rest_api_answers_410_gone(hub: TaskHub) -> None:
    iid, history = await _finished(hub)
    transport = httpx.ASGITransport(app=create_app(hub.client))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
        for path in ("raiseEvent/late", "terminate", "suspend", "resume"):
            answer = await web.post(f"/api/instances/{iid}/{path}", json=1)
            assert answer.status_code == 410, answer.text
            error = answer.json()["error"]
            assert error["type"] == "instance_finished"
            assert f"{iid!r}: it has already finished (COMPLETED)" in error["message"]
    assert await hub.client.get_orchestration_history(iid) == history
