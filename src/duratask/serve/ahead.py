"""Work sent to a worker ahead of the commit that leases it.

The server sends a worker its next work item as soon as it has decided it, while the commit
that leases the item (an instance's creation, the episode that schedules an activity) is
still being made durable: the worker's round trip overlaps the commit instead of following
it. The item's completion is accepted only once that commit is durable, and refused if the
commit failed (nothing was leased then; the work reaches a worker again the ordinary way,
from what is stored).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from duratask.errors import LeaseLostError

T = TypeVar("T")


class Ahead(Generic[T]):
    """The store's work item for an item sent ahead of its commit: set once the commit is
    durable (:meth:`land`), or never (:meth:`fail`)."""

    def __init__(self) -> None:
        self._settled = False
        self._item: T | None = None
        # One future per waiting call (one turn of the loop to wake it, and cancelling one
        # call leaves the others waiting).
        self._waiters: list[asyncio.Future[None]] = []

    def land(self, item: T) -> None:
        """The commit is durable and leased ``item``."""
        if not self._settled:
            self._item = item
            self._settle()

    def fail(self) -> None:
        """The commit failed, or leased nothing for this item."""
        if not self._settled:
            self._settle()

    def _settle(self) -> None:
        self._settled = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def settled(self) -> bool:
        """Whether the commit has ended, one way or the other."""
        return self._settled

    async def item(self) -> T:
        """The leased item once its commit is durable; :class:`LeaseLostError` if the commit
        failed."""
        if not self._settled:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        if self._item is None:
            raise LeaseLostError(
                "the commit that was to lease this work item failed, so its completion is "
                "refused; the work goes to a worker again from what is stored"
            )
        return self._item


__all__ = ["Ahead"]
