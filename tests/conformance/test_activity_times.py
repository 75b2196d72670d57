"""Every view tells how long an activity took, on every store: a 1 s activity shows about
1 s in `duratask history` (table and JSON), the client's history, the REST API's history
and the dashboard's timeline. Results and failures are stamped when the activity came
back, not when it started."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import duratask as dt
from duratask import history as h
from duratask.cli.main import main
from duratask.dashboard import create_app

from .e2e_hub import TaskHub

pytestmark = pytest.mark.timeout(60)

WORK = 1.0  # seconds each activity takes
AT_LEAST = timedelta(seconds=WORK * 0.95)
AT_MOST = timedelta(seconds=WORK + 4)  # generous: a loaded machine delays the worker


def slow(ctx: dt.ActivityContext, value: str) -> str:
    time.sleep(WORK)  # the activity's own work
    return value


async def slow_async(ctx: dt.ActivityContext, value: str) -> str:
    await asyncio.sleep(WORK)
    return value


def slow_failure(ctx: dt.ActivityContext, value: str) -> None:
    time.sleep(WORK)
    raise ValueError(value)


async def three_slow_steps(ctx: dt.OrchestrationContext, _: None) -> list[str]:
    # Scheduled together, so they run side by side: the test takes about WORK seconds.
    first = ctx.call_activity(slow, input="sync")
    second = ctx.call_activity(slow_async, input="async")
    third = ctx.call_activity(slow_failure, input="failed late")
    done = [await first, await second]
    try:
        await third
    except dt.TaskFailedError:
        done.append("failed")
    return done


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[TaskHub]:
    hub = TaskHub(store_url)
    hub.register(three_slow_steps, activities=(slow, slow_async, slow_failure))
    await hub.start()
    yield hub
    await hub.stop()


def _about_the_work(took: timedelta, what: str) -> None:
    assert AT_LEAST <= took <= AT_MOST, f"{what} took {took}, expected about {WORK} s"


def _seconds(text: str) -> timedelta:
    """A duration as the CLI and the dashboard print it: 850 ms, 1.0 s, 1.02 s."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?) (ms|s)", text.strip())
    assert match is not None, f"not a short duration: {text!r}"
    value = float(match.group(1))
    return timedelta(seconds=value / 1000 if match.group(2) == "ms" else value)


def _task_durations(events: list[dict[str, Any]]) -> dict[str, timedelta]:
    """Scheduled-to-result time of each activity, from exported events."""
    scheduled = {
        e["event_id"]: (e["name"], datetime.fromisoformat(e["timestamp"]))
        for e in events
        if e["type"] == "TaskScheduled"
    }
    took = {}
    for e in events:
        if e["type"] in ("TaskCompleted", "TaskFailed"):
            name, at = scheduled[e["task_scheduled_id"]]
            took[name] = datetime.fromisoformat(e["timestamp"]) - at
    return took


async def test_a_one_second_activity_takes_about_a_second_in_every_view(hub: TaskHub) -> None:
    state = await hub.run(three_slow_steps)
    assert state.output == ["sync", "async", "failed"], state.failure_details
    iid = state.instance_id
    names = {"slow", "slow_async", "slow_failure"}

    # The client's history.
    events = await hub.client.get_orchestration_history(iid)
    exported = [h.event_export_dict(e) for e in events]
    for name, took in _task_durations(exported).items():
        _about_the_work(took, f"client history: {name}")
    assert set(_task_durations(exported)) == names

    # `duratask history`: the JSON export and the table's Duration column.
    runner = CliRunner(env={"DURATASK_STORE": hub.url, "COLUMNS": "200"})
    as_json = await asyncio.to_thread(runner.invoke, main, ["history", iid, "--output", "json"])
    assert as_json.exit_code == 0, as_json.output
    cli_took = _task_durations(json.loads(as_json.stdout))
    assert set(cli_took) == names
    for name, took in cli_took.items():
        _about_the_work(took, f"history --output json: {name}")
    table = await asyncio.to_thread(runner.invoke, main, ["history", iid])
    assert table.exit_code == 0, table.output
    result_rows = [
        line
        for line in table.stdout.splitlines()
        if "TaskCompleted" in line or "TaskFailed" in line
    ]
    assert len(result_rows) == 3, table.stdout
    for line in result_rows:
        duration = re.search(r"(\d+(?:\.\d+)? m?s)\s*$", line)
        assert duration is not None, line
        _about_the_work(_seconds(duration.group(1)), f"history table: {line.strip()}")

    # The REST API's history and the dashboard's timeline.
    transport = httpx.ASGITransport(app=create_app(hub.client))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
        api = (await web.get(f"/api/instances/{iid}?showHistory=true")).json()
        api_took = _task_durations(api["historyEvents"])
        assert set(api_took) == names
        for name, took in api_took.items():
            _about_the_work(took, f"REST API history: {name}")
        page = (await web.get(f"/instances/{iid}")).text
    bars = re.findall(
        r'<g class="bar kind-activity[^"]*"[^>]*>.*?<text class="bar-duration"[^>]*>([^<]+)</text>',
        page,
        re.S,
    )
    assert len(bars) == 3, page
    for shown in bars:
        _about_the_work(_seconds(shown), f"dashboard timeline bar ({shown})")
