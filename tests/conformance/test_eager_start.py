"""Eager start (``SupportsEagerStart``): a create that leases its new instance to a worker
in the same transaction, checked on every store that offers it.

Time is the suite's :class:`FakeClock`: leases expire by advancing it, never by sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from duratask.backends.base import (
    OrchestrationMessage,
    OrchestrationWorkItem,
    SupportsEagerStart,
    TaskHubStore,
    WorkFilter,
)
from duratask.errors import LeaseLostError, OrchestrationAlreadyExistsError
from duratask.history import ExecutionStarted

from .conftest import T0, FakeClock, StoreHub
from .test_store_contract import LEASE, NO_REUSE, TERMINAL, S, drain, episode, raised, state_of


def start(
    instance_id: str,
    *,
    name: str = "Greet",
    version: str | None = "1.0",
    start_at: timedelta | None = None,
    visible_in: timedelta | None = None,
    task_queue: str = "default",
) -> OrchestrationMessage:
    event = ExecutionStarted(
        timestamp=T0,
        name=name,
        version=version,
        input='"world"',
        instance_id=instance_id,
        execution_id="exec-1",
        scheduled_start_time=None if start_at is None else T0 + start_at,
        task_queue=task_queue,
    )
    visible_at = None if visible_in is None else T0 + visible_in
    return OrchestrationMessage(instance_id, event, execution_id="exec-1", visible_at=visible_at)


def eager(store: TaskHubStore) -> SupportsEagerStart:
    if not isinstance(store, SupportsEagerStart):
        pytest.skip(f"{store.describe().kind}: no eager start (creates go through a fetch)")
    return store


async def created_leased(
    store: TaskHubStore,
    message: OrchestrationMessage,
    owner: str = "w1",
    work_filter: WorkFilter | None = None,
    replaceable: frozenset[S] = NO_REUSE,
) -> OrchestrationWorkItem | None:
    return await eager(store).create_and_lease_instance(
        message, replaceable, owner, LEASE, work_filter
    )


async def test_the_leased_item_is_what_a_fetch_would_have_given(
    store: TaskHubStore, peer: TaskHubStore
) -> None:
    message = start("a")
    item = await created_leased(store, message)
    assert item is not None
    assert item.instance_id == "a"
    assert item.history == [] and item.history_length == 0 and item.history_loaded
    assert item.locked_until == T0 + LEASE
    assert [m.message.event for m in item.messages] == [message.event]
    assert [m.dequeue_count for m in item.messages] == [1]
    assert item.messages[0].message.execution_id == "exec-1"
    assert item.state == await state_of(store, "a")
    assert item.state is not None and item.state.runtime_status == S.PENDING
    # Leased: no other worker gets it, from this handle or another.
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None
    assert await peer.lock_next_orchestration_work_item("w2", LEASE) is None
    assert [h.owner for h in await store.lease_holders()] == ["w1"]


async def test_a_commit_under_the_lease_consumes_the_start(
    store: TaskHubStore, peer: TaskHubStore
) -> None:
    item = await created_leased(store, start("a"))
    assert item is not None
    await store.renew_orchestration_work_item(item, LEASE)
    await episode(peer, item)  # fenced by the lease, from any handle on the hub
    assert await store.get_history("a") == [start("a").event]
    assert (await state_of(store, "a")).runtime_status == S.RUNNING
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None  # consumed
    await store.send_message(OrchestrationMessage("a", raised("go")))
    follow_up = await store.lock_next_orchestration_work_item("w2", LEASE)
    assert follow_up is not None and follow_up.history_length == 1


async def test_a_create_not_yet_durable_is_the_same_create_and_made_durable_on_request(
    store: TaskHubStore, peer: TaskHubStore
) -> None:
    """``durable=False``: the same instance and lease, seen by every handle; wait_durable
    returns (by a durable commit that follows, or by the store's own sync), at once when
    nothing waits to be made durable."""
    eager_store = eager(store)
    await asyncio.wait_for(eager_store.wait_durable(60), 10)  # nothing relaxed: at once
    item = await eager_store.create_and_lease_instance(
        start("a"), NO_REUSE, "w1", LEASE, None, durable=False
    )
    assert item is not None and item.instance_id == "a"
    await asyncio.wait_for(eager_store.wait_durable(0.01), 10)
    assert (await state_of(peer, "a")).runtime_status == S.PENDING
    assert await peer.lock_next_orchestration_work_item("w2", LEASE) is None  # leased
    second = await eager_store.create_and_lease_instance(
        start("b"), NO_REUSE, "w1", LEASE, None, durable=False
    )
    assert second is not None
    await episode(store, second)  # durable: covers the create before it
    await asyncio.wait_for(eager_store.wait_durable(60), 10)
    assert await peer.get_history("b") == [start("b").event]
    with pytest.raises(OrchestrationAlreadyExistsError):
        await eager_store.create_and_lease_instance(
            start("b"), NO_REUSE, "w1", LEASE, None, durable=False
        )


async def test_an_expired_start_lease_is_redelivered_and_fences_the_first(
    store: TaskHubStore, clock: FakeClock
) -> None:
    first = await created_leased(store, start("a"))
    assert first is not None
    clock.advance(LEASE - timedelta(seconds=1))
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None
    clock.advance(timedelta(seconds=2))
    again = await store.lock_next_orchestration_work_item("w2", LEASE)
    assert again is not None and again.instance_id == "a"
    assert again.lock_token != first.lock_token
    assert [m.message_id for m in again.messages] == [m.message_id for m in first.messages]
    assert [m.dequeue_count for m in again.messages] == [2]  # the crashed delivery counts
    with pytest.raises(LeaseLostError):
        await episode(store, first)
    await episode(store, again)
    assert await store.get_history("a") == [start("a").event]
    takeovers = await store.lease_takeovers("a")
    assert [(t.previous_owner, t.taken_by) for t in takeovers] == [("w1", "w2")]


@pytest.mark.parametrize(
    "message",
    [
        start("a", start_at=timedelta(minutes=5)),
        start("a", visible_in=timedelta(minutes=5)),
    ],
    ids=["scheduled-start", "visible-later"],
)
async def test_a_start_not_due_yet_is_created_unleased(
    store: TaskHubStore, clock: FakeClock, message: OrchestrationMessage
) -> None:
    assert await created_leased(store, message) is None
    assert (await state_of(store, "a")).runtime_status == S.PENDING
    assert await store.lease_holders() == []
    clock.advance(timedelta(minutes=5))
    item = await store.lock_next_orchestration_work_item("w2", LEASE)
    assert item is not None and [m.dequeue_count for m in item.messages] == [1]


async def test_a_start_due_now_is_leased(store: TaskHubStore) -> None:
    assert await created_leased(store, start("a", start_at=timedelta(0))) is not None


async def test_the_work_filter_decides(store: TaskHubStore) -> None:
    others = WorkFilter(orchestrations=frozenset({("Greet", "2.0"), ("Other", "1.0")}))
    assert await created_leased(store, start("a"), work_filter=others) is None
    assert await store.lease_holders() == []
    assert (await store.lock_next_orchestration_work_item("w2", LEASE)) is not None
    mine = WorkFilter(orchestrations=frozenset({("Greet", None)}))
    assert await created_leased(store, start("b", version=None), work_filter=mine) is not None


async def test_the_work_filter_s_task_queues_decide(store: TaskHubStore) -> None:
    payments = WorkFilter(task_queues=frozenset({"payments"}))
    assert await created_leased(store, start("a"), work_filter=payments) is None  # "default"
    assert await store.lease_holders() == []
    on_payments = start("b", task_queue="payments")
    assert await created_leased(store, on_payments, work_filter=payments) is not None


async def test_an_existing_instance_is_refused_and_keeps_its_lease(store: TaskHubStore) -> None:
    first = await created_leased(store, start("a"))
    assert first is not None
    with pytest.raises(OrchestrationAlreadyExistsError):
        await created_leased(store, start("a"), owner="w2")
    assert [h.owner for h in await store.lease_holders()] == ["w1"]
    await episode(store, first)  # the first lease still holds


async def test_a_replaced_instance_is_created_unleased(store: TaskHubStore) -> None:
    await store.create_instance(start("a"), NO_REUSE)
    await drain(store, {"a": S.COMPLETED})
    assert await created_leased(store, start("a"), replaceable=TERMINAL) is None
    assert (await state_of(store, "a")).runtime_status == S.PENDING
    assert await store.get_history("a") == []
    item = await store.lock_next_orchestration_work_item("w2", LEASE)
    assert item is not None and [m.message.event for m in item.messages] == [start("a").event]


async def test_stores_that_can_lease_at_creation(store_hub: StoreHub, store: TaskHubStore) -> None:
    """Every store but Azure Storage's leases at creation; Azure's creates go to a fetch."""
    assert isinstance(store, SupportsEagerStart) == (store_hub.kind != "azure")
