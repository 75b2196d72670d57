"""A real browser on a real server, for what happened to an instance over time: the gap a
lost worker left on the timeline, and an eternal orchestration's earlier rounds, walked
back and forth. Screenshots are kept in ``test-artifacts/dashboard/``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import duratask as dt
from duratask.backends import open_store
from tests.dashboard import workflows
from tests.dashboard.test_browser import ARTIFACTS, CHROMIUM, WAIT_MS, _Server, require_chromium

DEAD_LEASE = timedelta(milliseconds=300)


def _lease_and_die(url: str) -> str:
    """A worker leases the instance waiting for one and dies holding it; its owner."""

    async def lease() -> None:
        store = open_store(url)
        await store.open()
        try:
            work_item = await store.lock_next_orchestration_work_item("dead-worker", DEAD_LEASE)
            assert work_item is not None and work_item.instance_id == "crashed"
        finally:
            await store.close()

    asyncio.run(lease())
    return "dead-worker"


@pytest.fixture
def served_after_a_crash(tmp_path: Path) -> Iterator[tuple[str, dt.TaskHubClient]]:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    client = dt.TaskHubClient(url)
    client.schedule_new_orchestration(workflows.echo, input="survived", instance_id="crashed")
    _lease_and_die(url)
    worker = workflows.register(dt.TaskHubWorker(url, lease_duration=timedelta(seconds=10)))
    worker.start()
    try:
        with _Server(url) as server:
            yield server.base, client
    finally:
        worker.stop()
        client.close()


@pytest.mark.browser
def test_a_lost_worker_on_the_timeline_and_the_rounds_of_an_eternal_orchestration(
    served_after_a_crash: tuple[str, dt.TaskHubClient],
) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    base, client = served_after_a_crash
    client.wait_for_orchestration_completion("crashed", timeout=30)
    client.schedule_new_orchestration(
        workflows.rounds, input={"round": 0, "until": 3}, instance_id="eternal"
    )
    client.wait_for_orchestration_start("eternal", timeout=30)
    deadline = time.monotonic() + 30
    while len(client.get_orchestration_executions("eternal")) < 2:
        assert time.monotonic() < deadline, "the eternal orchestration never reached round 3"
        time.sleep(0.05)  # the poll interval
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(f"{base}/instances/crashed")
            lost = page.locator('#timeline g[data-kind="lost"]')
            expect(lost).to_have_count(1)
            expect(lost.locator("title")).to_contain_text("lease of dead-worker ran out")
            expect(page.locator(".legend .kind-lost")).to_contain_text("worker lost")
            page.locator("#timeline").screenshot(path=str(ARTIFACTS / "lost-worker.png"))

            page.goto(f"{base}/instances/eternal")
            expect(page.locator("#round")).to_contain_text("3")
            expect(page.locator("#executions tbody tr")).to_have_count(2)
            page.screenshot(path=str(ARTIFACTS / "eternal-instance.png"), full_page=True)
            page.locator("a.previous-round").click()
            expect(page.locator("p.summary")).to_contain_text("Round 2 of 3")
            page.locator("#previous-round").click()
            expect(page.locator("p.summary")).to_contain_text("Round 1 of 3")
            expect(page.locator("#input")).to_contain_text('"round":0')
            page.screenshot(path=str(ARTIFACTS / "round-page.png"), full_page=True)
            page.locator("#next-round").click()
            expect(page.locator("p.summary")).to_contain_text("Round 2 of 3")
            page.locator("#next-round").click()
            expect(page.locator("h1")).to_have_text("eternal")
            assert errors == [], errors
        finally:
            browser.close()
        client.raise_orchestration_event("eternal", "stop")
        client.wait_for_orchestration_completion("eternal", timeout=30)
