"""The workers running in this process, by task hub, for eager start.

A client that starts an instance on a hub where a worker of its own process runs offers the
start to that worker first (:func:`start_locally`). A worker with a free slot that
registered the orchestration creates the instance through its store, leased to itself in
the same transaction, and runs the first episode at once: no wake-up, no fetch, no lease
commit of its own. Otherwise the client creates the instance as usual.

A worker may run on another event loop (``TaskHubWorker.start()`` gives it a thread of its
own): the offer then runs on the worker's loop, where its store and dispatchers live, and
the client awaits it from its own. A worker that stops first refuses new offers, then waits
for those under way, so none is left waiting on a loop that has gone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable

from duratask.backends.base import OrchestrationMessage
from duratask.state import OrchestrationStatus

StartHere = Callable[[OrchestrationMessage, frozenset[OrchestrationStatus]], Awaitable[bool]]
"""A worker's eager start: True if it created the instance (leased to itself and running,
or, when the store could not lease it, left to the fetchers), False if it did nothing."""

_lock = threading.Lock()
_workers: dict[Hashable, tuple[LocalWorker, ...]] = {}


class LocalWorker:
    """One running worker's place in the registry, on the hub ``hub``."""

    def __init__(self, hub: Hashable, start_here: StartHere) -> None:
        self._hub = hub
        self._start_here = start_here
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._under_way = 0
        self._none_under_way = asyncio.Event()
        with _lock:
            _workers[hub] = (*_workers.get(hub, ()), self)

    async def close(self) -> None:
        """Refuse new offers and wait for those under way (on the worker's loop)."""
        with _lock:
            self._closed = True
            left = tuple(w for w in _workers.get(self._hub, ()) if w is not self)
            if left:
                _workers[self._hub] = left
            else:
                _workers.pop(self._hub, None)
            idle = self._under_way == 0
        if not idle:
            await self._none_under_way.wait()

    async def offer(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> bool:
        """Offer the start; False if the worker stopped or did nothing."""
        with _lock:
            if self._closed:
                return False
            self._under_way += 1
        running = self._run(message, replaceable)
        if asyncio.get_running_loop() is self._loop:
            return await running
        try:
            handed = asyncio.run_coroutine_threadsafe(running, self._loop)
        except RuntimeError:  # its loop closed without stopping the worker: it died
            running.close()
            self._done()
            return False
        return await asyncio.wrap_future(handed)

    async def _run(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> bool:
        try:
            return await self._start_here(message, replaceable)
        finally:
            self._done()

    def _done(self) -> None:
        with _lock:
            self._under_way -= 1
            idle = self._under_way == 0 and self._closed
        if idle:
            self._loop.call_soon_threadsafe(self._none_under_way.set)


def any_running() -> bool:
    """Whether any worker runs in this process (a look without a lock: a hint)."""
    return bool(_workers)


async def start_locally(
    hub: Hashable, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
) -> bool:
    """Offer a start to the workers of this process on ``hub``, one after the other; True
    once one created the instance, False if none did (the caller creates it)."""
    for worker in _workers.get(hub, ()):
        if await worker.offer(message, replaceable):
            return True
    return False
