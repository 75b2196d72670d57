"""A work-item dispatch loop: fetch, run with bounded concurrency, keep the lease alive.

Concurrency is counted in slots. Whoever wants to run an item takes a :class:`Permit` for a
slot first (:meth:`Dispatcher.try_reserve` without waiting, :meth:`Dispatcher.reserve`
waiting), then either submits an item with it or releases it; ``with permit:`` releases it
on the way out unless it was submitted. The item holds the slot while it runs, and may hand
it over to the next item it makes (:meth:`Permit.hand_over`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from duratask.errors import LeaseLostError

_LOG = logging.getLogger("duratask.worker")
T = TypeVar("T")
_MAX_FETCHERS = 8


class _Slots:
    """Free slots, and the reservations waiting for one (served first come, first served)."""

    __slots__ = ("free", "waiting")

    def __init__(self, count: int) -> None:
        self.free = count
        self.waiting: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # granted as it was cancelled: pass the slot on
            else:
                self.waiting.remove(waiter)
            raise

    def give_back(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the waiter as it is
                return
        self.free += 1


class Permit(Generic[T]):
    """A reserved slot of a :class:`Dispatcher`: submit one item with it, or release it.

    Releasing is idempotent; as a context manager the permit is released on exit unless it
    was submitted (or handed over) inside the block.
    """

    __slots__ = ("_dispatcher", "_state")

    def __init__(self, dispatcher: Dispatcher[T]) -> None:
        self._dispatcher = dispatcher
        self._state = "reserved"  # then "running" (submitted), "spent" or "released"

    @property
    def dispatcher(self) -> Dispatcher[T]:
        return self._dispatcher

    def submit(self, item: T) -> None:
        """Run ``item`` in this slot; the slot is freed when the item ends."""
        if self._state != "reserved":
            raise RuntimeError(f"a permit that is {self._state} cannot run an item")
        self._state = "running"
        self._dispatcher._start(item, self)

    def hand_over(self) -> Permit[T]:
        """For the item running with this permit: a new permit for the same slot, for the
        next item it is about to submit. This one is spent: its end frees nothing."""
        if self._state != "running":
            raise RuntimeError(f"a permit that is {self._state} cannot be handed over")
        self._state = "spent"
        return Permit(self._dispatcher)

    def release(self) -> None:
        """Free the slot (unless it was handed over or already freed)."""
        if self._state in ("reserved", "running"):
            self._state = "released"
            self._dispatcher._slots.give_back()

    def __enter__(self) -> Permit[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state == "reserved":
            self.release()


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

    ``process(item, permit)`` runs each item; ``permit`` is the slot it runs in (see
    :meth:`Permit.hand_over`).
    """

    def __init__(
        self,
        name: str,
        fetch: Callable[[int], Awaitable[list[T]]],
        process: Callable[[T, Permit[T]], Awaitable[None]],
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
        self._slots = _Slots(concurrency)
        # The loop it runs on, set by run() (kept: asking asyncio for the running loop
        # makes a getpid system call, and each item would ask twice).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resting: deque[asyncio.Event] = deque()
        self._missed_wake = False
        self._stopping = False
        self.in_flight: set[asyncio.Task[None]] = set()
        # Items that run alone (see alone()): those waiting for their turn, and the gate
        # that keeps new items from starting meanwhile.
        self._alone_waiting: set[asyncio.Task[Any]] = set()
        self._alone_turn = asyncio.Lock()
        self._no_one_alone = asyncio.Event()
        self._no_one_alone.set()

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

    def try_reserve(self) -> Permit[T] | None:
        """A permit for a free slot, or None (no slot free, stopping, or an item is to run
        alone); never waits."""
        if (
            self._stopping
            or self._loop is None
            or self._alone_waiting
            or not self._slots.try_take()
        ):
            return None
        return Permit(self)

    @property
    def someone_alone(self) -> bool:
        """Whether an item waits to run alone, or runs alone, now."""
        return bool(self._alone_waiting)

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """For the item running in the current task: wait until no other item of this
        dispatcher runs, then run the block while none starts. Items waiting for their turn
        to run alone wait one after the other."""
        me = asyncio.current_task()
        assert me is not None
        self._alone_waiting.add(me)
        self._no_one_alone.clear()
        try:
            async with self._alone_turn:
                while others := [
                    t for t in self.in_flight if t is not me and t not in self._alone_waiting
                ]:
                    # Look again now and then: one of them may come to wait its turn too.
                    await asyncio.wait(others, timeout=0.05)
                yield
        finally:
            self._alone_waiting.discard(me)
            if not self._alone_waiting:
                self._no_one_alone.set()
                self.wake()

    async def reserve(self) -> Permit[T] | None:
        """Wait for a free slot and reserve it (None once the dispatcher is stopping). For
        work that is cheaper to run here once a slot frees than to hand back to the store;
        it must not wait while holding one of this dispatcher's own slots."""
        if self._stopping or self._loop is None:
            return None
        while True:
            await self._no_one_alone.wait()
            await self._slots.take()
            if self._stopping:
                self._slots.give_back()
                return None
            if not self._alone_waiting:
                return Permit(self)
            self._slots.give_back()  # an item is to run alone meanwhile: wait for it

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        fetchers = min(self._concurrency, _MAX_FETCHERS)
        await asyncio.gather(*(self._fetch_loop(polls=i == 0) for i in range(fetchers)))

    def _start(self, item: T, permit: Permit[T]) -> None:
        assert self._loop is not None  # a permit exists only once run() has begun
        task = self._loop.create_task(self._run_one(item, permit))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _fetch_loop(self, *, polls: bool) -> None:
        delay = self._min_poll
        while not self._stopping:
            first = await self.reserve()
            if first is None:
                break
            permits = [first]
            while len(permits) < self._batch and (extra := self.try_reserve()) is not None:
                permits.append(extra)
            self._missed_wake = False
            try:
                items = await self._fetch(len(permits))
            except Exception:
                _LOG.exception(
                    "%s dispatcher: fetching work failed; retrying",
                    self.name,
                    extra={"event": "duratask.dispatcher.fetch_failed", "work": self.name},
                )
                items = []
                delay = self._max_poll
            for permit, item in zip(permits, items, strict=False):
                permit.submit(item)
            for permit in permits[len(items) :]:
                permit.release()
            if not items:
                if self._missed_wake:  # work announced during the fetch: look again
                    self._missed_wake = False
                    continue
                await self._rest(delay if polls else None)
                delay = min(delay * 2, self._max_poll)
                continue
            delay = self._min_poll
            if len(items) == len(permits):  # there may be more: let another fetcher look too
                self.wake()
            # Let the items just submitted start before this fetcher looks again: a look
            # that finds nothing can run without yielding (a store read on the loop), and
            # would hold up their start.
            await asyncio.sleep(0)

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

    async def _run_one(self, item: T, permit: Permit[T]) -> None:
        # Most items finish long before their lease needs renewing: no timer of their own.
        lease = self._renewals.start(item)
        try:
            await self._process(item, permit)
        except Exception:
            _LOG.exception(
                "%s dispatcher: processing a work item failed",
                self.name,
                extra={"event": "duratask.dispatcher.process_failed", "work": self.name},
            )
        finally:
            self._renewals.end(lease)
            permit.release()

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
