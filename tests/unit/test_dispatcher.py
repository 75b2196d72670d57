"""The dispatch loop: fetches follow the backlog, idle fetchers rest, stop ends every loop."""

from __future__ import annotations

import asyncio
from collections import deque

from duratask.worker.dispatcher import Dispatcher


class Queue:
    """Work items to fetch, counting fetches and how many ran at once."""

    def __init__(self) -> None:
        self.items: deque[int] = deque()
        self.fetches = 0
        self.fetching = 0
        self.most_fetching = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch(self) -> int | None:
        self.fetches += 1
        self.fetching += 1
        self.most_fetching = max(self.most_fetching, self.fetching)
        try:
            # Looks first, then takes its time, like a store read that is still on its way back.
            found = self.items.popleft() if self.items else None
            await self.gate.wait()
            await asyncio.sleep(0)
            return found
        finally:
            self.fetching -= 1


def dispatcher(queue: Queue, done: list[int], poll: float = 10.0) -> Dispatcher[int]:
    async def process(item: int) -> None:
        done.append(item)

    async def renew(item: int) -> None:
        return None

    return Dispatcher(
        "test",
        queue.fetch,
        process,
        renew,
        concurrency=50,
        renew_interval=60,
        min_poll=poll,
        max_poll=poll,
    )


async def wait_for(condition: object, what: str) -> None:
    async def poll() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(poll(), timeout=5)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_a_wake_starts_one_fetch_and_a_backlog_spreads_over_several() -> None:
    queue, done = Queue(), []
    d = dispatcher(queue, done)
    run = asyncio.create_task(d.run())
    await wait_for(lambda: len(d._resting) == 8 and queue.fetching == 0, "fetchers to rest")
    idle_fetches = queue.fetches

    queue.items.append(1)
    d.wake()
    await wait_for(lambda: done == [1], "the item")
    await wait_for(lambda: queue.fetching == 0, "fetchers to rest again")
    # One fetch found the item and started one more look, not all eight fetchers.
    assert queue.fetches - idle_fetches <= 3

    queue.gate.clear()
    queue.items.extend(range(2, 40))
    d.wake()
    await wait_for(lambda: queue.fetching >= 1, "a fetch")
    queue.gate.set()
    await wait_for(lambda: len(done) == 39, "the backlog")
    assert queue.most_fetching > 1, "a backlog is fetched by several fetchers at once"

    d.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_stop_during_a_fetch_ends_the_loops() -> None:
    queue, done = Queue(), []
    d = dispatcher(queue, done)
    queue.gate.clear()
    run = asyncio.create_task(d.run())
    await wait_for(lambda: queue.fetching >= 1, "a fetch in flight")
    d.stop()
    queue.gate.set()
    await asyncio.wait_for(run, timeout=5)
    assert done == []


async def test_a_wake_during_a_fetch_that_finds_nothing_looks_again() -> None:
    queue, done = Queue(), []
    d = dispatcher(queue, done)
    queue.gate.clear()
    run = asyncio.create_task(d.run())
    await wait_for(lambda: queue.fetching == 8, "every fetcher in flight")
    # Work appears after every fetch has looked: no fetcher rests, so the wake is kept.
    queue.items.append(7)
    d.wake()
    queue.gate.set()
    await wait_for(lambda: done == [7], "a second look to find the item")
    d.stop()
    await asyncio.wait_for(run, timeout=5)
