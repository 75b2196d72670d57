"""An in-process task hub on a virtual clock: days of timers pass in milliseconds.

The hub's memory store, worker and client share one :class:`VirtualClock`. The clock stands
still until the test moves it (:meth:`TimeSkippingHub.advance`) or, with ``auto_skip``, until
a client wait finds the hub idle: nothing can run (no due message, no running episode or
activity) and the waited-for instance is not there yet. Then the clock jumps to the next due
time (a timer, an event timeout, a retry back-off, a delayed start) and the store wakes the
worker, whose idle wait is cut short by the store's push wake-up.

Idleness is read from the store's content (:meth:`MemoryOrchestrationService.work_outlook`),
never guessed from elapsed wall time: every worker step holds a lease or a stored work item
until it commits, so an idle store stays idle until the clock moves or a client acts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from duratask.backends.memory import MemoryOrchestrationService, WorkOutlook
from duratask.client import AsyncTaskHubClient
from duratask.converter import DEFAULT_MAX_PAYLOAD_BYTES, DataConverter
from duratask.state import OrchestrationState, OrchestrationStatus
from duratask.testing._clock import VirtualClock
from duratask.worker import TaskHubWorker

__all__ = ["TimeSkippingHub"]

_LOG = logging.getLogger("duratask.testing")
_POLL_MAX = 0.01  # seconds between looks at the store while work is running

StatusCheck = Callable[[OrchestrationStatus], bool]


def is_started(status: OrchestrationStatus) -> bool:
    """What ``wait_for_orchestration_start`` waits for."""
    return status is not OrchestrationStatus.PENDING


def is_finished(status: OrchestrationStatus) -> bool:
    """What ``wait_for_orchestration_completion`` waits for."""
    return status.is_terminal


class TimeSkippingHub:
    """A memory task hub, a worker and an async client on one virtual clock.

    Use it as ``async with TimeSkippingHub() as hub:``; register functions on ``hub.worker``
    (or with :meth:`register`) and drive instances with ``hub.client``. ``start`` is the
    initial virtual time (default: the real time now). ``idle_timeout`` is how many real
    seconds :meth:`advance` and :meth:`wait_until_idle` wait for running work to finish.
    Other keyword arguments go to :class:`~duratask.TaskHubWorker`; its ``unknown_work`` is
    ``"fail"`` here (the hub's one worker is all there is: an orchestration or activity it
    has not registered fails at once rather than wait for another worker), and its
    ``verify_replay`` is True: every episode replays the history and checks it strictly, so
    orchestration code that is not deterministic (the clock, random numbers, I/O) fails
    with :class:`~duratask.NonDeterminismError` in its first test run. Pass
    ``verify_replay=False`` to run with the orchestration cache, as production workers do.

    Attributes:
        auto_skip: Whether the client's waits skip virtual time while the hub is idle.
        clock: The virtual clock the store, the worker and the client share.
        store: The hub's memory store.
        worker: The hub's worker: register orchestrations and activities on it.
        client: An async client of the hub, whose waits skip virtual time.
    """

    def __init__(
        self,
        *,
        auto_skip: bool = True,
        start: datetime | None = None,
        data_converter: DataConverter | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        idle_timeout: float = 30.0,
        **worker_options: Any,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive, got {idle_timeout!r}")
        self.auto_skip = auto_skip
        self.clock = VirtualClock(start)
        self.store = MemoryOrchestrationService(clock=self.clock)
        worker_options.setdefault("unknown_work", "fail")
        worker_options.setdefault("verify_replay", True)
        self.worker = TaskHubWorker(
            self.store,
            clock=self.clock,
            data_converter=data_converter,
            max_payload_bytes=max_payload_bytes,
            **worker_options,
        )
        self.client: AsyncTaskHubClient = _TimeSkippingClient(
            self,
            self.store,
            data_converter=data_converter,
            max_payload_bytes=max_payload_bytes,
            clock=self.clock,
        )
        self._idle_timeout = idle_timeout
        self._run: asyncio.Task[None] | None = None

    @property
    def now(self) -> datetime:
        """The hub's current virtual time (aware UTC)."""
        return self.clock.now

    def register(
        self,
        *orchestrations: Callable[..., Any],
        activities: tuple[Any, ...] = (),
        entities: tuple[Any, ...] = (),
    ) -> None:
        """Register orchestrations, activities and entities on the hub's worker under their
        own names."""
        for fn in orchestrations:
            self.worker.add_orchestration(fn)
        for fn in activities:
            self.worker.add_activity(fn)
        for entity in entities:
            self.worker.add_entity(entity)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker in the running event loop."""
        if self._run is not None:
            raise RuntimeError("the hub is already started")
        self._run = asyncio.create_task(self.worker.run(), name="duratask-testing-worker")
        # One turn of the loop lets run() reach its first await; from then on shutdown()
        # reaches it (called any earlier, shutdown() would find nothing to stop).
        await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop the worker (letting running work finish) and close the client."""
        run, self._run = self._run, None
        try:
            if run is not None:
                await self.worker.shutdown()
                await run
        finally:
            await self.client.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- moving time -------------------------------------------------------------------------
    async def advance(self, delta: timedelta) -> datetime:
        """Let ``delta`` of virtual time pass; return the new time. See :meth:`advance_to`."""
        if delta < timedelta(0):
            raise ValueError(f"cannot advance by a negative time ({delta})")
        return await self.advance_to(self.clock.now + delta)

    async def advance_to(self, when: datetime) -> datetime:
        """Let virtual time pass up to ``when`` (aware); return it.

        Work that can run now finishes first. Then the clock steps from one due time to the
        next, and what falls due at each step (timers, event timeouts, retries) runs before
        the next step, so a timer created by a fired timer fires too if it is due by ``when``.
        Returns once the hub is idle at ``when``; later timers stay pending.
        """
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"advance_to needs a timezone-aware datetime, got naive {when!r}")
        if when < self.clock.now:
            raise ValueError(
                f"cannot go back in time: {when.isoformat()} is before the hub's virtual time "
                f"{self.clock.now.isoformat()}"
            )
        while True:
            due = (await self._until_idle()).next_due_at
            if due is None or due > when:
                break
            self._jump(due)
        self._jump(when)
        await self._until_idle()
        return self.clock.now

    async def wait_until_idle(self) -> None:
        """Wait until nothing can run without the clock moving (or a client acting)."""
        await self._until_idle()

    def _jump(self, when: datetime) -> None:
        if when > self.clock.now:
            self.clock.advance_to(when)
        self.store.clock_moved()

    def _check_running(self) -> None:
        run = self._run
        if run is None:
            raise RuntimeError("the hub is not started: use `async with TimeSkippingHub() as hub`")
        if run.done():
            error = None if run.cancelled() else run.exception()
            raise RuntimeError("the hub's worker has stopped") from error

    async def _until_idle(self) -> WorkOutlook:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_timeout
        delay = 0.0
        while True:
            self._check_running()
            outlook = self.store.work_outlook()
            if not outlook.busy:
                return outlook
            if loop.time() > deadline:
                raise TimeoutError(
                    f"the hub was still busy after {self._idle_timeout:g}s of real time "
                    f"(running or runnable: {', '.join(outlook.busy)}); is an activity blocked?"
                )
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.0005), _POLL_MAX)

    # -- skipping time while a client waits ----------------------------------------------------
    async def _skip_while_waiting(self, instance_id: str, done: StatusCheck) -> None:
        """Jump to the next due time whenever the hub is idle and the instance is not ``done``.

        The store is read before the instance: an idle store cannot change the instance, so
        a not-yet-done instance seen afterwards is still not done when the clock jumps.
        """
        delay = 0.0
        while True:
            outlook = self.store.work_outlook()
            if not outlook.busy and outlook.next_due_at is not None:
                state = await self.store.get_instance(instance_id)
                if state is None or done(state.runtime_status):
                    return
                self._jump(outlook.next_due_at)
                delay = 0.0
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.0005), _POLL_MAX)

    async def _begin_skipping(self, instance_id: str, done: StatusCheck) -> asyncio.Task[None]:
        """Start skipping time for a waiter (a task on the hub's event loop)."""
        return asyncio.create_task(self._guarded_skipping(instance_id, done))

    async def _end_skipping(self, skipper: asyncio.Task[None]) -> None:
        skipper.cancel()
        await asyncio.gather(skipper, return_exceptions=True)

    async def _guarded_skipping(self, instance_id: str, done: StatusCheck) -> None:
        try:
            await self._skip_while_waiting(instance_id, done)
        except Exception:
            _LOG.exception("skipping virtual time for %r failed", instance_id)

    async def _wait_skipping(
        self, wait: Awaitable[OrchestrationState], instance_id: str, done: StatusCheck
    ) -> OrchestrationState:
        if not self.auto_skip:
            return await wait
        skipper = await self._begin_skipping(instance_id, done)
        try:
            return await wait
        finally:
            await self._end_skipping(skipper)


class _TimeSkippingClient(AsyncTaskHubClient):
    """The hub's async client: its waits skip virtual time when the hub auto-skips."""

    def __init__(self, hub: TimeSkippingHub, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hub = hub

    async def wait_for_orchestration_start(
        self, instance_id: str, timeout: float | timedelta = 60
    ) -> OrchestrationState:
        """See :meth:`AsyncTaskHubClient.wait_for_orchestration_start`; skips virtual time."""
        wait = super().wait_for_orchestration_start(instance_id, timeout)
        return await self._hub._wait_skipping(wait, instance_id, is_started)

    async def wait_for_orchestration_completion(
        self, instance_id: str, timeout: float | timedelta = 60
    ) -> OrchestrationState:
        """See :meth:`AsyncTaskHubClient.wait_for_orchestration_completion`; skips virtual
        time."""
        wait = super().wait_for_orchestration_completion(instance_id, timeout)
        return await self._hub._wait_skipping(wait, instance_id, is_finished)
