"""A work-item dispatch loop: fetch, run with bounded concurrency, keep the lease alive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from duratask.errors import LeaseLostError

_LOG = logging.getLogger("duratask.worker")
T = TypeVar("T")
_MAX_FETCHERS = 8


class Dispatcher(Generic[T]):
    """Fetches work items while there is capacity; polls with back-off when idle.

    ``wake()`` cuts an idle wait short: the worker calls it when it knows new work exists
    (it just committed some, or a timer it created is due).
    """

    def __init__(
        self,
        name: str,
        fetch: Callable[[], Awaitable[T | None]],
        process: Callable[[T], Awaitable[None]],
        renew: Callable[[T], Awaitable[None]],
        *,
        concurrency: int,
        renew_interval: float,
        min_poll: float = 0.001,
        max_poll: float = 0.25,
        notified: Callable[[float], Awaitable[bool]] | None = None,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._process = process
        self._renew = renew
        self._concurrency = concurrency
        self._renew_interval = renew_interval
        self._min_poll = min_poll
        self._max_poll = max_poll
        self._notified = notified
        self._wake = asyncio.Event()
        self._stopping = False
        self.in_flight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        # Several fetches in flight at once: a store that commits writes in groups (SQLite)
        # leases them all in one commit, and a server store leases them in parallel.
        fetchers = min(self._concurrency, _MAX_FETCHERS)
        await asyncio.gather(*(self._fetch_loop(slots) for _ in range(fetchers)))

    async def _fetch_loop(self, slots: asyncio.Semaphore) -> None:
        delay = self._min_poll
        while not self._stopping:
            await slots.acquire()
            if self._stopping:
                slots.release()
                break
            # Cleared before fetching, so a wake() during the fetch is not lost.
            self._wake.clear()
            try:
                item = await self._fetch()
            except Exception:
                _LOG.exception(
                    "%s dispatcher: fetching work failed; retrying",
                    self.name,
                    extra={"event": "duratask.dispatcher.fetch_failed", "work": self.name},
                )
                item = None
                delay = self._max_poll
            if item is None:
                slots.release()
                await self._idle(delay)
                delay = min(delay * 2, self._max_poll)
                continue
            delay = self._min_poll
            task = asyncio.create_task(self._run_one(item, slots))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _idle(self, delay: float) -> None:
        """Wait for a local wake(), a store notification, or the poll delay."""
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if self._notified is not None:
            waits.append(asyncio.ensure_future(self._notified(delay)))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _run_one(self, item: T, slots: asyncio.Semaphore) -> None:
        renewer = asyncio.create_task(self._keep_lease(item))
        try:
            await self._process(item)
        except Exception:
            _LOG.exception(
                "%s dispatcher: processing a work item failed",
                self.name,
                extra={"event": "duratask.dispatcher.process_failed", "work": self.name},
            )
        finally:
            renewer.cancel()
            slots.release()

    async def _keep_lease(self, item: T) -> None:
        while True:
            await asyncio.sleep(self._renew_interval)
            try:
                await self._renew(item)
            except LeaseLostError:
                _LOG.warning(
                    "%s dispatcher: lease lost while the work item was running",
                    self.name,
                    extra={"event": "duratask.lease.lost", "work": self.name},
                )
                return
            except Exception:
                _LOG.exception(
                    "%s dispatcher: renewing a lease failed",
                    self.name,
                    extra={"event": "duratask.lease.renew_failed", "work": self.name},
                )
