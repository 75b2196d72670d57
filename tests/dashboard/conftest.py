"""Fixtures for the dashboard tests: a task hub with a running worker, and the web app on it.

The app is driven in-process through httpx (``ASGITransport``), in the same event loop as the
worker, so tests wait on conditions with ``wait_until`` instead of sleeping.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import duratask as dt
from duratask.dashboard import create_app
from tests.conformance.e2e_hub import TaskHub, wait_until
from tests.dashboard import workflows

# Why the browser test was skipped, if it was (reported in the terminal summary).
BROWSER_SKIPPED: list[str] = []
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
JSON = {"Content-Type": "application/json"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives a real Chromium through Playwright (needs /usr/bin/chromium)"
    )


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = CSRF_INPUT.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


class Hub(TaskHub):
    """A memory task hub running the test workflows, with dashboard apps on it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        workflows.register(self.worker)
        self.webs: list[httpx.AsyncClient] = []

    def web(self, **options: Any) -> httpx.AsyncClient:
        """An HTTP client on a fresh dashboard app for this hub (``create_app`` options)."""
        app = create_app(self.client, **options)
        web = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        self.webs.append(web)
        return web

    async def start_instance(self, orchestration: Any, input: Any = None, **kw: Any) -> str:
        return await self.client.schedule_new_orchestration(orchestration, input=input, **kw)

    async def finish(
        self, orchestration: Any, input: Any = None, **kw: Any
    ) -> dt.OrchestrationState:
        iid = await self.start_instance(orchestration, input, **kw)
        return await self.client.wait_for_orchestration_completion(iid, timeout=20)

    async def status(self, instance_id: str) -> dt.OrchestrationStatus | None:
        state = await self.client.get_orchestration_state(instance_id)
        return None if state is None else state.runtime_status

    async def wait_status(self, instance_id: str, status: dt.OrchestrationStatus) -> None:
        async def reached() -> bool:
            return await self.status(instance_id) is status

        await wait_until(reached, what=f"{instance_id} to be {status.value}")

    async def wait_custom_status(self, instance_id: str, expected: Any) -> None:
        async def reached() -> bool:
            state = await self.client.get_orchestration_state(instance_id)
            return state is not None and state.custom_status == expected

        await wait_until(reached, what=f"{instance_id} to set custom status {expected!r}")

    async def wait_history(self, instance_id: str, event_type: dt.EventType) -> None:
        async def recorded() -> bool:
            history = await self.client.get_orchestration_history(instance_id)
            return any(e.event_type is event_type for e in history)

        await wait_until(recorded, what=f"{instance_id} to record {event_type.name}")

    async def stop(self) -> None:
        for web in self.webs:
            await web.aclose()
        await super().stop()


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    hub = Hub(f"memory://dashboard-{uuid.uuid4().hex}")
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


@pytest.fixture
def web(hub: Hub) -> httpx.AsyncClient:
    """The default dashboard (no token, actions allowed) on ``hub``."""
    return hub.web()


async def form_post(
    web: httpx.AsyncClient, page: str, data: dict[str, str], *, action: str | None = None
) -> httpx.Response:
    """Open ``page``, then submit its form with ``data`` and the page's CSRF token."""
    shown = await web.get(page)
    assert shown.status_code == 200, shown.text
    return await web.post(action or page, data={"csrf_token": csrf_token(shown.text), **data})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if BROWSER_SKIPPED:
        terminalreporter.write_line(
            f"WARNING: dashboard browser test SKIPPED: {BROWSER_SKIPPED[0]}; "
            "set DURATASK_REQUIRE_BROWSER=1 to make that a failure",
            red=True,
            bold=True,
        )
