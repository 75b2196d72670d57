"""Which relaxed commits (committed without waiting for the disk) a durable one has covered.

A store whose log is sequential (SQLite's WAL, PostgreSQL's WAL) makes every commit before a
durable one durable with it. The store counts its relaxed commits, notes the count as each
durable commit begins and records it as covered once that commit is done; callers of
``wait_durable`` wait for the count they saw to be covered.
"""

from __future__ import annotations

import asyncio
import threading


class Durability:
    """Relaxed commits made and covered, and the callers waiting for them to be covered."""

    def __init__(self) -> None:
        self.relaxed = 0  # relaxed commits done so far
        self._covered = 0  # how many of them a durable commit or a flush has covered
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def covered(self, relaxed: int) -> None:
        """A durable commit (or a flush) that began once ``relaxed`` relaxed commits were
        done has ended: wake those waiting for no more than that."""
        with self._lock:
            self._covered = max(self._covered, relaxed)
            due = [w for w in self._waiters if w[0] <= self._covered]
            self._waiters = [w for w in self._waiters if w[0] > self._covered]
        for _, loop, future in due:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    async def wait(self, relaxed: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first ``relaxed`` relaxed commits to be
        covered; whether they are."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._covered >= relaxed:
                return True
            self._waiters.append((relaxed, loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            with self._lock:
                return self._covered >= relaxed
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
