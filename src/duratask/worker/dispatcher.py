"""A work-item dispatch loop: fetch, run with bounded concurrency, keep the lease alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from duratask.errors import LeaseLostError

_LOG = logging.getLogger("duratask.worker")
T = TypeVar("T")
_MAX_FETCHERS = 8


class _Slot:
    """The slot a running item holds, until it ends or hands it over."""

    __slots__ = ("dispatcher", "held")

    def __init__(self, dispatcher: Dispatcher[Any]) -> None:
        self.dispatcher = dispatcher
        self.held = True


# The slot of the item the current task is running (each item runs in a task of its own).
_RUNNING_SLOT: ContextVar[_Slot | None] = ContextVar("duratask_running_slot", default=None)


class Dispatcher(Generic[T]):
    """Fetches work items while there is capacity; polls with back-off when idle.

    Up to eight fetches run at once, so a store that commits writes in groups (SQLite)
    leases several items in one commit and a server store leases them in parallel; a fetch
    asks for as many items (up to ``batch``) as there are free slots. Only one
    fetcher polls the store while idle; the others rest until there is work: ``wake()``
    (the worker calls it when it knows new work exists: it just committed some, or a timer
    it created is due) starts one of them, and each fetcher that finds all it asked for
    starts another, so the fetches in flight follow the backlog without a stampede on each
    wake.
    """

    def __init__(
        self,
        name: str,
        fetch: Callable[[int], Awaitable[list[T]]],
        process: Callable[[T], Awaitable[None]],
        renew: Callable[[T], Awaitable[None]],
        *,
        concurrency: int,
        renew_interval: float,
        batch: int = 1,
        min_poll: float = 0.001,
        max_poll: float = 0.25,
        notified: Callable[[float], Awaitable[bool]] | None = None,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._process = process
        self._renew = renew
        self._concurrency = concurrency
        self._batch = batch
        self._renewals = _Renewals(self, renew_interval)
        self._min_poll = min_poll
        self._max_poll = max_poll
        self._notified = notified
        self._slots: asyncio.Semaphore | None = None
        # The loop it runs on, set by run() (kept: asking asyncio for the running loop
        # makes a getpid system call, and each item would ask twice).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resting: deque[asyncio.Event] = deque()
        self._missed_wake = False
        self._stopping = False
        self.in_flight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Start one resting fetcher (or have the next fetch that finds nothing look again)."""
        if self._resting:
            self._resting.popleft().set()
        else:
            self._missed_wake = True

    def stop(self) -> None:
        self._stopping = True
        while self._resting:
            self._resting.popleft().set()

    async def claim(self, wanted: int) -> int:
        """Reserve up to ``wanted`` free slots, without waiting, for items obtained another
        way (:meth:`submit` runs each; :meth:`unclaim` returns the ones not used)."""
        slots = self._slots
        taken = 0
        while slots is not None and not self._stopping and taken < wanted and not slots.locked():
            await slots.acquire()  # returns at once: a slot is free
            taken += 1
        return taken

    async def reserve(self) -> bool:
        """Wait for a free slot and reserve it, as :meth:`claim` does (False once the
        dispatcher is stopping). For work that is cheaper to run here once a slot frees
        than to hand back to the store; it must not wait while holding one of this
        dispatcher's own slots."""
        slots = self._slots
        if slots is None or self._stopping:
            return False
        await slots.acquire()
        if self._stopping:
            slots.release()
            return False
        return True

    def hand_over(self) -> int:
        """Called by a running item of this dispatcher whose own work is done: its slot
        becomes a claimed one (1), for what it is about to :meth:`submit`, and is no longer
        released when the item ends. 0 outside such an item, or if already handed over.

        A finished activity that schedules the next one hands its slot to it, so a worker
        at its limit still starts the next step itself instead of storing it for a fetch."""
        slot = _RUNNING_SLOT.get()
        if slot is None or slot.dispatcher is not self or not slot.held or self._stopping:
            return 0
        slot.held = False
        return 1

    def unclaim(self, count: int) -> None:
        for _ in range(count):
            if self._slots is not None:
                self._slots.release()

    def submit(self, item: T) -> None:
        """Run an item in a slot reserved with :meth:`claim`."""
        assert self._slots is not None and self._loop is not None  # set by run()
        task = self._loop.create_task(self._run_one(item, self._slots))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        slots = self._slots = asyncio.Semaphore(self._concurrency)
        fetchers = min(self._concurrency, _MAX_FETCHERS)
        await asyncio.gather(*(self._fetch_loop(slots, polls=i == 0) for i in range(fetchers)))

    async def _fetch_loop(self, slots: asyncio.Semaphore, *, polls: bool) -> None:
        loop = self._loop
        assert loop is not None  # set by run()
        delay = self._min_poll
        while not self._stopping:
            await slots.acquire()
            if self._stopping:
                slots.release()
                break
            wanted = 1 + await self.claim(self._batch - 1)
            self._missed_wake = False
            try:
                items = await self._fetch(wanted)
            except Exception:
                _LOG.exception(
                    "%s dispatcher: fetching work failed; retrying",
                    self.name,
                    extra={"event": "duratask.dispatcher.fetch_failed", "work": self.name},
                )
                items = []
                delay = self._max_poll
            self.unclaim(wanted - len(items))
            if not items:
                if self._missed_wake:  # work announced during the fetch: look again
                    self._missed_wake = False
                    continue
                await self._rest(delay if polls else None)
                delay = min(delay * 2, self._max_poll)
                continue
            delay = self._min_poll
            if len(items) == wanted:  # there may be more: let another fetcher look too
                self.wake()
            for item in items:
                task = loop.create_task(self._run_one(item, slots))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)

    async def _rest(self, poll: float | None) -> None:
        """Wait for a wake(); the polling fetcher also for a store notification or ``poll``."""
        if self._stopping:  # stop() came during the fetch: it could not wake this rest
            return
        event = asyncio.Event()
        self._resting.append(event)
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(event.wait())]
        if poll is not None and self._notified is not None:
            waits.append(asyncio.ensure_future(self._notified(poll)))
        try:
            await asyncio.wait(waits, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            with contextlib.suppress(ValueError):  # still listed unless a wake() took it
                self._resting.remove(event)
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _run_one(self, item: T, slots: asyncio.Semaphore) -> None:
        # Most items finish long before their lease needs renewing: no timer of their own.
        lease = self._renewals.start(item)
        slot = _Slot(self)
        _RUNNING_SLOT.set(slot)
        try:
            await self._process(item)
        except Exception:
            _LOG.exception(
                "%s dispatcher: processing a work item failed",
                self.name,
                extra={"event": "duratask.dispatcher.process_failed", "work": self.name},
            )
        finally:
            self._renewals.end(lease)
            if slot.held:
                slots.release()

    async def _renew_once(self, item: T) -> bool:
        """Renew the item's lease; False once it is lost (then it is not renewed again)."""
        try:
            await self._renew(item)
        except LeaseLostError:
            _LOG.warning(
                "%s dispatcher: lease lost while the work item was running",
                self.name,
                extra={"event": "duratask.lease.lost", "work": self.name},
            )
            return False
        except Exception:
            _LOG.exception(
                "%s dispatcher: renewing a lease failed",
                self.name,
                extra={"event": "duratask.lease.renew_failed", "work": self.name},
            )
        return True


class _Lease(Generic[T]):
    """A running item's lease: when it is next due for renewal, and the renewal under way."""

    __slots__ = ("due", "item", "task")

    def __init__(self, item: T, due: float) -> None:
        self.item = item
        self.due = due
        self.task: asyncio.Task[None] | None = None


class _Renewals(Generic[T]):
    """Keeps the leases of a dispatcher's running items alive: each is renewed every
    ``interval`` (at most half an interval late) while it runs.

    One timer serves them all, ticking every half interval while any item runs: most
    items end long before their first renewal, and a timer of their own (scheduled, then
    cancelled) would cost each of them more than a set entry does.
    """

    def __init__(self, dispatcher: Dispatcher[T], interval: float) -> None:
        self._dispatcher = dispatcher
        self._interval = interval
        self._running: set[_Lease[T]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, item: T) -> _Lease[T]:
        loop = self._dispatcher._loop
        assert loop is not None, "the dispatcher is running"
        lease = _Lease(item, loop.time() + self._interval)
        self._running.add(lease)
        if self._timer is None:
            self._timer = loop.call_later(self._interval / 2, self._tick)
        return lease

    def end(self, lease: _Lease[T]) -> None:
        self._running.discard(lease)
        if lease.task is not None:
            lease.task.cancel()

    def _tick(self) -> None:
        self._timer = None
        if not self._running:
            return
        loop = self._dispatcher._loop
        assert loop is not None
        now = loop.time()
        for lease in self._running:
            if lease.due <= now and lease.task is None:
                lease.task = loop.create_task(self._renew(lease))
        self._timer = loop.call_later(self._interval / 2, self._tick)

    async def _renew(self, lease: _Lease[T]) -> None:
        loop = self._dispatcher._loop
        assert loop is not None
        try:
            if await self._dispatcher._renew_once(lease.item):
                lease.due = loop.time() + self._interval
            else:  # lost: it is not renewed again
                self._running.discard(lease)
        finally:
            lease.task = None
