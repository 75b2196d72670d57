"""A task hub for end-to-end tests: a worker running in the test's event loop and a client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

import duratask as dt


class TaskHub:
    """A worker and a client on one store URL. Register functions, then ``await start()``."""

    def __init__(self, url: str, **worker_options: Any) -> None:
        self.url = url
        worker_options.setdefault("lease_duration", timedelta(seconds=10))
        self.worker = dt.TaskHubWorker(url, **worker_options)
        self.client = dt.AsyncTaskHubClient(url)
        self._run: asyncio.Task[None] | None = None

    def register(
        self, *orchestrations: Callable[..., Any], activities: tuple[Any, ...] = ()
    ) -> None:
        for fn in orchestrations:
            self.worker.add_orchestration(fn)
        for fn in activities:
            self.worker.add_activity(fn)

    async def start(self) -> None:
        self._run = asyncio.create_task(self.worker.run())
        await asyncio.sleep(0)  # let run() begin, so an early stop() finds it to shut down

    async def stop(self) -> None:
        if self._run is not None:
            await self.worker.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._run, timeout=30)
            self._run = None
        await self.client.close()

    async def run(
        self, orchestration: Any, input: Any = None, **kwargs: Any
    ) -> dt.OrchestrationState:
        """Schedule an orchestration and wait for it to finish."""
        iid = await self.client.schedule_new_orchestration(orchestration, input=input, **kwargs)
        return await self.client.wait_for_orchestration_completion(iid, timeout=30)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll an async condition until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def stays(
    client: dt.AsyncTaskHubClient, iid: str, status: dt.OrchestrationStatus, seconds: float
) -> None:
    """The instance keeps ``status`` while a worker that cannot run it polls a while."""
    with pytest.raises(dt.OrchestrationWaitTimeoutError):
        await client.wait_for_orchestration_completion(iid, timeout=seconds)
    state = await client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status is status
