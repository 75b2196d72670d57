"""The worker, store URLs and the testing helpers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import assert_type

import duratask as dt
from duratask.backends import TaskHubStore, open_store
from duratask.backends.memory import MemoryOrchestrationService
from duratask.testing import (
    ReplayResult,
    SyncTimeSkippingHub,
    TimeSkippingHub,
    VirtualClock,
    replay,
    replay_many,
)


async def greet(ctx: dt.OrchestrationContext, name: str) -> str:
    return f"Hello, {name}!"


def say_hello(ctx: dt.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def check_worker(worker: dt.TaskHubWorker) -> None:
    assert_type(worker.add_orchestration(greet), str)
    assert_type(worker.add_orchestration(greet, name="hello", version="2"), str)
    assert_type(worker.add_activity(say_hello), str)
    assert_type(worker.store, TaskHubStore)
    assert_type(worker.start(), None)
    assert_type(worker.stop(), None)


def check_open_store(memory: MemoryOrchestrationService) -> None:
    assert_type(open_store("sqlite:///hub.db"), TaskHubStore)
    assert_type(open_store(memory), MemoryOrchestrationService)


async def check_time_skipping_hub(hub: TimeSkippingHub) -> None:
    assert_type(hub.client, dt.AsyncTaskHubClient)
    assert_type(hub.worker, dt.TaskHubWorker)
    assert_type(hub.store, MemoryOrchestrationService)
    assert_type(hub.clock, VirtualClock)
    assert_type(hub.now, datetime)
    assert_type(await hub.advance(timedelta(days=1)), datetime)
    async with TimeSkippingHub() as entered:
        assert_type(entered, TimeSkippingHub)


def check_sync_time_skipping_hub(hub: SyncTimeSkippingHub) -> None:
    assert_type(hub.client, dt.TaskHubClient)
    assert_type(hub.worker, dt.TaskHubWorker)
    assert_type(hub.advance(timedelta(days=1)), datetime)
    with SyncTimeSkippingHub() as entered:
        assert_type(entered, SyncTimeSkippingHub)


def check_replay(history: list[dt.HistoryEvent]) -> None:
    result = replay(greet, history)
    assert_type(result, ReplayResult)
    assert_type(result.status, dt.OrchestrationStatus)
    assert_type(result.failure, dt.FailureDetails | None)
    assert_type(replay_many(greet, [history]), list[ReplayResult])
