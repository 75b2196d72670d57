"""The management API's schedule routes: list, describe, pause, resume, trigger, delete."""

from __future__ import annotations

import httpx

import duratask as dt
from tests.dashboard.conftest import JSON, Hub
from tests.dashboard.test_api import assert_error

HOURLY = dt.ScheduleSpec(cron="0 * * * *", time_zone="Europe/Paris")


async def test_list_and_describe(hub: Hub, web: httpx.AsyncClient) -> None:
    await hub.client.create_schedule("report", "echo", HOURLY, input={"a": 1}, run_limit=4)
    await hub.client.create_schedule("sync", "echo", dt.ScheduleSpec(cron="*/5 * * * *"))
    listed = await web.get("/api/schedules")
    assert listed.status_code == 200
    assert [s["scheduleId"] for s in listed.json()] == ["report", "sync"]
    only = await web.get("/api/schedules", params={"scheduleIdPrefix": "sy"})
    assert [s["scheduleId"] for s in only.json()] == ["sync"]
    described = await web.get("/api/schedules/report", params={"nextFireTimes": 2})
    body = described.json()
    assert body["input"] == {"a": 1} and body["timeZone"] == "Europe/Paris"
    assert body["runLimit"] == 4 and body["overlap"] == "skip" and not body["paused"]
    assert len(body["nextFireTimes"]) == 2 and body["recentRuns"] == []
    assert_error(await web.get("/api/schedules/nope"), 404, "not_found", "no schedule 'nope'")


async def test_actions(hub: Hub, web: httpx.AsyncClient) -> None:
    await hub.client.create_schedule("report", "echo", HOURLY, input="x")
    paused = await web.post("/api/schedules/report/pause", params={"note": "upgrade"}, headers=JSON)
    assert paused.status_code == 200 and paused.json()["paused"]
    assert paused.json()["note"] == "upgrade" and paused.json()["nextFireTime"] is None
    resumed = await web.post("/api/schedules/report/resume", headers=JSON)
    assert not resumed.json()["paused"] and resumed.json()["nextFireTime"] is not None
    triggered = await web.post("/api/schedules/report/trigger", headers=JSON)
    assert triggered.status_code == 202
    run = triggered.json()["instanceId"]
    assert run.startswith("report@") and run.endswith("-manual")
    state = await hub.client.wait_for_orchestration_completion(run, timeout=20)
    assert state.output == "x"
    described = (await web.get("/api/schedules/report")).json()
    assert described["recentRuns"][0]["runtimeStatus"] == "COMPLETED"
    deleted = await web.delete("/api/schedules/report", headers=JSON)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": True}
    assert_error(await web.delete("/api/schedules/report", headers=JSON), 404, "not_found")
    assert_error(await web.post("/api/schedules/a@b/trigger", headers=JSON), 400, "bad_request")
