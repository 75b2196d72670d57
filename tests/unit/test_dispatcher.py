"""The dispatch loop: fetches follow the backlog, idle fetchers rest, stop ends every loop."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from duratask.worker._dispatcher import Dispatcher, Permit


class Queue:
    """Work items to fetch, counting fetches and how many ran at once."""

    def __init__(self) -> None:
        self.items: deque[int] = deque()
        self.fetches = 0
        self.asked: list[int] = []
        self.fetching = 0
        self.most_fetching = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch(self, wanted: int) -> list[int]:
        self.fetches += 1
        self.asked.append(wanted)
        self.fetching += 1
        self.most_fetching = max(self.most_fetching, self.fetching)
        try:
            # Looks first, then takes its time, like a store read that is still on its way back.
            found = [self.items.popleft() for _ in range(min(wanted, len(self.items)))]
            await self.gate.wait()
            await asyncio.sleep(0)
            return found
        finally:
            self.fetching -= 1


def dispatcher(
    queue: Queue,
    done: list[int],
    poll: float = 10.0,
    concurrency: int = 50,
    hold: asyncio.Event | None = None,
) -> Dispatcher[int]:
    async def process(item: int, permit: Permit[int]) -> None:
        if hold is not None:
            await hold.wait()
        done.append(item)

    async def renew(item: int) -> None:
        return None

    return Dispatcher(
        "test",
        queue.fetch,
        process,
        renew,
        concurrency=concurrency,
        renew_interval=60,
        batch=8,
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
    queue, done = Queue(), list[int]()
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
    assert max(queue.asked) > 1, "a fetch asks for several items when slots are free"
    assert sorted(done) == list(range(1, 40))

    d.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_stop_during_a_fetch_ends_the_loops() -> None:
    queue, done = Queue(), list[int]()
    d = dispatcher(queue, done)
    queue.gate.clear()
    run = asyncio.create_task(d.run())
    await wait_for(lambda: queue.fetching >= 1, "a fetch in flight")
    d.stop()
    queue.gate.set()
    await asyncio.wait_for(run, timeout=5)
    assert done == []


async def test_a_wake_during_a_fetch_that_finds_nothing_looks_again() -> None:
    queue, done = Queue(), list[int]()
    d = dispatcher(queue, done, concurrency=64)  # room for eight fetches of eight items
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


async def test_a_fetch_asks_for_no_more_items_than_free_slots() -> None:
    queue, done, hold = Queue(), list[int](), asyncio.Event()
    d = dispatcher(queue, done, concurrency=3, hold=hold)
    queue.items.extend(range(10))
    run = asyncio.create_task(d.run())
    await wait_for(lambda: len(d.in_flight) == 3 and queue.fetching == 0, "three items running")
    assert sum(queue.asked) - len(queue.asked) <= 3, queue.asked  # each fetch holds one slot
    assert len(queue.items) == 7, "nothing is leased beyond the three free slots"
    hold.set()
    await wait_for(lambda: len(done) == 10, "the rest")
    assert all(asked <= 3 for asked in queue.asked), queue.asked
    d.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_a_running_item_keeps_its_lease_until_it_ends_or_loses_it() -> None:
    renewals: list[int] = []
    released = asyncio.Event()
    lost_after = {2: 2}  # item 2 loses its lease on its second renewal

    async def fetch(wanted: int) -> list[int]:
        return items.pop() if items else []

    later = asyncio.Event()

    async def process(item: int, permit: Permit[int]) -> None:
        await (later if item == 3 else released).wait()

    async def renew(item: int) -> None:
        renewals.append(item)
        if renewals.count(item) == lost_after.get(item):
            from duratask.errors import LeaseLostError

            raise LeaseLostError("taken over")

    items = [[1, 2]]
    d: Dispatcher[int] = Dispatcher(
        "test",
        fetch,
        process,
        renew,
        concurrency=4,
        renew_interval=0.005,
        batch=2,
        min_poll=10,
        max_poll=10,
    )
    run = asyncio.create_task(d.run())
    await wait_for(lambda: renewals.count(1) >= 4, "item 1 renewed again and again")
    assert renewals.count(2) == 2, "item 2 stopped renewing once its lease was lost"
    released.set()
    await wait_for(lambda: not d.in_flight, "both items to end")
    ended = (renewals.count(1), renewals.count(2))
    items.append([3])  # a later item, whose renewals show time passing
    d.wake()
    await wait_for(lambda: renewals.count(3) >= 2, "two renewal intervals")
    assert (renewals.count(1), renewals.count(2)) == ended, "no renewal after an item ended"
    later.set()
    d.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_a_running_item_hands_its_slot_to_the_item_it_submits() -> None:
    queue, events = Queue(), []
    finish_first = asyncio.Event()
    gate = asyncio.Event()
    refused: list[str] = []

    async def process(item: int, permit: Permit[int]) -> None:
        events.append(f"start {item}")
        if item in (5, 6, 7):
            await gate.wait()
        if item == 1:
            successor = permit.hand_over()
            with pytest.raises(RuntimeError):
                permit.hand_over()  # only once
            refused.append("twice")
            successor.submit(100)  # the successor takes the handed-over slot
            await finish_first.wait()
        events.append(f"end {item}")

    async def renew(item: int) -> None:
        return None

    d: Dispatcher[int] = Dispatcher(
        "test", queue.fetch, process, renew, concurrency=1, renew_interval=60, batch=8
    )
    assert d.try_reserve() is None, "no slot before the dispatcher runs"
    queue.items.append(1)
    run = asyncio.create_task(d.run())
    await wait_for(lambda: "end 100" in events, "the successor to run while item 1 runs")
    assert refused == ["twice"]
    queue.items.append(2)
    d.wake()
    await wait_for(lambda: queue.fetches > 1 and queue.fetching == 0, "another fetch")
    for _ in range(20):
        await asyncio.sleep(0)
    assert "start 2" in events, "the successor's slot came back when it ended"
    assert events.index("start 2") > events.index("end 100")
    finish_first.set()
    await wait_for(lambda: "end 1" in events, "item 1 to end")
    # Item 1 did not give its slot back a second time: still one item at a time.
    queue.items.extend([5, 6, 7])
    d.wake()
    await wait_for(lambda: "start 5" in events, "item 5 to start")
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(d.in_flight) == 1 and "start 6" not in events
    gate.set()
    await wait_for(lambda: "end 7" in events, "the rest")
    d.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_a_permit_not_submitted_is_released_on_the_way_out() -> None:
    queue, done = Queue(), list[int]()
    d = dispatcher(queue, done, concurrency=2)
    run = asyncio.create_task(d.run())
    await wait_for(lambda: len(d._resting) == 2 and queue.fetching == 0, "fetchers to rest")
    with pytest.raises(KeyError):
        with d.try_reserve() as first, d.try_reserve() as second:  # type: ignore[union-attr]
            assert first is not None and second is not None
            assert d.try_reserve() is None, "both slots are reserved"
            raise KeyError("the work failed before it was submitted")
    assert d._slots.free == 2, "both slots came back"
    with d.try_reserve() as permit:  # type: ignore[union-attr]
        permit.submit(7)
    await wait_for(lambda: done == [7], "the item run with the permit")
    await wait_for(lambda: d._slots.free == 2, "its slot freed when it ended")
    permit.release()  # releasing again frees nothing
    assert d._slots.free == 2
    d.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_reserve_waits_for_a_free_slot_and_gives_up_on_stop() -> None:
    queue, done, hold = Queue(), list[int](), asyncio.Event()
    d = dispatcher(queue, done, concurrency=1, hold=hold)
    queue.items.append(1)
    run = asyncio.create_task(d.run())
    await wait_for(lambda: len(d.in_flight) == 1, "item 1 running in the only slot")
    reserving = asyncio.create_task(d.reserve())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reserving.done(), "no slot is free while item 1 runs"
    hold.set()
    permit = await asyncio.wait_for(reserving, timeout=5)
    assert permit is not None
    permit.submit(2)
    await wait_for(lambda: done == [1, 2], "the item run in the reserved slot")

    hold.clear()
    queue.items.append(3)
    d.wake()
    await wait_for(lambda: len(d.in_flight) == 1, "item 3 running in the only slot")
    waiting = asyncio.create_task(d.reserve())
    await asyncio.sleep(0)
    d.stop()
    hold.set()
    assert await asyncio.wait_for(waiting, timeout=5) is None, "a stopping dispatcher"
    assert await d.reserve() is None
    await asyncio.wait_for(run, timeout=5)


async def test_a_cancelled_reservation_does_not_lose_the_slot() -> None:
    queue, done, hold = Queue(), list[int](), asyncio.Event()
    d = dispatcher(queue, done, concurrency=1, hold=hold)
    queue.items.append(1)
    run = asyncio.create_task(d.run())
    await wait_for(lambda: len(d.in_flight) == 1, "item 1 running in the only slot")
    cancelled = asyncio.create_task(d.reserve())
    later = asyncio.create_task(d.reserve())
    await asyncio.sleep(0)
    cancelled.cancel()
    hold.set()
    permit = await asyncio.wait_for(later, timeout=5)
    assert permit is not None, "the slot went to the reservation still waiting"
    permit.release()
    d.stop()
    await asyncio.wait_for(run, timeout=5)
