"""A real browser on a real server: list, open a waiting instance, raise its event, see it end.

Runs Debian's Chromium (``/usr/bin/chromium``) through Playwright against uvicorn serving the
dashboard on a free port, with a worker on a SQLite hub. Without Chromium the test is skipped
(loudly), or fails when ``DURATASK_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import duratask as dt
from duratask.dashboard import bind_socket, create_app, loopback_hosts
from duratask.dashboard.server import DashboardServer, build_server
from tests.dashboard import workflows
from tests.dashboard.conftest import BROWSER_SKIPPED

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000
# Screenshots of the operator views are kept here after the run (CI keeps the folder).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    why = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("DURATASK_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why}; DURATASK_REQUIRE_BROWSER=1 forbids skipping", pytrace=False)
    BROWSER_SKIPPED.append(why)
    pytest.skip(f"BROWSER TEST SKIPPED: {why}")


class _Server:
    """uvicorn serving the dashboard from a thread."""

    def __init__(self, url: str) -> None:
        self.sock = bind_socket("127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = create_app(url, allowed_hosts=loopback_hosts("127.0.0.1"))
        self.server: DashboardServer = build_server(app, log_level="warning")
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
            name="dashboard-test-server",
        )

    def __enter__(self) -> _Server:
        self.thread.start()
        assert self.server.ready.wait(30), "the dashboard server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dt.TaskHubClient]]:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    worker = workflows.register(dt.TaskHubWorker(url, lease_duration=timedelta(seconds=10)))
    client = dt.TaskHubClient(url)
    worker.start()
    try:
        with _Server(url) as server:
            yield server.base, client
    finally:
        worker.stop()
        client.close()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_without_chromium_the_test_skips_loudly_or_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("DURATASK_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="forbids skipping"):
        require_chromium()
    monkeypatch.delenv("DURATASK_REQUIRE_BROWSER")
    before = len(BROWSER_SKIPPED)
    try:
        with pytest.raises(pytest.skip.Exception, match="BROWSER TEST SKIPPED"):
            require_chromium()
        assert "Chromium not found" in BROWSER_SKIPPED[-1]  # reported in the summary
    finally:
        del BROWSER_SKIPPED[before:]


@pytest.mark.browser
def test_raise_an_event_from_the_browser_and_watch_it_complete(
    served: tuple[str, dt.TaskHubClient], tmp_path: Path
) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    base, client = served
    iid = client.schedule_new_orchestration(
        workflows.approval, input={"amount": 50, "customer": "<b>Ada</b>"}, instance_id="order-7"
    )
    done = client.schedule_new_orchestration(workflows.echo, input="x", instance_id="other-1")
    client.wait_for_orchestration_completion(done, timeout=30)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: errors.append(msg.text) if msg.type == "error" else None,
            )

            page.goto(f"{base}/instances")
            rows = page.locator("table.instances tbody tr")
            expect(rows).to_have_count(2)
            expect(page.locator('a[data-status="COMPLETED"] .count')).to_have_text("1")
            page.screenshot(path=str(tmp_path / "list-page.png"), full_page=True)

            # Auto-refresh can be switched off, and the choice is remembered.
            toggle = page.locator("#auto-refresh")
            expect(toggle).to_be_checked()
            toggle.uncheck()
            page.reload()
            expect(toggle).not_to_be_checked()
            toggle.check()

            # Filter by status through the form.
            page.locator('input[name="status"][value="COMPLETED"]').check()
            page.get_by_role("button", name="Filter").click()
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("other-1")
            page.goto(f"{base}/instances")

            page.get_by_role("link", name=iid, exact=True).click()
            expect(page.locator("h1")).to_have_text(iid)
            # The page refreshes itself until the orchestration waits for its event.
            expect(page.locator("#custom-status")).to_contain_text("awaiting approval")
            expect(page.locator("#runtime-status")).to_have_text("RUNNING")
            expect(page.locator("#input")).to_contain_text("<b>Ada</b>")  # shown, not rendered
            expect(page.locator('#timeline g[data-kind="waiting"]')).to_have_count(1)

            page.locator('a[data-action="raise-event"]').click()
            expect(page.locator("h1")).to_contain_text("Raise an external event")
            page.locator('input[name="event_name"]').fill("approve")
            page.locator('textarea[name="event_data"]').fill('"carol"')
            page.screenshot(path=str(tmp_path / "confirm-page.png"))
            page.locator("#confirm").click()

            expect(page.locator(".notice")).to_contain_text("Event sent.")
            expect(page.locator("#runtime-status")).to_have_text("COMPLETED")
            expect(page.locator("#output")).to_contain_text('"approved_by": "carol"')
            labels = page.locator("#timeline text.bar-label")
            expect(labels).to_have_text(
                [
                    "orchestration approval",
                    "activity double",
                    "timer",
                    "event approve",
                    "sub-orchestration child",
                ]
            )
            expect(page.locator("table.history tbody tr")).not_to_have_count(0)

            shot = tmp_path / "timeline.png"
            page.locator("#timeline").screenshot(path=str(shot))
            page.screenshot(path=str(tmp_path / "instance-page.png"), full_page=True)
            assert errors == [], errors
        finally:
            browser.close()

    width, height = png_size(shot)
    assert width > 400 and height > 80, (width, height)
    assert shot.stat().st_size > 5_000
    state = client.get_orchestration_state(iid)
    assert state is not None and state.output == {"approved_by": "carol", "total": 200}


@pytest.mark.browser
def test_operator_views_sorting_waiting_for_retries_and_a_bulk_action(
    served: tuple[str, dt.TaskHubClient],
) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    base, client = served
    for iid in ("b-echo", "a-echo"):
        client.wait_for_orchestration_completion(
            client.schedule_new_orchestration(workflows.echo, input=iid, instance_id=iid),
            timeout=30,
        )
    retried = client.schedule_new_orchestration(
        workflows.retried, input="browser", instance_id="retried"
    )
    client.wait_for_orchestration_completion(retried, timeout=30)
    waiting = client.schedule_new_orchestration(workflows.waits_on_everything, instance_id="waits")
    deadline = time.monotonic() + 30
    while client.get_orchestration_state(f"{waiting}:sub") is None:  # not created yet
        assert time.monotonic() < deadline, "the sub-orchestration was never started"
        time.sleep(0.05)  # the poll interval
    client.wait_for_orchestration_start(f"{waiting}:sub", timeout=30)
    for n in range(2):
        client.schedule_new_orchestration(workflows.wait_event, instance_id=f"stuck-{n}")
        client.wait_for_orchestration_start(f"stuck-{n}", timeout=30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(f"{base}/instances")
            ids = page.locator("table.instances tbody tr")
            expect(ids.first).to_have_attribute("data-instance", "stuck-1")  # newest first
            expect(page.locator('tr[data-instance="waits:sub"]')).to_have_count(0)
            page.locator('tr[data-instance="waits"] details.children-inline summary').click()
            expect(page.locator('tr[data-instance="waits"] details ul')).to_contain_text(
                "waits:sub"
            )
            page.screenshot(path=str(ARTIFACTS / "list-page.png"), full_page=True)

            page.locator('a[data-sort="name"]').click()  # name, descending first
            expect(ids.first).to_have_attribute("data-instance", "waits")
            page.locator('a[data-sort="name"]').click()  # and then ascending
            expect(ids.first).to_have_attribute("data-instance", "a-echo")

            page.goto(f"{base}/instances/waits")
            panel = page.locator("#waiting-for")
            expect(panel.locator('tr[data-kind="activity"]')).to_contain_text("attempt 1")
            expect(panel.locator('tr[data-kind="timer"]')).to_contain_text("due")
            expect(panel.locator('tr[data-kind="sub-orchestration"]')).to_contain_text("RUNNING")
            page.screenshot(path=str(ARTIFACTS / "instance-page.png"), full_page=True)

            page.goto(f"{base}/instances/retried")
            tries = page.locator('#timeline g[data-kind="activity"]')
            expect(tries).to_have_count(2)
            expect(page.locator("#timeline text.bar-label")).to_contain_text(
                ["activity flaky (2 tries)"]
            )
            ys = {tries.nth(i).locator("rect").get_attribute("y") for i in range(2)}
            assert len(ys) == 1, ys  # one row for both tries
            page.locator("#timeline").screenshot(path=str(ARTIFACTS / "grouped-retry.png"))

            page.goto(f"{base}/instances")
            for n in range(2):
                page.locator(f'input[name="id"][value="stuck-{n}"]').check()
            page.locator("#bulk-action").select_option("terminate")
            page.locator("#bulk-submit").click()
            expect(page.locator("h1")).to_have_text("Terminate 2 instances?")
            page.locator("#confirm").click()
            expect(page.locator("#bulk-notice")).to_contain_text("2 instance(s) done")
            assert errors == [], errors
        finally:
            browser.close()

    for n in range(2):
        state = client.wait_for_orchestration_completion(f"stuck-{n}", timeout=30)
        assert state.runtime_status is dt.OrchestrationStatus.TERMINATED
    assert png_size(ARTIFACTS / "list-page.png")[0] >= 1400
