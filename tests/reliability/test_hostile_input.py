"""Hostile input at every door: the client API, the CLI, the REST API and the pages.

Text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``), times out of range,
JSON nested 100 000 levels deep and paths with a NUL byte are refused where they come in:
a typed error naming the field (client), exit code 2 with one line (CLI), 400 or 404 with a
JSON error (REST API). Text of that kind that is stored anyway (an exception message, or
data from before the check) never breaks a reader: it is written with U+FFFD instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

import duratask as dt
from duratask.backends import open_store
from duratask.backends.base import OrchestrationMessage
from duratask.cli.main import main
from duratask.dashboard import create_app
from duratask.errors import InvalidTextError
from duratask.history import ExecutionStarted
from tests.conformance.e2e_hub import TaskHub

from .figures import count

pytestmark = pytest.mark.timeout(90)
LONE = "\ud800"
REPLACEMENT = "\ufffd"
JSON_HEADERS = {"Content-Type": "application/json"}
DEEP = "[" * 100_000 + "]" * 100_000
OUT_OF_RANGE_TIMES = ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00")


# -- orchestrations and activities ---------------------------------------------------------------


async def waits(ctx: dt.OrchestrationContext, _: Any) -> Any:
    return await ctx.wait_for_external_event("go")


def returns_lone_surrogate(ctx: dt.ActivityContext, _: Any) -> str:
    return f"scraped {LONE} text"


async def misbehaves(ctx: dt.OrchestrationContext, _: Any) -> dict[str, str]:
    """Sets a custom status and gets an activity result that both hold a lone surrogate."""
    seen: dict[str, str] = {}
    try:
        ctx.set_custom_status({"note": LONE})
    except InvalidTextError as exc:
        seen["custom status"] = str(exc)
    try:
        await ctx.call_activity(returns_lone_surrogate)
    except dt.TaskFailedError as exc:
        seen["activity"] = f"{exc.details.error_type}: {exc.details.message}"
    return seen


async def raises_lone_surrogate(ctx: dt.OrchestrationContext, _: Any) -> None:
    raise ValueError(f"bad {LONE} text")


def _hub(url: str) -> TaskHub:
    hub = TaskHub(url)
    hub.register(waits, misbehaves, raises_lone_surrogate, activities=(returns_lone_surrogate,))
    return hub


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[TaskHub]:
    """A hub with a worker, on each store (memory, SQLite, PostgreSQL)."""
    task_hub = _hub(store_url)
    await task_hub.start()
    try:
        yield task_hub
    finally:
        await task_hub.stop()


def _cli(url: str, *args: str) -> Result:
    return CliRunner(env={"DURATASK_STORE": url, "COLUMNS": "200"}).invoke(main, list(args))


def _one_line_usage_error(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def _web(client: dt.AsyncTaskHubClient) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(client), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8233")


def _token(created_at: str, instance_id: str = "x") -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, instance_id]).encode()).decode()


# -- A1: lone surrogates are refused at the door -------------------------------------------------


async def test_the_client_refuses_lone_surrogates_naming_the_field(hub: TaskHub) -> None:
    client = hub.client
    target = await client.schedule_new_orchestration(waits, instance_id="target")
    await client.wait_for_orchestration_start(target, timeout=20)
    calls: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        "input of orchestration 'waits'": lambda: client.schedule_new_orchestration(
            waits, input={"name": LONE}, instance_id="other"
        ),
        "input of orchestration 'waits' ": lambda: client.schedule_new_orchestration(
            waits, input={LONE: "a key"}, instance_id="other"
        ),
        "data of event 'go'": lambda: client.raise_orchestration_event(target, "go", ["x", LONE]),
        "event name": lambda: client.raise_orchestration_event(target, f"go{LONE}"),
        "output of terminated orchestration": lambda: client.terminate_orchestration(
            target, output=LONE
        ),
        "reason of the suspension": lambda: client.suspend_orchestration(target, LONE),
        "reason of the resumption": lambda: client.resume_orchestration(target, LONE),
        "reason of the rewind": lambda: client.rewind_orchestration(target, LONE),
        "version of orchestration 'waits'": lambda: client.schedule_new_orchestration(
            waits, version=LONE, instance_id="other"
        ),
        "tag 'team'": lambda: client.schedule_new_orchestration(
            waits, tags={"team": LONE}, instance_id="other"
        ),
    }
    for what, call in calls.items():
        with pytest.raises(InvalidTextError, match=re.escape(what.strip())) as caught:
            await call()
        count("hostile inputs refused")
        assert isinstance(caught.value, ValueError)  # and a SerializationError
        assert "lone surrogate" in str(caught.value) and "UTF-8" in str(caught.value)
    with pytest.raises(dt.InvalidInstanceIdError, match="lone surrogate"):
        await client.schedule_new_orchestration(waits, instance_id=f"id-{LONE}")

    # Nothing was stored or sent: the target still waits for its event, and gets the good one.
    page = await client.query_orchestrations()
    assert [s.instance_id for s in page.states] == ["target"]
    await client.raise_orchestration_event(target, "go", "fine")
    state = await client.wait_for_orchestration_completion(target, timeout=20)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert state.output == "fine"


async def test_orchestrations_and_activities_cannot_store_lone_surrogates(hub: TaskHub) -> None:
    state = await hub.run(misbehaves)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert "custom status is not valid Unicode text" in state.output["custom status"]
    assert state.output["activity"].startswith("InvalidTextError: result of activity")
    assert state.serialized_custom_status is None


def test_the_cli_refuses_lone_surrogates_with_exit_code_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    assert _cli(url, "start", "waits", "--id", "target").exit_code == 0
    # A shell passes bytes that are not UTF-8 to Python as lone surrogates (\udcff).
    cases = {
        ("start", "waits", "--input", '"\\ud800"'): "input of orchestration 'waits'",
        ("start", "waits", "--input", '{"\\udfff": 1}'): "input of orchestration 'waits'",
        ("raise-event", "target", "go", "--data", '["\\udc80"]'): "data of event 'go'",
        ("suspend", "target", "--reason", "bad \udcff byte"): "reason of the suspension",
        ("terminate", "target", "--reason", "bad \udcff"): "output of terminated",
        ("start", "waits", "--id", "id-\udcff"): "instance id",
    }
    for args, what in cases.items():
        line = _one_line_usage_error(_cli(url, *args))
        count("hostile inputs refused")
        assert what in line and "lone surrogate" in line, line
    listing = json.loads(_cli(url, "list", "-o", "json").stdout)
    assert [i["instance_id"] for i in listing["instances"]] == ["target"]
    assert listing["instances"][0]["runtime_status"] == "PENDING"


async def test_the_rest_api_and_pages_refuse_lone_surrogates_with_400(hub: TaskHub) -> None:
    target = await hub.client.schedule_new_orchestration(waits, instance_id="target")
    async with _web(hub.client) as web:
        started = await web.post(
            "/api/orchestrations/waits", content=b'{"name": "\\ud800"}', headers=JSON_HEADERS
        )
        assert started.status_code == 400, started.text
        assert started.json()["error"]["type"] == "invalid_text"
        assert "input of orchestration 'waits'" in started.json()["error"]["message"]
        raised = await web.post(
            f"/api/instances/{target}/raiseEvent/go", content=b'"\\udfff"', headers=JSON_HEADERS
        )
        assert raised.status_code == 400, raised.text
        assert "data of event 'go'" in raised.json()["error"]["message"]

        page = await web.get(f"/instances/{target}/actions/raise-event")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        form = await web.post(
            f"/instances/{target}/actions/raise-event",
            data={"csrf_token": token.group(1), "event_name": "go", "event_data": '"\\ud800"'},
        )
        assert form.status_code == 400 and "lone surrogate" in form.text
        count("hostile inputs refused", 3)
    assert [s.instance_id for s in (await hub.client.query_orchestrations()).states] == [target]


# -- A1: what is stored anyway never breaks a reader --------------------------------------------


async def _store_hostile_instances(url: str) -> list[str]:
    """A FAILED instance whose exception message holds a lone surrogate (what any worker
    records), and one stored with such an input bypassing the client (as before the check)."""
    hub = _hub(url)
    await hub.start()
    try:
        failed = await hub.run(raises_lone_surrogate, instance_id="failed-one")
        assert failed.failure_details is not None and LONE in failed.failure_details.message
    finally:
        await hub.stop()
    store = open_store(url)
    await store.open()
    try:
        start = ExecutionStarted(
            timestamp=datetime.now(UTC),
            name="waits",
            input='{"name": "\\ud800"}',
            instance_id="stored-one",
            execution_id="e-1",
        )
        await store.create_instance(OrchestrationMessage("stored-one", start), frozenset())
    finally:
        await store.close()
    return ["failed-one", "stored-one"]


def test_the_cli_reads_stored_lone_surrogates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    ids = asyncio.run(_store_hostile_instances(url))

    def ok(*args: str) -> str:
        result = _cli(url, *args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    listing = ok("list", "-o", "json")
    assert sorted(i["instance_id"] for i in listing_instances(listing)) == ids
    assert REPLACEMENT in listing
    assert "stored-one" in ok("list")
    for iid in ids:
        assert REPLACEMENT in ok("status", iid) + ok("status", iid, "-o", "json")
    assert REPLACEMENT in ok("history", "failed-one")
    assert "ExecutionCompleted" in ok("history", "failed-one")
    json.loads(ok("history", "failed-one", "-o", "json"))  # the export stays exact (escaped)
    count("stored hostile text read", 8)


def listing_instances(text: str) -> list[dict[str, Any]]:
    instances: list[dict[str, Any]] = json.loads(text)["instances"]
    return instances


async def test_the_dashboard_reads_stored_lone_surrogates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    ids = await _store_hostile_instances(url)
    async with dt.AsyncTaskHubClient(url) as client, _web(client) as web:
        pages = ["/instances", "/api/instances", "/api/counts"]
        for iid in ids:
            pages += [f"/instances/{iid}", f"/api/instances/{iid}", f"/api/instances/{iid}/history"]
        for path in pages:
            response = await web.get(path)
            assert response.status_code in (200, 202), (path, response.status_code, response.text)
            response.content.decode("utf-8")  # valid UTF-8, whatever the hub holds
            count("stored hostile text read")
        assert REPLACEMENT in (await web.get("/instances/failed-one")).text
        assert REPLACEMENT in (await web.get("/api/instances/stored-one")).json()["input"]["name"]
        listed = (await web.get("/api/instances")).json()
        assert sorted(i["instanceId"] for i in listed) == ids


async def test_an_instance_id_with_a_lone_surrogate_does_not_break_list_pages() -> None:
    # Only the memory store could ever hold such an id (SQL stores refuse to encode it).
    url = f"memory://hostile-{id(object())}"
    store = open_store(url)
    await store.open()
    bad_id = f"id-{LONE}"
    start = ExecutionStarted(
        timestamp=datetime.now(UTC), name="waits", instance_id=bad_id, execution_id="e"
    )
    await store.create_instance(OrchestrationMessage(bad_id, start), frozenset())
    async with dt.AsyncTaskHubClient(store) as client, _web(client) as web:
        for path in ("/instances", "/api/instances", "/instances?prefix=id-"):
            response = await web.get(path)
            assert response.status_code == 200, (path, response.text)
            assert "id-" + REPLACEMENT in response.content.decode("utf-8")
    await store.close()


# -- A2: a continuation token with a time out of range -------------------------------------------


async def test_a_continuation_token_out_of_range_is_a_400(hub: TaskHub) -> None:
    await hub.client.schedule_new_orchestration(waits)
    async with _web(hub.client) as web:
        for created in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            token = _token(created)
            api = await web.get("/api/instances", params={"continuationToken": token})
            assert api.status_code == 400, api.text
            assert api.json()["error"]["type"] == "bad_request"
            assert "continuation token" in api.json()["error"]["message"]
            assert "out of range" in api.json()["error"]["message"]
            header = await web.get("/api/instances", headers={"x-ms-continuation-token": token})
            assert header.status_code == 400
            page = await web.get("/instances", params={"token": token})
            assert page.status_code == 400 and "out of range" in page.text
            with pytest.raises(ValueError, match="continuation token"):
                await hub.client.query_orchestrations(continuation_token=token)
            count("hostile inputs refused", 4)


# -- A3: JSON nested 100 000 levels deep ---------------------------------------------------------


def test_json_nested_too_deeply_is_exit_code_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    assert _cli(url, "start", "waits", "--id", "target").exit_code == 0
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    for args in (
        ("start", "waits", "--input", DEEP),
        ("start", "waits", "--input", f"@{deep}"),
        ("raise-event", "target", "go", "--data", DEEP),
    ):
        line = _one_line_usage_error(_cli(url, *args))
        assert "nested too deeply" in line, line
        count("hostile inputs refused")


async def test_json_nested_too_deeply_is_a_400(hub: TaskHub) -> None:
    target = await hub.client.schedule_new_orchestration(waits)
    async with _web(hub.client) as web:
        for path in ("/api/orchestrations/waits", f"/api/instances/{target}/raiseEvent/go"):
            response = await web.post(path, content=DEEP.encode(), headers=JSON_HEADERS)
            assert response.status_code == 400, response.text
            assert "nested too deeply" in response.json()["error"]["message"]
            count("hostile inputs refused")


# -- A4: times out of range ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("start", "waits", "--start-at", "9999-12-31T23:59:59-14:00"),
        ("start", "waits", "--start-at", "+99999999w"),
        ("list", "--since", "9999-12-31T23:59:59-14:00"),
        ("list", "--since", "+99999999w"),
        ("list", "--until", "-99999999w"),
        ("list", "--until", "0001-01-01T00:00:00+14:00"),
        ("purge", "--completed-before", "9999-12-31T23:59:59-14:00", "--yes"),
        ("purge", "--completed-before", "+99999999w", "--yes"),
    ],
)
def test_times_out_of_range_are_exit_code_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    assert _cli(url, "hub", "create").exit_code == 0
    line = _one_line_usage_error(_cli(url, *args))
    option = args[-3] if args[-1] == "--yes" else args[-2]
    assert f"{option}: the time" in line, line
    assert "out of range" in line
    count("hostile inputs refused")


async def test_times_out_of_range_are_a_400(hub: TaskHub) -> None:
    async with _web(hub.client) as web:
        for when in OUT_OF_RANGE_TIMES:
            requests = [
                ("POST", "/api/orchestrations/waits", {"start_at": when}),
                ("GET", "/api/instances", {"createdTimeFrom": when}),
                ("GET", "/api/instances", {"createdTimeTo": when}),
                ("GET", "/api/counts", {"createdTimeFrom": when}),
                ("DELETE", "/api/instances", {"completedTimeTo": when}),
                ("DELETE", "/api/instances", {"createdTimeTo": when}),
            ]
            for method, path, params in requests:
                response = await web.request(method, path, params=params, headers=JSON_HEADERS)
                assert response.status_code == 400, (method, path, response.text)
                message = response.json()["error"]["message"]
                assert f"'{next(iter(params))}'" in message and "out of range" in message
                count("hostile inputs refused")
            page = await web.get("/instances", params={"from": when})
            assert page.status_code == 400 and "out of range" in page.text
    # The client API says ValueError, naming the argument, not OverflowError.
    far_east = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    with pytest.raises(ValueError, match=r"created_from .* out of range"):
        await hub.client.query_orchestrations(created_from=far_east)
    with pytest.raises(ValueError, match=r"start_at .* out of range"):
        await hub.client.schedule_new_orchestration(waits, start_at=far_east)


# -- A5: a NUL byte (or worse) in a static file's path -------------------------------------------


async def test_static_paths_naming_no_file_are_404() -> None:
    async with dt.AsyncTaskHubClient(f"memory://static-{id(object())}") as client:
        async with _web(client) as web:
            assert (await web.get("/static/dashboard.css")).status_code == 200
            for path in (
                "/static/x.css%00.png",
                "/static/dashboard.css%00",
                "/static/%00",
                "/static/" + "a" * 5000 + ".css",
                "/static/..%2F..%2Fpyproject.toml",
                "/static/../app.py",
            ):
                response = await web.get(path)
                assert response.status_code == 404, (path, response.status_code)
                count("hostile inputs refused")
