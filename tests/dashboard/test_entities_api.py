"""The REST API's entity routes: signal, get, list with paging, clean."""

from __future__ import annotations

import httpx

from tests.conformance.e2e_hub import wait_until
from tests.dashboard.conftest import JSON, Hub
from tests.dashboard.test_api import assert_error


async def test_signal_get_list_and_clean(hub: Hub, web: httpx.AsyncClient) -> None:
    for key, amount in (("a", 2), ("b", 3), ("c", 4)):
        sent = await web.post(f"/api/entities/@counter@{key}", params={"op": "add"}, json=amount)
        assert sent.status_code == 202, sent.text
        assert sent.json() == {"entityId": f"@counter@{key}"}

    async def counted() -> bool:
        found = await web.get("/api/entities/@counter@c")
        return found.status_code == 200 and found.json()["state"] == 4

    await wait_until(counted, 20, "the signals to be processed")
    one = (await web.get("/api/entities/@counter@a")).json()
    assert (one["entityId"], one["name"], one["key"], one["state"]) == (
        "@counter@a",
        "counter",
        "a",
        2,
    )
    assert one["lockedBy"] is None and one["backlog"] == 0 and one["lastModifiedTime"]

    first = await web.get("/api/entities", params={"name": "counter", "top": 2})
    assert [e["entityId"] for e in first.json()] == ["@counter@a", "@counter@b"]
    token = first.headers["x-ms-continuation-token"]
    rest = await web.get(
        "/api/entities",
        params={"top": 2, "includeState": "false"},
        headers={"x-ms-continuation-token": token},
    )
    assert [(e["entityId"], e["state"]) for e in rest.json()] == [("@counter@c", None)]
    assert "x-ms-continuation-token" not in rest.headers

    cleaned = await web.post("/api/entities/clean", headers=JSON)
    assert cleaned.json() == {"emptyEntitiesRemoved": 0, "orphanedLocksReleased": 0}


async def test_entity_errors(web: httpx.AsyncClient) -> None:
    assert_error(await web.get("/api/entities/@counter@none"), 404, "not_found", "no entity")
    assert_error(
        await web.post("/api/entities/counter", params={"op": "add"}, headers=JSON),
        400,
        "bad_request",
        "@name@key",
    )
    assert_error(await web.post("/api/entities/@counter@a", headers=JSON), 400, "bad_request", "op")
