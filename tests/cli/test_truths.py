"""Small truths: hints that say what to type, the documented instance-id limit, a demo that
cleans up after itself, and history events spelled one way everywhere."""

from __future__ import annotations

import asyncio
import html
import importlib.util
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

import duratask as dt
from duratask.cli.main import main
from duratask.client import MAX_INSTANCE_ID_LENGTH
from duratask.dashboard import create_app
from duratask.history import EVENT_NAMES
from tests.cli.conftest import Cli, one_line_error
from tests.conformance.e2e_hub import TaskHub

ROOT = Path(__file__).resolve().parents[2]
ENUM_STYLE = re.compile(r"\b[A-Z]+(?:_[A-Z]+)+\b")  # TASK_SCHEDULED, EXECUTION_STARTED...


# -- C1: JSON strings need quotes ----------------------------------------------------------------


def test_a_bare_word_given_as_json_gets_a_hint_to_quote_it(idle_cli: Cli) -> None:
    iid = idle_cli.run("start", "await_approval").stdout.strip()
    raised = idle_cli.invoke("raise-event", iid, "approval", "--data", "alice")
    assert raised.exit_code == 2
    line = one_line_error(raised)
    assert "Expecting value" in line and "--data '\"alice\"'" in line, line
    started = idle_cli.invoke("start", "greet", "--input", "Ada")
    assert started.exit_code == 2
    assert "--input '\"Ada\"'" in one_line_error(started)
    # JSON that is wrong in another way gets no such hint.
    broken = idle_cli.invoke("start", "greet", "--input", '{"a": }')
    assert broken.exit_code == 2 and "needs double quotes" not in one_line_error(broken)


async def test_the_rest_api_and_the_event_form_hint_at_quotes_too() -> None:
    async with dt.AsyncTaskHubClient(f"memory://hint-{id(object())}") as client:
        iid = await client.schedule_new_orchestration("waits")
        transport = httpx.ASGITransport(app=create_app(client))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
            api = await web.post(
                f"/api/instances/{iid}/raiseEvent/go",
                content=b"alice",
                headers={"Content-Type": "application/json"},
            )
            assert api.status_code == 400
            assert 'needs double quotes: "alice"' in api.json()["error"]["message"]
            page = await web.get(f"/instances/{iid}/actions/raise-event")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf is not None
            form = await web.post(
                f"/instances/{iid}/actions/raise-event",
                data={"csrf_token": csrf.group(1), "event_name": "go", "event_data": "alice"},
            )
            assert form.status_code == 400
            assert 'needs double quotes: "alice"' in html.unescape(form.text)


# -- C2: the instance-id limit is documented, and the error names it -----------------------------


def test_the_instance_id_limit_is_documented_and_named_by_the_error(idle_cli: Cli) -> None:
    assert MAX_INSTANCE_ID_LENGTH == 256
    cli_doc = (ROOT / "docs" / "cli.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for doc in (cli_doc, readme):
        assert re.search(r"[Ii]nstance ids? (?:are|is) (?:at most )?[^.]*256 characters", doc), (
            "the instance-id limit is not documented"
        )
    too_long = "x" * (MAX_INSTANCE_ID_LENGTH + 1)
    for args in (("start", "greet", "--id", too_long), ("status", too_long)):
        result = idle_cli.invoke(*args)
        assert result.exit_code == 2
        line = one_line_error(result)
        assert "257 characters long" in line and "limit of 256" in line, line
    assert idle_cli.invoke("start", "greet", "--id", "x" * MAX_INSTANCE_ID_LENGTH).exit_code == 0


# -- C4: make demo removes its temporary folder ---------------------------------------------------


def _demo_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("duratask_demo", ROOT / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point ``tempfile`` at a folder of this test's own, to see what the demo leaves."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder


def test_the_demo_removes_its_temporary_folder(
    private_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _demo_module(monkeypatch).main()
    out = capsys.readouterr().out
    assert "status: COMPLETED" in out and str(private_tmp) in out
    assert list(private_tmp.iterdir()) == []
    # The timeline spells events as everywhere else (C5).
    names = _timeline_names(out.split("history:\n", 1)[1])
    assert {"ExecutionStarted", "TaskScheduled", "EventRaised", "TimerFired"} <= names
    assert names <= set(EVENT_NAMES) and not ENUM_STYLE.search(out)


def test_the_demo_removes_its_temporary_folder_after_an_error(
    private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the approval service is down")

    monkeypatch.setattr(dt.TaskHubClient, "raise_orchestration_event", broken)
    with pytest.raises(RuntimeError, match="approval service is down"):
        _demo_module(monkeypatch).main()
    assert list(private_tmp.iterdir()) == []


def _timeline_names(timeline: str) -> set[str]:
    return {line.split()[1] for line in timeline.strip().splitlines()}


# -- C5: one spelling of event names in the CLI, JSON, the dashboard and the demo ----------------


def double(ctx: dt.ActivityContext, value: int) -> int:
    return value * 2


def fails(ctx: dt.ActivityContext, _: Any) -> None:
    raise ValueError("no")


async def child(ctx: dt.OrchestrationContext, value: int) -> int:
    doubled: int = await ctx.call_activity(double, input=value)
    return doubled


async def every_kind(ctx: dt.OrchestrationContext, _: Any) -> int:
    try:
        await ctx.call_activity(fails)
    except dt.TaskFailedError:
        pass
    await ctx.create_timer(timedelta(milliseconds=10))
    approved = await ctx.wait_for_external_event("go")
    result: int = await ctx.call_sub_orchestrator(
        child, input=approved, instance_id=f"{ctx.instance_id}:child"
    )
    return result


async def _record_every_kind(url: str) -> list[dt.HistoryEvent]:
    hub = TaskHub(url)
    hub.register(every_kind, child, activities=(double, fails))
    await hub.start()
    try:
        iid = await hub.client.schedule_new_orchestration(every_kind, instance_id="kinds")

        async def waiting() -> list[dt.HistoryEvent]:
            while True:
                history = await hub.client.get_orchestration_history(iid)
                if any(isinstance(e, dt.history.TimerFired) for e in history):
                    return history
                await asyncio.sleep(0.01)

        await asyncio.wait_for(waiting(), timeout=20)
        await hub.client.raise_orchestration_event(iid, "go", 21)
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=20)
        assert state.output == 42
        return await hub.client.get_orchestration_history(iid)
    finally:
        await hub.stop()


async def _dashboard_names(url: str) -> tuple[list[str], list[str], list[str]]:
    async with dt.AsyncTaskHubClient(url) as client:
        transport = httpx.ASGITransport(app=create_app(client))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
            page = (await web.get("/instances/kinds")).text
            api = (await web.get("/api/instances/kinds/history")).json()
            status = (await web.get("/api/instances/kinds?showHistory=true")).json()
    rows = re.findall(r'data-type="([^"]+)"', page)
    return rows, [e["type"] for e in api], [e["type"] for e in status["historyEvents"]]


def _table_names(result: Result) -> list[str]:
    names = []
    for line in result.stdout.splitlines():
        found = [word for word in line.split() if word in EVENT_NAMES]
        names.extend(found[:1])
    return names


def test_history_event_names_are_spelled_one_way_everywhere(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    history = asyncio.run(_record_every_kind(url))
    expected = [type(e).__name__ for e in history]
    assert {
        "ExecutionStarted",
        "TaskScheduled",
        "TaskFailed",
        "TimerCreated",
        "TimerFired",
        "EventRaised",
        "SubOrchestrationInstanceCreated",
        "SubOrchestrationInstanceCompleted",
        "ExecutionCompleted",
    } <= set(expected)
    markers = {"OrchestratorStarted", "OrchestratorCompleted"}

    runner = CliRunner(env={"DURATASK_STORE": url, "COLUMNS": "80"})
    table = runner.invoke(main, ["history", "kinds"])
    assert table.exit_code == 0, table.output
    assert _table_names(table) == [name for name in expected if name not in markers]
    assert not ENUM_STYLE.search(table.stdout), table.stdout

    exported = runner.invoke(main, ["history", "kinds", "--output", "json"])
    assert exported.exit_code == 0
    assert [e["type"] for e in json.loads(exported.stdout)] == expected
    # The export still reads back (replay tooling), as do histories exported before.
    assert dt.history.history_from_json(exported.stdout) == history

    page_rows, api_types, status_types = asyncio.run(_dashboard_names(url))
    assert page_rows == api_types == status_types == expected
    assert set(expected) <= set(EVENT_NAMES)


def test_histories_exported_with_the_old_names_still_read() -> None:
    old = (
        '[{"type": "EXECUTION_STARTED", "event_id": -1, "timestamp": "2024-05-01T12:00:00+00:00",'
        ' "name": "x", "version": null, "input": null, "instance_id": "i", "execution_id": "e",'
        ' "parent": null, "scheduled_start_time": null, "tags": null}]'
    )
    (event,) = dt.history.history_from_json(old)
    assert isinstance(event, dt.history.ExecutionStarted)
    assert json.loads(dt.history.history_to_json([event]))[0]["type"] == "ExecutionStarted"
