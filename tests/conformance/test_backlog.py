"""The backlog: work waiting in the hub by kind and name, split into what a worker could
take now, what is due later, and what a worker holds; the same on every store."""

from __future__ import annotations

from datetime import timedelta

from duratask.backends import BacklogEntry
from duratask.backends.base import TaskHubStore

from .conftest import FakeClock
from .test_store_contract import LEASE, activity, create, episode, lock


def entry(kind: str, name: str, ready: int, later: int, leased: int) -> BacklogEntry:
    return BacklogEntry(kind, name, ready=ready, later=later, leased=leased)


async def test_backlog_counts_ready_later_and_leased_work(
    store: TaskHubStore, clock: FakeClock
) -> None:
    assert await store.backlog() == []
    for iid in ("g1", "g2", "g3"):
        await create(store, iid)
    await create(store, "other", name="Other")
    assert await store.backlog() == [
        entry("orchestration", "Greet", 3, 0, 0),
        entry("orchestration", "Other", 1, 0, 0),
    ]

    # g1 runs an episode that schedules three activities: it has nothing left to do.
    first = await lock(store)
    assert first.instance_id == "g1"
    await episode(store, first, activities=[activity("g1", i) for i in range(3)])
    # g2 is abandoned to rest for an hour: due later.
    second = await lock(store)
    assert second.instance_id == "g2"
    await store.abandon_orchestration_work_item(second, retry_at=clock.now + timedelta(hours=1))
    # g3 is held by a worker; one activity too.
    third = await lock(store)
    assert third.instance_id == "g3"
    leased = await store.lock_next_activity_work_items("w2", LEASE, max_items=1)
    assert len(leased) == 1

    assert await store.backlog() == [
        entry("orchestration", "Greet", 0, 1, 1),
        entry("orchestration", "Other", 1, 0, 0),
        entry("activity", "Act", 2, 0, 1),
    ]

    # Past the leases and the rest, everything is ready again.
    clock.advance(timedelta(hours=2))
    assert await store.backlog() == [
        entry("orchestration", "Greet", 2, 0, 0),
        entry("orchestration", "Other", 1, 0, 0),
        entry("activity", "Act", 3, 0, 0),
    ]
