"""The pages: the instance list (filters, paging, counts) and the instance page."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import markupsafe

import duratask as dt
from tests.conformance.e2e_hub import wait_until
from tests.dashboard import workflows
from tests.dashboard.conftest import Hub


def listed_ids(page: str) -> list[str]:
    """The instance ids in the list table, in order."""
    return [
        html.unescape(m) for m in re.findall(r'<td class="mono"><a href="[^"]+">([^<]+)</a>', page)
    ]


def count_of(page: str, status: str) -> int:
    match = re.search(
        rf'data-status="{status}"[^>]*>{status} <strong class="count">(\d+)</strong>', page
    )
    assert match is not None, f"no count for {status}"
    return int(match.group(1))


def next_link(page: str) -> str | None:
    match = re.search(r'<a rel="next" class="next-page" href="([^"]+)"', page)
    return html.unescape(match.group(1)) if match else None


async def test_list_shows_instances_counts_and_filters(hub: Hub, web: httpx.AsyncClient) -> None:
    for iid in ("alpha-1", "alpha-2", "beta-1"):
        await hub.finish(workflows.echo, iid, instance_id=iid)
    failed = await hub.finish(workflows.failing, "no", instance_id="gamma-1")
    assert failed.runtime_status is dt.OrchestrationStatus.FAILED
    running = await hub.start_instance(workflows.wait_event, instance_id="delta-1")
    await hub.client.wait_for_orchestration_start(running)

    page = (await web.get("/instances")).text  # newest first by default
    assert listed_ids(page) == ["delta-1", "gamma-1", "beta-1", "alpha-2", "alpha-1"]
    assert count_of(page, "COMPLETED") == 3
    assert count_of(page, "FAILED") == 1
    assert count_of(page, "RUNNING") == 1
    assert count_of(page, "PENDING") == 0

    async def ids(query: str) -> list[str]:
        response = await web.get(f"/instances?dir=asc&{query}")
        assert response.status_code == 200, response.text
        return listed_ids(response.text)

    assert await ids("status=FAILED") == ["gamma-1"]
    assert await ids("status=failed&status=running") == ["gamma-1", "delta-1"]
    assert await ids("status=Failed,Running") == ["gamma-1", "delta-1"]
    assert await ids("name=echo") == ["alpha-1", "alpha-2", "beta-1"]
    assert await ids("prefix=alpha-") == ["alpha-1", "alpha-2"]
    assert await ids("prefix=alpha-&status=RUNNING") == []
    beta = await hub.client.get_orchestration_state("beta-1")
    assert beta is not None
    since_beta = beta.created_at.replace(tzinfo=None).isoformat()
    assert await ids(f"from={quote(since_beta)}") == ["beta-1", "gamma-1", "delta-1"]
    assert await ids(f"to={quote(since_beta)}") == ["alpha-1", "alpha-2"]
    # Counts follow the filters other than status.
    filtered = (await web.get("/instances?prefix=alpha-&status=FAILED")).text
    assert count_of(filtered, "COMPLETED") == 2 and count_of(filtered, "FAILED") == 0


async def test_bad_filters_are_explained_not_crashed(web: httpx.AsyncClient) -> None:
    for query, words in (
        ("from=yesterday", "cannot read 'yesterday' as an ISO 8601 time"),
        ("status=SLEEPING", "unknown status 'SLEEPING'"),
        ("size=0", "must be between 1 and 1000"),
        ("token=not-a-token", "continuation token"),
    ):
        response = await web.get(f"/instances?{query}")
        assert response.status_code == 400, query
        assert words in html.unescape(response.text), query
        assert 'role="alert"' in response.text


async def test_list_pages_with_continuation_tokens(hub: Hub, web: httpx.AsyncClient) -> None:
    expected = [f"page-{n}" for n in range(5)]
    for iid in expected:
        await hub.start_instance(workflows.echo, iid, instance_id=iid)
    seen: list[str] = []
    url: str | None = "/instances?size=2&dir=asc"
    pages = 0
    while url is not None:
        page = (await web.get(url)).text
        rows = listed_ids(page)
        assert len(rows) == (2 if pages < 2 else 1)
        seen.extend(rows)
        url = next_link(page)
        pages += 1
        if pages > 1:
            assert "First page" in page
    assert seen == expected
    assert pages == 3


async def test_instance_page_shows_payloads_relations_history_and_timeline(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    iid = await hub.start_instance(workflows.approval, {"amount": 21, "note": "rush"})
    await hub.wait_custom_status(iid, {"stage": "awaiting approval"})
    await hub.client.raise_orchestration_event(iid, "approve", "alice")
    state = await hub.client.wait_for_orchestration_completion(iid, timeout=20)
    assert state.output == {"approved_by": "alice", "total": 84}

    page = (await web.get(f"/instances/{iid}")).text
    text = html.unescape(page)
    assert '"amount": 21' in text and '"note": "rush"' in text  # input, indented JSON
    assert '"approved_by": "alice"' in text  # output
    assert '"stage": "done"' in text  # custom status
    assert 'id="runtime-status">COMPLETED<' in page
    child_href = f"/instances/{quote(iid + ':child', safe='')}"
    assert f'href="{child_href}"' in page  # the children list links the sub-orchestration

    # The history table: one row per event, completions named after what they complete.
    for event_type in (
        "ExecutionStarted",
        "TaskScheduled",
        "TaskCompleted",
        "TimerCreated",
        "TimerFired",
        "EventRaised",
        "SubOrchestrationInstanceCreated",
        "SubOrchestrationInstanceCompleted",
        "ExecutionCompleted",
    ):
        assert f'data-type="{event_type}"' in page, event_type
    history = await hub.client.get_orchestration_history(iid)
    assert page.count("<tr class=") == len(history)
    assert "double (#0)" in page

    # The timeline: a bar per paired step, with its label.
    bars = re.findall(
        r'<g class="bar kind-([a-z-]+) outcome-([a-z]+)".*?'
        r'<text class="bar-label"[^>]*>([^<]+)</text>',
        page,
        re.S,
    )
    assert [(kind, label) for kind, _, label in bars] == [
        ("orchestration", "orchestration approval"),
        ("activity", "activity double"),
        ("timer", "timer"),
        ("event", "event approve"),
        ("sub-orchestration", "sub-orchestration child"),
    ]
    assert {outcome for _, outcome, _ in bars} == {"completed"}
    assert f'<a href="{child_href}"><text class="bar-label"' in page

    child = (await web.get(child_href)).text
    assert f'class="mono parent" href="/instances/{iid}"' in child


async def test_failure_details_and_payloads_are_escaped(hub: Hub, web: httpx.AsyncClient) -> None:
    evil = "<script>alert('x')</script>"
    failed = await hub.finish(workflows.failing, evil)
    page = (await web.get(f"/instances/{failed.instance_id}")).text
    assert evil not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "<strong>TaskFailedError</strong>" in page or "<strong>ValueError</strong>" in page
    stack = re.search(r'<pre class="stack-trace">(.*?)</pre>', page, re.S)
    assert stack is not None and "Traceback" in stack.group(1)
    assert 'data-outcome="failed"' in page  # the failed activity's bar
    # The chain: the orchestration's failure, then the activity's own exception and frames.
    cause = re.search(r'<details class="cause" open><summary>Caused by (.*?)</details>', page, re.S)
    assert cause is not None and "<strong>ValueError</strong>" in cause.group(1)
    assert "in explode" in cause.group(1)
    api = (await web.get(f"/api/instances/{failed.instance_id}")).json()
    assert api["failureDetails"]["errorType"] == "TaskFailedError"
    assert api["failureDetails"]["innerFailure"]["errorType"] == "ValueError"
    assert api["failureDetails"]["innerFailure"]["errorTypes"][:2] == ["ValueError", "Exception"]

    odd_id = 'odd <b>&"id"/with?slash#hash'
    await hub.finish(workflows.echo, {"html": "<img src=x onerror=alert(1)>"}, instance_id=odd_id)
    listing = (await web.get("/instances")).text
    assert "<b>" not in listing and "<img" not in listing
    href = f"/instances/{quote(odd_id, safe='')}"
    assert f'href="{html.escape(href)}"' in listing
    detail = await web.get(href)
    assert detail.status_code == 200
    assert "<img src=x" not in detail.text
    assert str(markupsafe.escape(odd_id)) in detail.text


async def test_a_waiting_instance_refreshes_and_offers_actions(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    iid = await hub.start_instance(workflows.wait_event)
    await hub.client.wait_for_orchestration_start(iid)
    page = (await web.get(f"/instances/{iid}")).text
    assert 'data-refresh-seconds="2"' in page
    assert 'id="auto-refresh"' in page
    assert 'data-kind="waiting"' in page
    offered = re.findall(r'data-action="([a-z-]+)"', page)
    assert offered == ["raise-event", "suspend", "restart", "terminate"]

    await hub.client.raise_orchestration_event(iid, "go", 1)
    await hub.client.wait_for_orchestration_completion(iid, timeout=20)
    finished = (await web.get(f"/instances/{iid}")).text
    assert 'data-refresh-seconds="0"' in finished
    assert re.findall(r'data-action="([a-z-]+)"', finished) == ["restart", "purge"]
    assert 'data-kind="waiting"' not in finished


async def test_static_files_and_navigation(hub: Hub, web: httpx.AsyncClient) -> None:
    script = await web.get("/static/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "location.reload" in script.text
    style = await web.get("/static/dashboard.css")
    assert style.status_code == 200 and "text/css" in style.headers["content-type"]
    listing = await web.get("/instances")
    assert listing.headers["content-security-policy"].startswith("default-src 'self'")
    assert 'data-refresh-seconds="5"' in listing.text
    assert "https://" not in listing.text  # nothing fetched from elsewhere

    assert (await web.get("/")).headers["location"] == "/instances"
    jump = await web.get("/go", params={"id": "some/id"})
    assert jump.status_code == 303 and jump.headers["location"] == "/instances/some%2Fid"
    missing = await web.get("/instances/no-such-instance")
    assert missing.status_code == 404 and "no-such-instance" in missing.text
    assert (await web.get("/nowhere")).status_code == 404


async def test_scheduled_instance_shows_its_start_time(hub: Hub, web: httpx.AsyncClient) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    iid = await hub.start_instance(workflows.echo, 1, start_at=later)
    page = (await web.get(f"/instances/{iid}")).text
    assert "Scheduled start" in page and 'id="runtime-status">PENDING<' in page
    assert "No history yet" in page and "<svg" not in page


async def test_an_instance_no_connected_worker_can_run_says_so(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    async def registered() -> bool:
        return bool(await hub.client.list_workers(connected_only=True))

    await wait_until(registered, what="the worker's row")
    iid = await hub.client.schedule_new_orchestration("nobody_runs_this", instance_id="orphan")
    page = (await web.get(f"/instances/{iid}")).text
    assert "Waiting for a worker: no connected worker has registered orchestration" in page
    body = (await web.get(f"/api/instances/{iid}")).json()
    assert "'nobody_runs_this'" in body["waiting"]
    done = await hub.finish(workflows.echo, "x")
    assert (await web.get(f"/api/instances/{done.instance_id}")).json()["waiting"] is None
