"""The store contract for what workers need beyond leasing: work filters, activity options
and heartbeats, redelivered activities leased alone, worker rows and lease holders.

Checked on every store kind, with the :class:`FakeClock` of the store contract suite.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from duratask.backends.base import (
    ActivityRequest,
    LeaseHolder,
    TaskHubStore,
    WorkerInfo,
    WorkFilter,
)
from duratask.errors import LeaseLostError

from .conftest import T0, FakeClock
from .test_store_contract import LEASE, activity, create, episode, lock, lock_activity


async def with_requests(store: TaskHubStore, instance_id: str, *requests: ActivityRequest) -> None:
    await create(store, instance_id)
    await episode(store, await lock(store), activities=list(requests))


# -- work filters --------------------------------------------------------------------------------
async def test_orchestrations_are_leased_only_by_a_worker_that_registered_them(
    store: TaskHubStore,
) -> None:
    await create(store, "greet-1", name="Greet")  # version "1.0"
    others = WorkFilter(orchestrations=frozenset({("Other", None), ("Greet", "2.0")}))
    assert await store.lock_next_orchestration_work_item("w1", LEASE, None, others) is None
    unversioned = WorkFilter(orchestrations=frozenset({("Greet", None)}))
    assert await store.lock_next_orchestration_work_item("w1", LEASE, None, unversioned) is None
    mine = WorkFilter(orchestrations=frozenset({("Other", None), ("Greet", "1.0")}))
    work_item = await store.lock_next_orchestration_work_item("w1", LEASE, None, mine)
    assert work_item is not None and work_item.instance_id == "greet-1"


async def test_a_filter_without_orchestrations_leases_any(store: TaskHubStore) -> None:
    await create(store, "any-1")
    anything = WorkFilter(activities=frozenset({"Act"}))
    work_item = await store.lock_next_orchestration_work_item("w1", LEASE, None, anything)
    assert work_item is not None


async def test_a_waiting_instance_of_another_orchestration_does_not_block_the_rest(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "new-kind", name="NewKind")
    clock.advance(timedelta(seconds=1))
    await create(store, "old-kind", name="Greet")
    old_only = WorkFilter(orchestrations=frozenset({("Greet", "1.0")}))
    work_item = await store.lock_next_orchestration_work_item("w1", LEASE, None, old_only)
    assert work_item is not None and work_item.instance_id == "old-kind"
    anyone = await store.lock_next_orchestration_work_item("w2", LEASE)
    assert anyone is not None and anyone.instance_id == "new-kind"


async def test_activities_are_leased_only_by_a_worker_that_registered_them(
    store: TaskHubStore,
) -> None:
    await with_requests(store, "a", activity("a", 0, "Charge"), activity("a", 1, "Ship"))
    ship_only = WorkFilter(activities=frozenset({"Ship"}))
    leased = await store.lock_next_activity_work_items("w1", LEASE, 8, ship_only)
    assert [i.request.name for i in leased] == ["Ship"]
    assert await store.lock_next_activity_work_items("w1", LEASE, 8, ship_only) == []
    rest = await store.lock_next_activity_work_items("w2", LEASE, 8)
    assert [i.request.name for i in rest] == ["Charge"]


# -- activity options and heartbeats ------------------------------------------------------------
async def test_activity_options_round_trip(store: TaskHubStore) -> None:
    request = dataclasses.replace(
        activity("a", 0),
        attempt=3,
        timeout=timedelta(seconds=90),
        heartbeat_timeout=timedelta(milliseconds=1500),
        heartbeat_details='{"page": 7}',
    )
    await with_requests(store, "a", request)
    assert (await lock_activity(store)).request == request


async def test_heartbeat_details_reach_the_next_delivery_and_extend_the_lease(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await with_requests(store, "a", activity("a", 0))
    first = await lock_activity(store, "w1")
    clock.advance(timedelta(seconds=20))
    await store.record_activity_heartbeat(first, '{"done": 40}', LEASE)
    assert first.locked_until == T0 + timedelta(seconds=20) + LEASE
    clock.advance(timedelta(seconds=20))  # past the first lease, within the extended one
    assert await store.lock_next_activity_work_items("w2", LEASE) == []
    clock.advance(LEASE)
    second = await lock_activity(store, "w2")
    assert second.request.heartbeat_details == '{"done": 40}'
    assert second.dequeue_count == 2
    with pytest.raises(LeaseLostError):
        await store.record_activity_heartbeat(first, '{"done": 41}', LEASE)
    assert second.request.heartbeat_details == '{"done": 40}'


# -- deliveries ------------------------------------------------------------------------------------
async def test_an_activity_delivered_before_is_leased_alone(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await with_requests(store, "a", *(activity("a", i) for i in range(4)))
    crashed = await store.lock_next_activity_work_items("w1", LEASE, 2)  # its worker dies
    assert [i.request.task_id for i in crashed] == [0, 1]
    clock.advance(LEASE + timedelta(seconds=1))
    # Tasks 0 and 1 were delivered before: each comes alone; tasks 2 and 3 come together.
    batches = []
    while leased := await store.lock_next_activity_work_items("w2", LEASE, 8):
        batches.append([(i.request.task_id, i.dequeue_count) for i in leased])
    assert sorted(batches) == [[(0, 2)], [(1, 2)], [(2, 1), (3, 1)]]


async def test_a_batch_never_holds_an_activity_delivered_before(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await with_requests(store, "a", *(activity("a", i) for i in range(6)))
    leased = await store.lock_next_activity_work_items("w1", LEASE, 6)
    for item in leased[::2]:
        await store.abandon_activity_work_item(item)  # 0, 2, 4 back unrun
    clock.advance(LEASE + timedelta(seconds=1))  # 1, 3, 5: their worker died
    batches = []
    while leased := await store.lock_next_activity_work_items("w2", LEASE, 8):
        batches.append([(i.request.task_id, i.dequeue_count) for i in leased])
    assert sorted(item for batch in batches for item in batch) == [
        (0, 1),
        (1, 2),
        (2, 1),
        (3, 2),
        (4, 1),
        (5, 2),
    ]
    for batch in batches:
        assert len(batch) == 1 or all(count == 1 for _, count in batch), batches


async def test_an_activity_handed_back_is_not_charged_a_delivery(
    store: TaskHubStore,
) -> None:
    await with_requests(store, "a", activity("a", 0), activity("a", 1))
    both = await store.lock_next_activity_work_items("w1", LEASE, 2)
    for item in both:
        await store.abandon_activity_work_item(item)
    again = await store.lock_next_activity_work_items("w2", LEASE, 2)
    assert [(i.request.task_id, i.dequeue_count) for i in again] == [(0, 1), (1, 1)]


# -- workers and leases ------------------------------------------------------------------------
def worker(worker_id: str, at_seconds: int, **kwargs: object) -> WorkerInfo:
    fields: dict[str, object] = {
        "worker_id": worker_id,
        "host": "box/1234abcd/4026531836",
        "pid": 4242,
        "started_at": T0,
        "heartbeat_at": T0 + timedelta(seconds=at_seconds),
        "orchestrations": frozenset({("Greet", "1.0"), ("Plain", None)}),
        "activities": frozenset({"Act", "Ship"}),
        "in_flight": {"orchestrations": 2, "activities": 5},
    }
    fields.update(kwargs)
    return WorkerInfo(**fields)  # type: ignore[arg-type]


async def test_worker_rows_round_trip_refresh_and_go(store: TaskHubStore) -> None:
    assert await store.list_workers() == []
    await store.heartbeat_worker(worker("w1", 0))
    await store.heartbeat_worker(
        worker("w2", 5, orchestrations=frozenset(), activities=frozenset())
    )
    assert await store.list_workers() == [
        worker("w2", 5, orchestrations=frozenset(), activities=frozenset()),
        worker("w1", 0),
    ]
    refreshed = worker("w1", 10, in_flight={"orchestrations": 0, "activities": 1})
    await store.heartbeat_worker(refreshed)
    listed = await store.list_workers()
    assert listed[0] == refreshed and len(listed) == 2
    await store.remove_worker("w2")
    await store.remove_worker("nobody")
    assert await store.list_workers() == [refreshed]


async def test_lease_holders_and_breaking_their_leases(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await with_requests(store, "a", activity("a", 0), activity("a", 1))
    await create(store, "b")
    held_instance = await lock(store, "w1")
    held_activities = await store.lock_next_activity_work_items("w1", LEASE, 2)
    assert len(held_activities) == 2
    clock.advance(timedelta(seconds=1))
    assert await store.lock_next_activity_work_items("w2", LEASE) == []
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None
    assert await store.lease_holders() == [LeaseHolder("w1", 3, T0 + LEASE)]

    assert await store.break_leases("w1") == 3
    assert await store.lease_holders() == []
    taken = await lock(store, "w2")
    assert taken.instance_id == held_instance.instance_id
    again = await store.lock_next_activity_work_items("w2", LEASE, 8)
    assert sorted(i.request.task_id for i in again) == [0]  # delivered before: alone
    with pytest.raises(LeaseLostError):
        await store.renew_activity_work_item(held_activities[1], LEASE)
    assert await store.break_leases("nobody") == 0
