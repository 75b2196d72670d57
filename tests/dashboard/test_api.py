"""The REST management API: each route, and 4xx JSON errors for every kind of bad request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

import duratask as dt
from duratask.dashboard import create_app
from tests.conformance.e2e_hub import wait_until
from tests.dashboard import workflows
from tests.dashboard.conftest import JSON, Hub

S = dt.OrchestrationStatus
BASE = "http://testserver"


def assert_error(response: httpx.Response, status: int, kind: str, words: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind, body
    assert words in body["error"]["message"], body
    assert "Traceback" not in response.text


async def test_start_then_read_the_status(hub: Hub, web: httpx.AsyncClient) -> None:
    started = await web.post("/api/orchestrations/echo?instance_id=api-1", json={"a": [1, "x"]})
    assert started.status_code == 202
    urls = started.json()
    assert urls["id"] == "api-1"
    assert started.headers["location"] == urls["statusQueryGetUri"] == f"{BASE}/api/instances/api-1"
    assert urls["sendEventPostUri"] == f"{BASE}/api/instances/api-1/raiseEvent/{{eventName}}"
    assert urls["terminatePostUri"] == f"{BASE}/api/instances/api-1/terminate?reason={{text}}"
    assert urls["rewindPostUri"] == f"{BASE}/api/instances/api-1/rewind?reason={{text}}"
    assert urls["purgeHistoryDeleteUri"] == f"{BASE}/api/instances/api-1"
    assert urls["dashboardUri"] == f"{BASE}/instances/api-1"
    await hub.client.wait_for_orchestration_completion("api-1", timeout=20)

    status = await web.get("/api/instances/api-1")
    assert status.status_code == 200
    body = status.json()
    assert body["runtimeStatus"] == "Completed" and body["name"] == "echo"
    assert body["input"] == body["output"] == {"a": [1, "x"]}
    assert body["failureDetails"] is None and "historyEvents" not in body
    assert "input" not in (await web.get("/api/instances/api-1?showInput=false")).json()
    with_history = (await web.get("/api/instances/api-1", params={"showHistory": "true"})).json()
    types = [e["type"] for e in with_history["historyEvents"]]
    assert types[1] == "ExecutionStarted" and "ExecutionCompleted" in types
    history = await web.get("/api/instances/api-1/history")
    assert [e["type"] for e in history.json()] == types


async def test_start_options_and_conflicts(hub: Hub, web: httpx.AsyncClient) -> None:
    later = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    scheduled = await web.post(
        "/api/orchestrations/echo",
        params={
            "instance_id": "later",
            "start_at": later.isoformat(),
            "version": "2",
            "task_queue": "payments",
        },
        headers=JSON,
    )
    assert scheduled.status_code == 202
    status = await web.get("/api/instances/later")
    assert status.status_code == 202 and status.headers["location"].endswith("/api/instances/later")
    body = status.json()
    assert body["runtimeStatus"] == "Pending" and body["input"] is None and body["version"] == "2"
    assert datetime.fromisoformat(body["scheduledStartTime"]) == later
    assert body["taskQueue"] == "payments"
    again = await web.post("/api/orchestrations/echo?instance_id=later", json=1)
    assert_error(again, 409, "already_exists", "'later' already exists")
    bad_id = await web.post("/api/orchestrations/echo", params={"instance_id": "a\tb"}, json=1)
    assert_error(bad_id, 400, "invalid_instance_id", "control character")


async def test_list_filters_and_pages(hub: Hub, web: httpx.AsyncClient) -> None:
    for n in range(3):
        await hub.finish(workflows.echo, n, instance_id=f"list-{n}")
    await hub.finish(workflows.failing, "x", instance_id="other-0")
    parent = await hub.start_instance(workflows.approval, {"amount": 1}, instance_id="parent")
    await hub.client.raise_orchestration_event(parent, "approve", "me")
    await hub.client.wait_for_orchestration_completion(parent, timeout=20)

    async def ids(**params: Any) -> list[str]:
        response = await web.get("/api/instances", params=params)
        assert response.status_code == 200, response.text
        return [s["instanceId"] for s in response.json()]

    assert await ids(runtimeStatus="Failed") == ["other-0"]
    assert await ids(runtimeStatus=["failed", "COMPLETED"], instanceIdPrefix="list-") == [
        "list-0",
        "list-1",
        "list-2",
    ]
    assert await ids(runtimeStatus="Failed,Completed", name="failing") == ["other-0"]
    assert await ids(parentInstanceId="parent") == ["parent:child"]
    list_1 = (await web.get("/api/instances/list-1")).json()
    assert await ids(createdTimeFrom=list_1["createdTime"], instanceIdPrefix="list-") == [
        "list-1",
        "list-2",
    ]
    assert await ids(createdTimeTo=list_1["createdTime"], instanceIdPrefix="list-") == ["list-0"]

    # Paging: the token comes back in a header, and goes in as the header or the query.
    first = await web.get("/api/instances", params={"top": 2})
    token = first.headers["x-ms-continuation-token"]
    second = await web.get(
        "/api/instances", params={"top": 2}, headers={"x-ms-continuation-token": token}
    )
    third_token = second.headers["x-ms-continuation-token"]
    third = await web.get("/api/instances", params={"top": 2, "continuationToken": third_token})
    assert "x-ms-continuation-token" not in third.headers
    seen = [s["instanceId"] for page in (first, second, third) for s in page.json()]
    assert sorted(seen) == sorted(
        ["list-0", "list-1", "list-2", "other-0", "parent", "parent:child"]
    )
    assert len(seen) == len(set(seen))


async def test_counts(hub: Hub, web: httpx.AsyncClient) -> None:
    await hub.finish(workflows.echo, 1, instance_id="c-1")
    await hub.finish(workflows.failing, "no", instance_id="c-2")
    running = await hub.start_instance(workflows.wait_event, instance_id="d-1")
    await hub.client.wait_for_orchestration_start(running)
    counts = (await web.get("/api/counts")).json()
    assert counts == {
        "Pending": 0,
        "Running": 1,
        "Suspended": 0,
        "Completed": 1,
        "Failed": 1,
        "Terminated": 0,
        "ContinuedAsNew": 0,
    }
    only_c = (await web.get("/api/counts", params={"instanceIdPrefix": "c-"})).json()
    assert only_c["Running"] == 0 and only_c["Completed"] == 1
    by_name = (await web.get("/api/counts", params={"name": "wait_event"})).json()
    assert sum(by_name.values()) == 1


async def test_signals(hub: Hub, web: httpx.AsyncClient) -> None:
    iid = await hub.start_instance(workflows.wait_event)
    await hub.client.wait_for_orchestration_start(iid)
    suspended = await web.post(f"/api/instances/{iid}/suspend?reason=later", headers=JSON)
    assert suspended.status_code == 202 and suspended.json() == {"instanceId": iid}
    await hub.wait_status(iid, S.SUSPENDED)
    assert (await web.get(f"/api/instances/{iid}")).json()["runtimeStatus"] == "Suspended"
    assert (await web.post(f"/api/instances/{iid}/resume", headers=JSON)).status_code == 202
    await hub.wait_status(iid, S.RUNNING)
    raised = await web.post(f"/api/instances/{iid}/raiseEvent/go", json={"ok": True})
    assert raised.status_code == 202
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=20)
    assert state.output == {"ok": True}
    late = await web.post(f"/api/instances/{iid}/raiseEvent/go", json=1)
    assert_error(late, 410, "instance_finished", "already finished")
    assert_error(
        await web.post("/api/instances/nobody/raiseEvent/go", json=1), 404, "not_found", "nobody"
    )

    victim = await hub.start_instance(workflows.wait_event)
    terminated = await web.post(f"/api/instances/{victim}/terminate?reason=bye", headers=JSON)
    assert terminated.status_code == 202
    state = await hub.client.wait_for_orchestration_completion(victim, timeout=20)
    assert state.runtime_status is S.TERMINATED and state.output == "bye"
    assert_error(
        await web.post(f"/api/instances/{victim}/suspend", headers=JSON), 410, "instance_finished"
    )


async def test_rewind_restart_and_purge(hub: Hub, web: httpx.AsyncClient) -> None:
    failed = await hub.finish(workflows.flaky_flow, "api-rewind")
    status = await web.get(f"/api/instances/{failed.instance_id}")
    assert status.status_code == 200
    failure = status.json()["failureDetails"]
    assert failure["errorType"] == "TaskFailedError" and "flaky failure" in failure["errorMessage"]
    assert failure["stackTrace"]
    rewound = await web.post(f"/api/instances/{failed.instance_id}/rewind", headers=JSON)
    assert rewound.status_code == 202
    await hub.wait_status(failed.instance_id, S.COMPLETED)
    assert_error(
        await web.post(f"/api/instances/{failed.instance_id}/rewind", headers=JSON),
        409,
        "invalid_operation",
        "only FAILED",
    )

    restarted = await web.post(
        f"/api/instances/{failed.instance_id}/restart?newInstanceId=true", headers=JSON
    )
    assert restarted.status_code == 202
    new_id = restarted.json()["id"]
    assert new_id != failed.instance_id
    assert restarted.headers["location"].endswith(f"/api/instances/{new_id}")
    state = await hub.client.wait_for_orchestration_completion(new_id, timeout=20)
    assert state.output == "recovered api-rewind"

    live = await hub.start_instance(workflows.wait_event)
    await hub.client.wait_for_orchestration_start(live)
    assert_error(
        await web.post(f"/api/instances/{live}/restart", headers=JSON), 409, "invalid_operation"
    )
    assert_error(await web.delete(f"/api/instances/{live}", headers=JSON), 409, "invalid_operation")
    purged = await web.delete(f"/api/instances/{new_id}", headers=JSON)
    assert purged.status_code == 200 and purged.json() == {"instancesDeleted": 1}
    assert_error(await web.get(f"/api/instances/{new_id}"), 404, "not_found")
    assert_error(await web.delete(f"/api/instances/{new_id}", headers=JSON), 404, "not_found")


async def test_bulk_purge(hub: Hub, web: httpx.AsyncClient) -> None:
    for n in range(3):
        await hub.finish(workflows.echo, n)
    await hub.finish(workflows.failing, "x")
    live = await hub.start_instance(workflows.wait_event)
    assert_error(
        await web.delete("/api/instances", headers=JSON), 400, "bad_request", "at least one filter"
    )
    assert_error(
        await web.delete("/api/instances?runtimeStatus=Running", headers=JSON),
        400,
        "bad_request",
        "only finished instances can be purged",
    )
    purged = await web.delete(
        "/api/instances",
        params={"runtimeStatus": "Completed", "createdTimeTo": datetime.now(UTC).isoformat()},
        headers=JSON,
    )
    assert purged.json() == {"instancesDeleted": 3}
    rest = [s["instanceId"] for s in (await web.get("/api/instances")).json()]
    assert len(rest) == 2 and live in rest


async def test_bad_requests_get_json_errors(hub: Hub, web: httpx.AsyncClient) -> None:
    iid = await hub.start_instance(workflows.wait_event)
    cases: list[tuple[httpx.Response, int, str, str]] = [
        (
            await web.post("/api/orchestrations/echo", content=b"{nope", headers=JSON),
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (
            await web.post("/api/orchestrations/echo", content=b"[NaN]", headers=JSON),
            400,
            "invalid_json",
            "NaN",
        ),
        (
            await web.post("/api/orchestrations/echo", content=b"[" * 100_000, headers=JSON),
            400,
            "invalid_json",
            "",
        ),
        (
            await web.post("/api/orchestrations/echo", content=b"\xff\xfe", headers=JSON),
            400,
            "bad_request",
            "UTF-8",
        ),
        (
            await web.get("/api/instances?createdTimeFrom=last-tuesday"),
            400,
            "bad_request",
            "'createdTimeFrom'",
        ),
        (
            await web.get("/api/instances?runtimeStatus=Sleeping"),
            400,
            "bad_request",
            "unknown status 'Sleeping'",
        ),
        (await web.get("/api/instances?top=0"), 400, "bad_request", "between 1 and 1000"),
        (await web.get("/api/instances?top=many"), 400, "bad_request", "expected an integer"),
        (await web.get("/api/instances?top=1&top=2"), 400, "bad_request", "given 2 times"),
        (
            await web.get("/api/instances?continuationToken=garbage"),
            400,
            "bad_request",
            "continuation token",
        ),
        (
            await web.get(f"/api/instances/{iid}?showHistory=perhaps"),
            400,
            "bad_request",
            "expected true or false",
        ),
        (await web.get("/api/instances/missing"), 404, "not_found", "'missing'"),
        (await web.get("/api/instances/missing/history"), 404, "not_found", "'missing'"),
        (await web.post(f"/api/instances/{iid}/terminate"), 415, "unsupported_media_type", ""),
        (
            await web.post(
                f"/api/instances/{iid}/terminate", headers={"Content-Type": "text/plain"}
            ),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (await web.get("/api/no/such/route"), 404, "not_found", ""),
        (await web.put(f"/api/instances/{iid}", headers=JSON), 405, "method_not_allowed", ""),
        (await web.post("/api/instances/", headers=JSON), 405, "method_not_allowed", ""),
        (await web.get("/api/instances/"), 400, "bad_request", "must not be empty"),
    ]
    for response, status, kind, words in cases:
        assert_error(response, status, kind, words)
    assert await hub.status(iid) in (S.PENDING, S.RUNNING)


async def test_oversized_requests_are_refused(hub: Hub) -> None:
    small = hub.web(max_body_bytes=1000)
    big = {"blob": "x" * 2000}
    assert_error(
        await small.post("/api/orchestrations/echo", json=big), 413, "payload_too_large", "1000"
    )

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"blob": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'"}'

    streamed = await small.post("/api/orchestrations/echo", content=chunks(), headers=JSON)
    assert_error(streamed, 413, "payload_too_large")
    assert (await small.get("/api/counts")).json()["Pending"] == 0

    # A payload within the body limit but over the client's payload limit.
    client = dt.AsyncTaskHubClient(hub.url, max_payload_bytes=100)
    app = create_app(client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as web:
        response = await web.post("/api/orchestrations/echo", json={"blob": "z" * 500})
        assert_error(response, 413, "payload_too_large", "over the limit of 100 bytes")
        event = await web.post("/api/instances/x/raiseEvent/e", json={"blob": "z" * 500})
        assert event.status_code in (404, 413)
    await client.close()


async def test_waiting_for_an_api_started_instance(hub: Hub, web: httpx.AsyncClient) -> None:
    started = await web.post("/api/orchestrations/wait_event", headers=JSON)
    status_url = started.headers["location"]

    async def running() -> bool:
        response = await web.get(status_url)
        return response.status_code == 202 and response.json()["runtimeStatus"] == "Running"

    await wait_until(running, what="the instance to run")
    send = started.json()["sendEventPostUri"].replace("{eventName}", "go")
    assert (await web.post(send, json="done")).status_code == 202

    async def finished() -> bool:
        return (await web.get(status_url)).status_code == 200

    await wait_until(finished, what="the instance to finish")
    assert (await web.get(status_url)).json()["output"] == "done"
