"""A worker's scheduler: it sleeps until the next schedule falls due (or a store says one
changed), then claims each due schedule, starts what is due and releases it.

Idle cost: one indexed read of the earliest due time per poll, however many schedules the
hub holds. A claim is a revision-checked write that moves the schedule's due time to the end
of the claim, so other workers leave it alone meanwhile and take it over if this one dies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from duratask._schedule_codec import definition_from_json, state_from_json, state_to_json
from duratask._schedule_plan import Look, next_due_at
from duratask.backends._wakeups import SCHEDULE
from duratask.backends.base import ScheduleRecord, SupportsWakeUps, TaskHubStore

_LOG = logging.getLogger("duratask.worker")
POLL = 1.0  # longest sleep (seconds) between two looks for due schedules
BATCH = 50  # due schedules read at once


class Scheduler:
    """Fires the hub's schedules from one worker."""

    def __init__(
        self,
        store: TaskHubStore,
        owner: str,
        clock: Callable[[], datetime],
        claim: timedelta,
    ) -> None:
        self._store = store
        self._owner = owner
        self._clock = clock
        self._claim = claim
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start firing in the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._keep_firing())

    async def stop(self) -> None:
        """Stop firing, letting a look in progress finish."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _keep_firing(self) -> None:
        pushes = self._store if isinstance(self._store, SupportsWakeUps) else None
        while not self._stopping.is_set():
            timeout = POLL
            try:
                if await self.fire_due():
                    continue
                due = await self._store.next_schedule_due_at()
                if due is not None:
                    timeout = min(POLL, max(0.0, (due - self._clock()).total_seconds()))
            except Exception as exc:  # a store outage: look again after a poll
                _LOG.warning(
                    "worker %s: could not fire schedules: %s",
                    self._owner,
                    exc,
                    extra={"event": "duratask.schedule.fire_failed", "error": str(exc)},
                )
            if timeout > 0:
                await self._rest(pushes, timeout)

    async def _rest(self, pushes: SupportsWakeUps | None, timeout: float) -> None:
        """Wait ``timeout`` s, or less if a store says a schedule changed or stop() came."""
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._stopping.wait())]
        if pushes is not None:
            waits.append(
                asyncio.ensure_future(pushes.wait_for_notification(timeout, kind=SCHEDULE))
            )
        try:
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if any(not w.cancelled() and w.exception() is not None for w in done):
                # The store could not wait (closed, or it refused the kind): sleep instead,
                # never spin.
                await asyncio.wait([waits[0]], timeout=timeout)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def fire_due(self) -> bool:
        """Look at the schedules due now; True if there may be more due."""
        now = self._clock()
        records = await self._store.due_schedules(now, BATCH)
        for record in records:
            await self._look(record, now)
        return len(records) == BATCH

    async def _look(self, record: ScheduleRecord, now: datetime) -> None:
        claimed = replace(
            record, claimed_by=self._owner, next_due_at=now + self._claim, updated_at=now
        )
        if not await self._store.update_schedule(claimed):
            return  # changed meanwhile, or another worker claimed it
        definition = definition_from_json(record.definition)
        look = Look(self._store, record.schedule_id, definition, state_from_json(record.state), now)
        state = await look.run()
        done = replace(
            claimed,
            state=state_to_json(state),
            next_due_at=next_due_at(record.schedule_id, definition, state, now),
            claimed_by=None,
            revision=claimed.revision + 1,
        )
        if not await self._store.update_schedule(done):
            _LOG.warning(
                "worker %s: lost its claim on schedule %r while firing it",
                self._owner,
                record.schedule_id,
                extra={"event": "duratask.schedule.claim_lost", "schedule_id": record.schedule_id},
            )
            return
        for run_id in look.started:
            _LOG.info(
                "schedule %r started %r",
                record.schedule_id,
                run_id,
                extra={
                    "event": "duratask.schedule.run_started",
                    "schedule_id": record.schedule_id,
                    "instance_id": run_id,
                },
            )
