"""Drive a worker one step at a time, so a test decides exactly what happens when.

An orchestration step leases the next instance with visible messages and runs one episode
through the worker's own episode processing (with its orchestration cache); an activity step
leases the next activity, runs it and completes it as the worker does. Nothing runs in the
background, and time is the test's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import duratask as dt
from duratask.backends.base import ActivityWorkItem, OrchestrationWorkItem, TaskHubStore
from duratask.converter import PayloadCodec
from duratask.worker._activity_runner import run_activity
from duratask.worker._threads import DaemonThreadPool

LEASE = timedelta(minutes=5)


class Stepper:
    """A worker driven step by step against ``store`` (already opened)."""

    def __init__(
        self,
        store: TaskHubStore,
        clock: Callable[[], datetime],
        *,
        orchestrations: tuple[Callable[..., Any], ...] = (),
        activities: tuple[Callable[..., Any], ...] = (),
        orchestration_cache_size: int = 1000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker = dt.TaskHubWorker(
            store, clock=clock, orchestration_cache_size=orchestration_cache_size
        )
        for fn in orchestrations:
            self.worker.add_orchestration(fn)
        for fn in activities:
            self.worker.add_activity(fn)
        self._codec = PayloadCodec()
        self._pool = DaemonThreadPool(1, "stepper-activity")
        self.worker._build_runtime()  # episodes without the dispatch loops

    def close(self) -> None:
        self._pool.shutdown()

    async def orchestration_step(self) -> OrchestrationWorkItem | None:
        """Run one episode of the next instance with visible messages; None if there is none."""
        cache = self.worker.orchestration_cache
        item = await self.store.lock_next_orchestration_work_item(
            self.worker.worker_id, LEASE, cache.marks() if cache.enabled else None
        )
        if item is not None:
            # The worker's own unit of work: cache lookup, episode, commit, cache update.
            await self.worker._process_orchestration(item)
        return item

    async def activity_step(self) -> ActivityWorkItem | None:
        """Run the next visible activity and commit its result; None if there is none."""
        leased = await self.store.lock_next_activity_work_items(self.worker.worker_id, LEASE)
        if not leased:
            return None
        item = leased[0]
        result = await run_activity(item, self.worker.registry, self._codec, self._pool, self.clock)
        await self.store.complete_activity_work_item(item, result)
        return item
