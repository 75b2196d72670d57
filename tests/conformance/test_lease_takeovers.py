"""The store contract for lease takeovers: a lease that ran out unreleased, or was broken,
is kept for operators; a lease released by a commit or an abandon is not.

Checked on every store kind, with the :class:`FakeClock` of the store contract suite.
"""

from __future__ import annotations

from datetime import timedelta

from duratask.backends.base import LeaseTakeover, TaskHubStore

from .conftest import T0, FakeClock
from .test_store_contract import LEASE, S, create, episode, lock, raised, to


async def test_an_expired_lease_taken_by_another_worker_is_recorded(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a")
    await episode(store, await lock(store, "w0"))
    await store.send_message(to("a", raised("go")))
    await lock(store, "w1")  # w1 dies holding it
    assert await store.lease_takeovers("a") == []
    clock.advance(LEASE + timedelta(seconds=5))
    taken = await lock(store, "w2")
    assert await store.lease_takeovers("a") == [
        LeaseTakeover(
            instance_id="a",
            execution_id="exec-1",
            previous_owner="w1",
            lease_expired_at=T0 + LEASE,
            taken_at=T0 + LEASE + timedelta(seconds=5),
            taken_by="w2",
        )
    ]
    await episode(store, taken)
    assert len(await store.lease_takeovers("a")) == 1


async def test_released_leases_are_not_takeovers(store: TaskHubStore, clock: FakeClock) -> None:
    await create(store, "a")
    await episode(store, await lock(store, "w1"))
    await store.send_message(to("a", raised("go")))
    await store.abandon_orchestration_work_item(await lock(store, "w1"))
    clock.advance(LEASE * 2)
    await store.abandon_orchestration_work_item(
        await lock(store, "w2"), T0 + LEASE * 2 + timedelta(seconds=1)
    )
    clock.advance(timedelta(seconds=2))  # the rest after the abandon ends
    await episode(store, await lock(store, "w3"))
    assert await store.lease_takeovers("a") == []
    assert await store.lease_takeovers("unknown") == []


async def test_a_broken_lease_is_recorded_when_broken(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a")
    await create(store, "b")
    await lock(store, "w1")
    clock.advance(timedelta(seconds=3))
    assert await store.break_leases("w1") >= 1
    (takeover,) = [t for i in ("a", "b") for t in await store.lease_takeovers(i)]
    assert takeover.previous_owner == "w1"
    assert takeover.taken_by is None
    assert takeover.lease_expired_at == takeover.taken_at == T0 + timedelta(seconds=3)
    await episode(store, await lock(store, "w2"))
    assert len(await store.lease_takeovers(takeover.instance_id)) == 1, "a broken lease is free"


async def test_takeovers_go_with_a_purged_instance(store: TaskHubStore, clock: FakeClock) -> None:
    await create(store, "a")
    await lock(store, "w1")
    clock.advance(LEASE * 2)
    await episode(store, await lock(store, "w2"), S.COMPLETED)
    assert len(await store.lease_takeovers("a")) == 1
    assert await store.purge_instance("a")
    assert await store.lease_takeovers("a") == []
