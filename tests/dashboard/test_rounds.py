"""An eternal orchestration's earlier executions (its rounds) on the instance page, their own
pages with the previous and next round, the REST API, and the CLI."""

from __future__ import annotations

import html
import re

import httpx

import duratask as dt
from tests.conformance.e2e_hub import wait_until
from tests.dashboard import workflows
from tests.dashboard.conftest import Hub


async def eternal(hub: Hub, instance_id: str, until: int) -> None:
    await hub.start_instance(
        workflows.rounds, {"round": 0, "until": until}, instance_id=instance_id
    )

    async def last_round() -> bool:
        return len(await hub.client.get_orchestration_executions(instance_id)) == until - 1

    await wait_until(last_round, what=f"{instance_id} to reach round {until}")
    await hub.wait_status(instance_id, dt.OrchestrationStatus.RUNNING)


async def test_an_instance_page_lists_its_earlier_rounds_and_links_them(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    await eternal(hub, "eternal", until=4)
    page = (await web.get("/instances/eternal")).text
    assert 'id="round">4 ' in page
    assert 'href="/instances/eternal/rounds/3">← previous round' in page
    listed = [int(g) for g in re.findall(r'data-generation="(\d+)"', page)]
    assert listed == [3, 2, 1]  # latest first
    assert '{"round":2,"until":4}' in html.unescape(page)  # round 3's input

    third = await web.get("/instances/eternal/rounds/3")
    assert third.status_code == 200
    assert "Round 3 of 4" in third.text and "CONTINUED_AS_NEW" in third.text
    assert 'id="previous-round" href="/instances/eternal/rounds/2"' in third.text
    assert 'id="next-round" href="/instances/eternal">round 4 (current)' in third.text
    first = (await web.get("/instances/eternal/rounds/1")).text
    assert "no earlier round stored" in first
    assert 'id="next-round" href="/instances/eternal/rounds/2"' in first

    missing = await web.get("/instances/eternal/rounds/9")
    assert missing.status_code == 404
    assert "round 9 of &#39;eternal&#39; is not stored" in missing.text
    assert "the current round is 4" in missing.text

    api = await web.get("/api/instances/eternal/executions")
    assert api.status_code == 200
    body = api.json()
    assert [r["generation"] for r in body] == [1, 2, 3]
    assert body[0]["status"] == "CONTINUED_AS_NEW"
    assert body[0]["input_summary"] == '{"round":0,"until":4}'
    assert body[0]["output_summary"] == '{"round":1,"until":4}'
    assert (await web.get("/api/instances/nobody/executions")).status_code == 404

    await hub.client.raise_orchestration_event("eternal", "stop")
    await hub.client.wait_for_orchestration_completion("eternal", timeout=20)


async def test_an_instance_that_never_continued_has_no_rounds(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    await hub.finish(workflows.echo, 1, instance_id="once")
    page = (await web.get("/instances/once")).text
    assert "Earlier executions" not in page and 'id="round"' not in page
    missing = await web.get("/instances/once/rounds/1")
    assert missing.status_code == 404
    assert "has not continued as new" in missing.text
    assert (await web.get("/api/instances/once/executions")).json() == []
