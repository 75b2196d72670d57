"""The schedule pages: the list, one schedule with its runs, and its actions."""

from __future__ import annotations

import httpx

import duratask as dt
from tests.dashboard.conftest import Hub, form_post

HOURLY = dt.ScheduleSpec(cron="0 * * * *", time_zone="Europe/Paris")


async def test_list_and_schedule_page(hub: Hub, web: httpx.AsyncClient) -> None:
    listed = await web.get("/schedules")
    assert listed.status_code == 200 and "No schedules" in listed.text
    await hub.client.create_schedule("team/report", "echo", HOURLY, input={"a": 1})
    listed = await web.get("/schedules")
    assert 'href="/schedules/team%2Freport"' in listed.text and "(Europe/Paris)" in listed.text
    page = await web.get("/schedules/team%2Freport")
    assert page.status_code == 200
    assert "0 * * * *" in page.text and "overlap skip" in page.text and "No runs yet." in page.text
    missing = await web.get("/schedules/nope")
    assert missing.status_code == 404 and "no schedule &#39;nope&#39;" in missing.text


async def test_actions_from_the_page(hub: Hub, web: httpx.AsyncClient) -> None:
    await hub.client.create_schedule("report", "echo", HOURLY, input="x")
    page = "/schedules/report"
    paused = await form_post(web, page, {"note": "upgrade"}, action=f"{page}/actions/pause")
    assert paused.status_code == 303 and paused.headers["location"] == f"{page}?done=pause"
    shown = await web.get(paused.headers["location"])
    assert "The schedule is paused." in shown.text and "paused: upgrade" in shown.text
    resumed = await form_post(web, page, {}, action=f"{page}/actions/resume")
    assert resumed.status_code == 303
    triggered = await form_post(web, page, {}, action=f"{page}/actions/trigger")
    assert triggered.status_code == 303
    info = (await hub.client.describe_schedule("report")).recent_runs[0]
    await hub.client.wait_for_orchestration_completion(info.instance_id, timeout=20)
    shown = await web.get(page)
    assert info.instance_id in shown.text and "COMPLETED" in shown.text
    deleted = await form_post(web, page, {}, action=f"{page}/actions/delete")
    assert deleted.headers["location"] == "/schedules?done=delete"
    assert await hub.client.list_schedules() == []


async def test_actions_are_refused_when_read_only(hub: Hub) -> None:
    await hub.client.create_schedule("report", "echo", HOURLY)
    web = hub.web(read_only=True)
    page = await web.get("/schedules/report")
    assert page.status_code == 200 and "/actions/pause" not in page.text
    refused = await web.post("/schedules/report/actions/pause", data={"csrf_token": "x"})
    assert refused.status_code in (403, 400)
    assert not (await hub.client.describe_schedule("report")).info.paused
