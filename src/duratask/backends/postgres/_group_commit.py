"""Group commit: episode commits that are ready at the same time go to PostgreSQL together.

Each call is a round trip, a transaction and a WAL flush, and the driver's CPU per call is
what bounds a busy worker. When several episodes finish while earlier commits are still on
their way, they are sent as one call (one transaction) instead of one call each. A commit
never waits for others to gather: while fewer than ``max_in_flight`` calls are out, the
next call leaves at once with whatever is queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

Row: TypeAlias = dict[str, Any]


class GroupCommit:
    """Sends JSON documents through ``send_many`` (a list in, one row per document out, in
    order) or, for a lone document, ``send_one``.

    Atomicity stays per document: the function behind ``send_many`` applies each commit or
    refuses it on its own. If a whole call fails, its documents are sent again one at a
    time, so one commit's error reaches its own caller only; ``send_one`` is then told it
    is a resend (the failed call may have committed before its connection broke). Calls
    from an event loop other than the first one's are sent one at a time.
    """

    def __init__(
        self,
        send_one: Callable[[str, bool], Awaitable[Row]],
        send_many: Callable[[list[str]], Awaitable[list[Row]]],
        *,
        max_batch: int = 64,
        max_in_flight: int = 4,
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[str, asyncio.Future[Row]]] = []
        self._in_flight = 0
        self._senders: set[asyncio.Task[None]] = set()  # the loop keeps weak references only

    async def send(self, document: str) -> Row:
        """Send one document; its own row once the call that carried it has committed."""
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            self._loop, self._queue, self._in_flight = loop, [], 0
        if loop is not self._loop:
            return await self._send_one(document, False)
        future: asyncio.Future[Row] = loop.create_future()
        self._queue.append((document, future))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            sender = loop.create_task(self._drain())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._send(batch)
        finally:
            self._in_flight -= 1

    async def _send(self, batch: list[tuple[str, asyncio.Future[Row]]]) -> None:
        try:
            resent = False
            if len(batch) > 1:
                try:
                    rows = await self._send_many([document for document, _ in batch])
                except Exception:
                    resent = True  # one commit's error must not fail the others: each alone
                else:
                    for (_, future), row in zip(batch, rows, strict=True):
                        if not future.done():
                            future.set_result(row)
                    return
            for document, future in batch:
                await _settle(future, self._send_one(document, resent))
        except BaseException:  # cancelled (the loop is going away): leave no caller waiting
            for _, future in batch:
                future.cancel()
            raise


async def _settle(future: asyncio.Future[Row], call: Awaitable[Row]) -> None:
    """Resolve ``future`` with the outcome of ``call``."""
    try:
        row = await call
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
    else:
        if not future.done():
            future.set_result(row)
