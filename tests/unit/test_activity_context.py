"""An activity's context variables stay with it: async activities as sync ones."""

from __future__ import annotations

import asyncio
import contextvars
from datetime import UTC, datetime

import duratask as dt
from duratask.backends.base import ActivityRequest, ActivityWorkItem
from duratask.converter import PayloadCodec
from duratask.worker._activity_runner import run_activity
from duratask.worker._threads import DaemonThreadPool

request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="none")


async def tag_async(ctx: dt.ActivityContext, value: str) -> str:
    request_tag.set(value)
    return request_tag.get()


def tag_sync(ctx: dt.ActivityContext, value: str) -> str:
    request_tag.set(value)
    return request_tag.get()


def _item(name: str, value: str) -> ActivityWorkItem:
    request = ActivityRequest("i", "e", 1, name, input=f'"{value}"')
    return ActivityWorkItem(1, request, "token", datetime.now(UTC))


def test_a_context_variable_an_activity_sets_does_not_leak_into_its_runner() -> None:
    worker = dt.TaskHubWorker("memory://")
    worker.add_activity(tag_async)
    worker.add_activity(tag_sync)
    pool = DaemonThreadPool(1, "test-activity")

    async def main() -> list[tuple[str, str]]:
        seen = []
        for name in ("tag_async", "tag_sync"):
            message = await run_activity(
                _item(name, name + "-value"),
                worker.registry,
                PayloadCodec(),
                pool,
                lambda: datetime.now(UTC),
            )
            assert isinstance(message.event, dt.history.TaskCompleted)
            seen.append((message.event.result or "", request_tag.get()))
        return seen

    try:
        seen = asyncio.run(main())
    finally:
        pool.shutdown()
    # Each activity saw its own value; the runner's context kept the default.
    assert seen == [('"tag_async-value"', "none"), ('"tag_sync-value"', "none")]
