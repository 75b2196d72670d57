"""What an operator looks for first: the list sorted and filtered (newest first, top-level
with their sub-orchestrations expandable, custom status search, durations), bulk actions
behind one confirmation, what a running instance waits for, and the workers with the
backlog; in the pages and in the REST API."""

from __future__ import annotations

import html
import os
import re

import httpx

import duratask as dt
from tests.dashboard import workflows
from tests.dashboard.conftest import Hub, csrf_token
from tests.dashboard.test_pages import listed_ids

S = dt.OrchestrationStatus


async def waiting_instance(hub: Hub, instance_id: str) -> None:
    await hub.start_instance(workflows.waits_on_everything, instance_id=instance_id)
    await hub.wait_status(f"{instance_id}:sub", S.RUNNING)
    await hub.wait_history(instance_id, dt.EventType.TIMER_CREATED)


async def test_the_list_is_newest_first_top_level_and_sortable(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    for iid in ("b-echo", "a-echo"):
        await hub.finish(workflows.echo, iid, instance_id=iid)
    await waiting_instance(hub, "c-waits")

    page = (await web.get("/instances")).text
    assert listed_ids(page)[:3] == ["c-waits", "a-echo", "b-echo"]
    assert "c-waits:sub" not in listed_ids(page)  # grouped under its parent instead
    assert re.search(r"1 sub-orchestration</summary>\s*<ul>\s*<li><a class=\"mono\"", page)
    assert "c-waits:sub" in page
    assert "so far" in page  # a running instance's duration is still growing

    with_subs = (await web.get("/instances?subs=on")).text
    assert "c-waits:sub" in listed_ids(with_subs)

    by_name = listed_ids((await web.get("/instances?sort=name&dir=asc")).text)
    assert by_name == ["a-echo", "b-echo", "c-waits"]  # echo, echo, waits_on_everything
    by_id_desc = listed_ids((await web.get("/instances?sort=name&dir=desc")).text)
    assert by_id_desc == ["c-waits", "b-echo", "a-echo"]
    headers = re.findall(r'data-sort="(\w+)"', page)
    assert headers == ["name", "status", "created", "last_updated"]  # as the cells are
    sort_link = re.search(r'data-sort="status" href="([^"]+)"', page)
    assert sort_link is not None and "sort=status" in html.unescape(sort_link.group(1))

    searched = listed_ids((await web.get("/instances?text=everything")).text)
    assert searched == ["c-waits"]

    api = await web.get(
        "/api/instances", params={"sortBy": "name", "descending": "true", "topLevelOnly": "true"}
    )
    assert [s["instanceId"] for s in api.json()] == ["c-waits", "b-echo", "a-echo"]
    counts = (await web.get("/api/counts", params={"customStatusContains": "everything"})).json()
    assert counts["Running"] == 1 and sum(counts.values()) == 1


async def test_a_running_instance_says_what_it_waits_for(hub: Hub, web: httpx.AsyncClient) -> None:
    await waiting_instance(hub, "w")
    page = (await web.get("/instances/w")).text
    begin = page.index('id="waiting-for"')
    panel = page[begin : page.index("</section>", begin)]
    assert 'data-kind="activity"' in panel and "runs_elsewhere" in panel and "attempt 1" in panel
    assert 'data-kind="timer"' in panel and "due <time" in panel and "in 59 min" in panel
    assert 'data-kind="sub-orchestration"' in panel and "w:sub" in panel and "RUNNING" in panel
    assert 'id="output"' not in page  # no empty output box while it runs
    assert 'id="show-markers"' in page  # episode boundaries collapsed, one click away

    body = (await web.get("/api/instances/w")).json()
    kinds = {item["kind"]: item for item in body["waitingFor"]}
    assert set(kinds) == {"activity", "timer", "sub-orchestration"}
    assert kinds["activity"]["attempt"] == 1 and kinds["activity"]["name"] == "runs_elsewhere"
    assert kinds["timer"]["due"] is not None
    assert kinds["sub-orchestration"]["instanceId"] == "w:sub"

    done = await hub.finish(workflows.echo, 1, instance_id="finished")
    assert done.runtime_status is S.COMPLETED
    finished = (await web.get("/instances/finished")).text
    assert 'id="waiting-for"' not in finished and 'id="output"' in finished
    assert (await web.get("/api/instances/finished")).json()["waitingFor"] == []


async def test_bulk_terminate_behind_one_confirmation(hub: Hub, web: httpx.AsyncClient) -> None:
    ids = []
    for n in range(3):
        iid = await hub.start_instance(workflows.wait_event, instance_id=f"bulk-{n}")
        await hub.client.wait_for_orchestration_start(iid)
        ids.append(iid)
    await hub.finish(workflows.echo, 0, instance_id="already-done")
    listing = (await web.get("/instances")).text
    token = csrf_token(listing)

    confirm = await web.post(
        "/instances/bulk",
        data={"csrf_token": token, "bulk_action": "terminate", "id": [*ids, "already-done"]},
    )
    assert confirm.status_code == 200
    assert "Terminate 4 instances?" in html.unescape(confirm.text)
    for iid in ids:
        assert await hub.status(iid) is S.RUNNING  # nothing happens before confirming

    done = await web.post(
        "/instances/bulk/terminate",
        data={
            "csrf_token": csrf_token(confirm.text),
            "id": [*ids, "already-done"],
            "reason": "cleanup",
        },
    )
    assert done.status_code == 207  # one of them was refused; the others went through
    text = html.unescape(done.text)
    assert "3 done, 1 refused" in text and "already-done" in text and "already finished" in text
    for iid in ids:
        await hub.wait_status(iid, S.TERMINATED)

    nothing = await web.post("/instances/bulk", data={"csrf_token": token, "bulk_action": "x"})
    assert nothing.status_code == 400


async def test_workers_page_and_api_show_the_worker_and_the_backlog(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    await waiting_instance(hub, "w")

    async def reported() -> httpx.Response:
        return await web.get("/api/workers")

    body = (await reported()).json()
    (me,) = body["workers"]
    assert me["pid"] == os.getpid()
    assert "double" in me["activities"]
    assert {"name": "echo", "version": None} in me["orchestrations"]
    assert {"kind": "activity", "name": "runs_elsewhere", "ready": 1, "later": 0, "leased": 0} in (
        body["backlog"]
    )
    page = (await web.get("/workers")).text
    assert f'<td class="mono">{os.getpid()}</td>' in page
    assert 'data-name="runs_elsewhere"' in page
    assert '<a href="/workers">Workers</a>' in page
