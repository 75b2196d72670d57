"""The management API's schedule routes: create, update, list, describe, pause, resume,
trigger, delete; schedules shown as the CLI shows them."""

from __future__ import annotations

from datetime import timedelta

import httpx

import duratask as dt
from duratask._schedules_json import info_to_json
from tests.dashboard.conftest import JSON, Hub
from tests.dashboard.test_api import assert_error

HOURLY = dt.ScheduleSpec(cron="0 * * * *", time_zone="Europe/Paris")


async def test_list_and_describe(hub: Hub, web: httpx.AsyncClient) -> None:
    await hub.client.create_schedule("report", "echo", HOURLY, input={"a": 1}, run_limit=4)
    await hub.client.create_schedule("sync", "echo", dt.ScheduleSpec(cron="*/5 * * * *"))
    listed = await web.get("/api/schedules")
    assert listed.status_code == 200
    assert [s["schedule_id"] for s in listed.json()] == ["report", "sync"]
    only = await web.get("/api/schedules", params={"scheduleIdPrefix": "sy"})
    assert [s["schedule_id"] for s in only.json()] == ["sync"]
    described = await web.get("/api/schedules/report", params={"nextFireTimes": 2})
    body = described.json()
    assert body["input"] == {"a": 1} and body["spec"]["time_zone"] == "Europe/Paris"
    assert body["run_limit"] == 4 and body["overlap"] == "skip" and not body["paused"]
    assert len(body["next_fire_times"]) == 2 and body["recent_runs"] == []
    assert_error(await web.get("/api/schedules/nope"), 404, "not_found", "no schedule 'nope'")


async def test_actions(hub: Hub, web: httpx.AsyncClient) -> None:
    await hub.client.create_schedule("report", "echo", HOURLY, input="x")
    paused = await web.post("/api/schedules/report/pause", params={"note": "upgrade"}, headers=JSON)
    assert paused.status_code == 200 and paused.json()["paused"]
    assert paused.json()["note"] == "upgrade" and paused.json()["next_fire_at"] is None
    resumed = await web.post("/api/schedules/report/resume", headers=JSON)
    assert not resumed.json()["paused"] and resumed.json()["next_fire_at"] is not None
    triggered = await web.post("/api/schedules/report/trigger", headers=JSON)
    assert triggered.status_code == 202
    run = triggered.json()["instanceId"]
    assert run.startswith("report@") and run.endswith("-manual")
    state = await hub.client.wait_for_orchestration_completion(run, timeout=20)
    assert state.output == "x"
    described = (await web.get("/api/schedules/report")).json()
    assert described["recent_runs"][0]["status"] == "COMPLETED"
    deleted = await web.delete("/api/schedules/report", headers=JSON)
    assert deleted.status_code == 200 and deleted.json() == {"deleted": True}
    assert_error(await web.delete("/api/schedules/report", headers=JSON), 404, "not_found")
    assert_error(
        await web.post("/api/schedules/a@b/trigger", headers=JSON), 400, "invalid_schedule", "'@'"
    )


async def test_a_schedule_whose_slots_run_past_year_9999_describes_the_ones_that_exist(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    century = dt.ScheduleSpec(intervals=[dt.Interval(timedelta(days=36_600))])
    await hub.client.create_schedule("rare", "echo", century)
    described = await web.get("/api/schedules/rare", params={"nextFireTimes": 99})
    assert described.status_code == 200
    times = described.json()["next_fire_times"]
    assert 0 < len(times) < 99 and times[-1].startswith("99")


DAILY = {"orchestration": "echo", "spec": {"cron": ["0 6 * * *"], "time_zone": "Europe/Paris"}}


async def test_create_and_update_over_rest(hub: Hub, web: httpx.AsyncClient) -> None:
    body = {
        **DAILY,
        "input": {"report": "sales"},
        "overlap": "buffer_one",
        "catch_up": "latest",
        "catch_up_window_s": 3600,
        "run_limit": 30,
        "note": "made over REST",
    }
    created = await web.post("/api/schedules/daily", json=body)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown["schedule_id"] == "daily" and shown["input"] == {"report": "sales"}
    assert shown["spec"]["cron"] == ["0 6 * * *"] and shown["spec"]["time_zone"] == "Europe/Paris"
    assert (shown["overlap"], shown["catch_up"], shown["catch_up_window_s"]) == (
        "buffer_one",
        "latest",
        3600.0,
    )
    assert shown["run_limit"] == 30 and shown["next_fire_at"] is not None
    info = (await hub.client.list_schedules())[0]
    assert info.overlap is dt.Overlap.BUFFER_ONE and info.catch_up_window == timedelta(hours=1)
    # What the API shows is what the CLI prints.
    assert (await web.get("/api/schedules")).json() == [info_to_json(info)]

    every = {"spec": {"intervals": [{"every_s": 900, "offset_s": 60}]}, "run_limit": None}
    changed = await web.patch("/api/schedules/daily", json=every)
    assert changed.status_code == 200, changed.text
    now = changed.json()
    assert now["spec"]["intervals"] == [{"every_s": 900.0, "offset_s": 60.0}]
    assert now["spec"]["cron"] == [] and now["run_limit"] is None
    assert now["input"] == {"report": "sales"} and now["overlap"] == "buffer_one"  # kept
    renamed = await web.patch("/api/schedules/daily", json={"orchestration": "wait_event"})
    assert renamed.json()["orchestration"] == "wait_event"

    assert_error(await web.post("/api/schedules/daily", json=DAILY), 409, "already_exists", "daily")
    assert_error(await web.patch("/api/schedules/nope", json={"run_limit": 2}), 404, "not_found")


async def test_bad_definitions_are_refused_with_what_is_wrong(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    cases = [
        ({"spec": {"cron": ["0 6 * * *"]}}, "orchestration: Field required"),
        ({**DAILY, "overlap": "sometimes"}, "overlap: Input should be"),
        ({**DAILY, "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({**DAILY, "run_limit": 0}, "run_limit: Input should be greater than or equal to 1"),
        (
            {"orchestration": "echo", "spec": {"intervals": [{"every_s": -5}]}},
            "spec.intervals.0.every_s: Input should be greater than 0",
        ),
        (
            {"orchestration": "echo", "spec": {"cron": ["0 6 * *"], "end_at": "2030-01-01"}},
            "spec.end_at: Input should have timezone info",
        ),
        ([1, 2], "the body: Input should be a valid dictionary"),
    ]
    for body, message in cases:
        refused = await web.post("/api/schedules/bad", json=body)
        assert_error(refused, 400, "invalid_schedule", message)
    # Fits the form, cannot work: refused by the client's own checks.
    for spec, message in [
        ({"cron": ["61 * * * *"]}, "cron"),
        ({"cron": ["0 6 * * *"], "time_zone": "Mars/Olympus"}, "IANA"),
        ({}, "at least one cron expression or interval"),
        (
            {
                "cron": ["0 6 * * *"],
                "start_at": "2030-01-02T00:00:00Z",
                "end_at": "2030-01-01T00:00:00Z",
            },
            "end",
        ),
    ]:
        refused = await web.post("/api/schedules/bad", json={"orchestration": "echo", "spec": spec})
        assert_error(refused, 400, "invalid_schedule", message)
    malformed = await web.post("/api/schedules/bad", content=b"{nope", headers=JSON)
    assert_error(malformed, 400, "invalid_json", "not valid JSON")
    assert await hub.client.list_schedules() == [], "nothing was stored"

    await hub.client.create_schedule("kept", "echo", HOURLY)
    for change, message in [
        ({}, "names no field to change"),
        ({"spec": None}, "spec: may not be null"),
        ({"catch_up_window_s": 0}, "greater than 0"),
        ({"spec": {"cron": ["not cron"]}}, "cron"),
    ]:
        refused = await web.patch("/api/schedules/kept", json=change)
        assert_error(refused, 400, "invalid_schedule", message)
    kept = (await web.get("/api/schedules/kept")).json()
    assert kept["spec"]["cron"] == ["0 * * * *"], "a refused change changes nothing"
    wrong_verb = await web.patch("/api/schedules/kept/pause", json={"run_limit": 1})
    assert_error(wrong_verb, 405, "method_not_allowed")
