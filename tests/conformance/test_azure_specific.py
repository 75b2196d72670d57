"""What only the Azure Storage store has: its URLs, its ETag fence against a stale owner (of
an instance or of an entity), its outbox delivered once whatever crashes, large payloads in
blobs and episodes too large for one table transaction. Runs on Azurite (see
``tests/azurite.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from duratask.backends import open_store
from duratask.backends.base import (
    ActivityRequest,
    EntityCommit,
    EntityMessage,
    EntityRecord,
    InstanceUnchanged,
    OrchestrationCommit,
    OrchestrationMessage,
)
from duratask.errors import InstanceBusyError, InvalidStoreUrlError, LeaseLostError
from duratask.history import (
    EventRaised,
    ExecutionStarted,
    HistoryEvent,
    OrchestratorStarted,
    TaskScheduled,
)
from duratask.state import OrchestrationStatus

from .. import azurite
from .conftest import T0, FakeClock

LEASE = timedelta(seconds=30)
NO_REUSE: frozenset[OrchestrationStatus] = frozenset()


# -- URLs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "account", "partitions"),
    [
        ("azure://myaccount/Hub1", "myaccount", 4),
        ("azure://myaccount/Hub1?partitions=16", "myaccount", 16),
        ("azure:///Hub1?connection_string=AccountName%3Dabc%3BAccountKey%3Dk", "abc", 4),
        (
            "azure://devstoreaccount1/Hub1?blob_port=1&queue_port=2&table_port=3",
            "devstoreaccount1",
            4,
        ),
    ],
)
def test_azure_urls(url: str, account: str, partitions: int) -> None:
    from duratask.backends.azure import AzureOrchestrationService, parse_azure_url

    target = parse_azure_url(url)
    assert (target.hub, target.account, target.partitions) == ("Hub1", account, partitions)
    store = open_store(url)
    assert isinstance(store, AzureOrchestrationService)
    assert store.describe().hub == ("azure", account, "Hub1")
    assert "AccountKey" not in store.describe().location


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("azure://myaccount/", "task hub name"),
        ("azure://myaccount/1hub", "task hub name"),
        ("azure://myaccount/my-hub", "task hub name"),
        ("azure:///Hub1", "names no storage account"),
        ("azure://myaccount/Hub1?partitions=17", "partitions must be"),
        ("azure://myaccount/Hub1?partitions=x", "partitions must be"),
        ("azure://myaccount/Hub1?colour=blue", "unknown parameter 'colour'"),
        ("azure://myaccount/Hub1?blob_port=1", "only go with the emulator"),
        ("azure://devstoreaccount1/Hub1?blob_port=99999", "blob_port must be a port"),
        ("azure://my_account/Hub1", "not a storage account name"),
        ("azure:///Hub1?connection_string=nothing", "names no AccountName"),
        ("azure://acc/Hub1?connection_string=AccountName%3Dabc", "names an account and a"),
    ],
)
def test_bad_azure_urls_are_refused_by_name(url: str, problem: str) -> None:
    with pytest.raises(InvalidStoreUrlError, match=problem):
        open_store(url)


# -- on Azurite ---------------------------------------------------------------------------------
@pytest.fixture
async def azure_url() -> str:
    return azurite.require_azurite().url(azurite.new_hub())


@pytest.fixture
async def stores(azure_url: str, clock: FakeClock) -> AsyncIterator[list[Any]]:
    from duratask.backends.azure import AzureOrchestrationService

    opened = [AzureOrchestrationService(azure_url, clock=clock) for _ in range(2)]
    for store in opened:
        await store.open()
    yield opened
    await opened[0].delete_task_hub()
    for store in opened:
        await store.close()


def started(instance_id: str, payload: str | None = None) -> OrchestrationMessage:
    event = ExecutionStarted(
        timestamp=T0,
        name="flow",
        instance_id=instance_id,
        execution_id=f"{instance_id}-e1",
        input=payload,
    )
    return OrchestrationMessage(instance_id, event)


def raised(instance_id: str, name: str) -> OrchestrationMessage:
    return OrchestrationMessage(instance_id, EventRaised(timestamp=T0, name=name))


def first_episode(item: Any, *, activities: int = 0) -> OrchestrationCommit:
    """An episode consuming the work item's messages and scheduling ``activities``."""
    state = item.state
    events: list[HistoryEvent] = [OrchestratorStarted(timestamp=T0)]
    requests = []
    for task in range(activities):
        events.append(TaskScheduled(timestamp=T0, event_id=task, name="act"))
        requests.append(ActivityRequest(state.instance_id, state.execution_id, task, "act"))
    running = dataclasses.replace(state, runtime_status=OrchestrationStatus.RUNNING)
    return OrchestrationCommit(
        state=running,
        new_events=events,
        activities=requests,
        consumed_message_ids=[m.message_id for m in item.messages],
    )


async def test_a_stale_owner_cannot_append_when_the_sentinel_changed_under_it(
    stores: list[Any], clock: FakeClock
) -> None:
    """The worker's own checks pass (it read the sentinel before the takeover), yet the
    transaction is refused by the sentinel's ETag: nothing of the stale episode is written."""
    first, second = stores
    await first.create_instance(started("a"), NO_REUSE)
    stale = await first.lock_next_orchestration_work_item("w1", LEASE)
    assert stale is not None
    before_takeover = await first._settled_head("a")
    clock.advance(LEASE + timedelta(seconds=1))
    fresh = await second.lock_next_orchestration_work_item("w2", LEASE)
    assert fresh is not None and fresh.lock_token != stale.lock_token

    real_read = first._settled_head
    reads: list[str] = []

    async def stale_read(instance_id: str) -> Any:
        reads.append(instance_id)
        if len(reads) == 1:  # what the stale worker saw, token and ETag included
            return before_takeover
        return await real_read(instance_id)

    first._settled_head = stale_read
    assert stale.state is not None
    with pytest.raises(LeaseLostError):  # refused by the ETag, then by the fresh read
        await first.commit_episode(stale.fence(), first_episode(stale, activities=2))
    assert len(reads) == 2
    assert await second.get_history("a") == []
    assert await second.lock_next_activity_work_items("w", LEASE, 5) == []

    assert fresh.state is not None
    await second.commit_episode(fresh.fence(), first_episode(fresh, activities=1))
    assert len(await second.get_history("a")) == 2
    assert len(await second.lock_next_activity_work_items("w", LEASE, 5)) == 1
    with pytest.raises(LeaseLostError):  # the plain path too: its token is gone
        del first._settled_head
        await first.commit_episode(stale.fence(), first_episode(stale))


async def test_a_message_the_lease_left_waiting_refuses_a_commit_on_the_unchanged_instance(
    stores: list[Any], clock: FakeClock
) -> None:
    """A message the lease read but the episode could not take (not due yet) is remembered
    past the commit on the remembered sentinel: once it is due, an episode fenced on the
    instance being unchanged is refused, as after a fresh read of the partition."""
    store = stores[0]
    await store.create_instance(started("a"), NO_REUSE)
    later = clock.now + timedelta(seconds=5)
    assert await store.send_message(dataclasses.replace(raised("a", "later"), visible_at=later))
    item = await store.lock_next_orchestration_work_item("w", LEASE)
    assert item is not None and len(item.messages) == 1
    await store.commit_episode(item.fence(), first_episode(item))

    clock.advance(timedelta(seconds=10))
    again = dataclasses.replace(first_episode(item), consumed_message_ids=[])
    with pytest.raises(InstanceBusyError):
        await store.commit_episode(InstanceUnchanged("a-e1", history_length=1), again)


async def test_an_outbox_left_by_a_crash_is_delivered_once(stores: list[Any]) -> None:
    """A crash after the commit and before the delivery leaves the outbox row: the next
    reader of the partition delivers it; a delivery repeated after a crash before the outbox
    row's deletion is refused by the marker."""
    store, other = stores
    await store.create_instance(started("receiver"), NO_REUSE)
    await store.create_instance(started("sender"), NO_REUSE)
    receiver = await store.lock_next_orchestration_work_item("w", LEASE)
    assert receiver is not None and receiver.state is not None
    await store.commit_episode(receiver.fence(), first_episode(receiver))
    work = await store.lock_next_orchestration_work_item("w", LEASE)
    assert work is not None and work.instance_id == "sender" and work.state is not None

    async def crash(instance_id: str, outbox: list[Any]) -> None:
        raise ConnectionError("process died")

    store._deliver_outbox = crash
    commit = dataclasses.replace(first_episode(work), messages=[raised("receiver", "ping")])
    with pytest.raises(ConnectionError):
        await store.commit_episode(work.fence(), commit)
    head = await other._head("sender")  # read raw: a settled read would deliver
    assert head.sentinel is not None and head.sentinel["Length"] == 1  # committed
    assert len(head.outbox) == 1 and not (await other._head("receiver")).messages

    outbox_id = int(head.outbox[0]["RowKey"][2:])
    redelivered = raised("receiver", "ping")
    assert await other._deliver(redelivered, outbox_id, marked=True)  # the sweep's delivery
    assert await other._deliver(redelivered, outbox_id, marked=True)  # a repeat: no-op
    item = await other.lock_next_orchestration_work_item("w", LEASE)
    assert item is not None and item.instance_id == "receiver"
    assert [type(m.message.event) for m in item.messages] == [EventRaised]
    assert not (await other._head("sender")).outbox  # settled by the reader


async def test_large_payloads_go_to_blobs_gzipped(stores: list[Any]) -> None:
    store, other = stores
    payload = '"' + "x" * 200_000 + '"'
    await store.create_instance(started("big", payload), NO_REUSE)
    state = await other.get_instance("big")
    assert state is not None and state.serialized_input == payload
    item = await other.lock_next_orchestration_work_item("w", LEASE)
    assert item is not None
    event = item.messages[0].message.event
    assert isinstance(event, ExecutionStarted) and event.input == payload
    blobs = [b.name async for b in other._c().container.list_blobs()]
    assert blobs and all(b.startswith("payload/") for b in blobs)


async def test_an_episode_larger_than_one_transaction_is_staged(stores: list[Any]) -> None:
    store, other = stores
    await store.create_instance(started("fan"), NO_REUSE)
    item = await store.lock_next_orchestration_work_item("w", LEASE)
    assert item is not None and item.state is not None
    await store.commit_episode(item.fence(), first_episode(item, activities=150))
    assert len(await other.get_history("fan")) == 151
    leased = await other.lock_next_activity_work_items("w", LEASE, 200)
    assert sorted(w.request.task_id for w in leased) == list(range(150))
    sentinel = (await other._head("fan")).sentinel
    assert sentinel is not None and sentinel["Staged"] == ""


def signal(entity_id: str, request_id: str, source: str | None = None) -> EntityMessage:
    return EntityMessage(entity_id, "signal", request_id, operation="add", source=source)


async def test_a_stale_entity_worker_cannot_commit_its_batch(
    stores: list[Any], clock: FakeClock
) -> None:
    """A worker whose entity lease ran out and was taken over writes nothing: its commit is
    refused (the entity row's token and ETag changed), the new holder's is kept."""
    first, second = stores
    await first.send_entity_message(signal("@counter@a", "r1"))
    stale = await first.lock_next_entity_work_item("w1", LEASE)
    assert stale is not None and [m.message.request_id for m in stale.messages] == ["r1"]
    clock.advance(LEASE + timedelta(seconds=1))
    fresh = await second.lock_next_entity_work_item("w2", LEASE)
    assert fresh is not None and fresh.lock_token != stale.lock_token
    assert fresh.messages[0].dequeue_count == 2

    consumed = [m.message_id for m in stale.messages]
    out = [signal("@counter@b", "r2")]
    with pytest.raises(LeaseLostError):
        await first.complete_entity_work_item(
            stale, EntityCommit(EntityRecord("99", None, ("r1",)), consumed, out)
        )
    assert await second.get_entity("@counter@a") is None
    assert await second.lock_next_entity_work_item("w", LEASE) is None  # no signal to @b

    await second.complete_entity_work_item(
        fresh, EntityCommit(EntityRecord("1", None, ("r1",)), consumed, out)
    )
    entity = await second.get_entity("@counter@a")
    assert entity is not None and entity.serialized_state == "1" and entity.backlog == 0
    forwarded = await second.lock_next_entity_work_item("w", LEASE)
    assert forwarded is not None and forwarded.entity_id == "@counter@b"
    assert [m.message.request_id for m in forwarded.messages] == ["r2"]


async def test_an_entity_outbox_delivered_twice_stores_each_message_once(
    stores: list[Any],
) -> None:
    """A crash after an entity batch's commit and before its outbox row was deleted: the
    next reader delivers the row again, and the receivers' markers refuse the repeat."""
    store, other = stores
    await store.send_entity_message(signal("@counter@a", "r1"))
    work = await store.lock_next_entity_work_item("w", LEASE)
    assert work is not None
    delivered: list[list[Any]] = []

    async def crash(entity_id: str, outbox: list[Any], table: str = "history") -> None:
        delivered.append(outbox)
        raise ConnectionError("process died")

    store._deliver_outbox = crash
    commit = EntityCommit(
        EntityRecord("1", None, ("r1",)),
        [m.message_id for m in work.messages],
        [signal("@counter@b", "r2"), signal("@counter@c", "r3")],
    )
    with pytest.raises(ConnectionError):
        await store.complete_entity_work_item(work, commit)
    (outbox,) = delivered
    await other._deliver_outbox("@counter@a", outbox, "entities")  # the first delivery
    await other._deliver_outbox("@counter@a", outbox, "entities")  # a repeat: no-op

    got = []
    while (item := await other.lock_next_entity_work_item("w", LEASE)) is not None:
        got += [(item.entity_id, m.message.request_id) for m in item.messages]
        await other.complete_entity_work_item(
            item, EntityCommit(item.record, [m.message_id for m in item.messages])
        )
    assert sorted(got) == [("@counter@b", "r2"), ("@counter@c", "r3")]
    entity = await other.get_entity("@counter@a")
    assert entity is not None and entity.serialized_state == "1"


async def test_a_worker_leases_only_the_instances_of_the_partitions_it_holds(
    azure_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two store objects on the wall clock split the 4 partitions 2 and 2; an instance of
    one's partition is not leased by the other (its sweep skips it), only by its owner,
    until its message is overdue (the owner cannot run it, or is stuck)."""
    from duratask.backends.azure import AzureOrchestrationService, _dequeue

    monkeypatch.setattr(_dequeue, "OVERDUE_AFTER", 600.0)  # not overdue while b looks

    a, b = AzureOrchestrationService(azure_url), AzureOrchestrationService(azure_url)
    await a.open()
    await b.open()
    try:
        deadline = time.monotonic() + 30
        while True:  # polling is what drives the balancing rounds
            assert await a.lock_next_orchestration_work_item("a", LEASE) is None
            assert await b.lock_next_orchestration_work_item("b", LEASE) is None
            owners = await a.partition_owners()
            held = Counter(owners.values())
            if held[a.partition_member] == 2 and held[b.partition_member] == 2:
                break
            assert time.monotonic() < deadline, f"partitions not split: {owners}"
            await asyncio.sleep(0.1)
        mine = {name for name, owner in owners.items() if owner == a.partition_member}
        iid = next(f"i-{n}" for n in itertools.count() if a._control_queue(f"i-{n}") in mine)
        await b.create_instance(started(iid), NO_REUSE)
        for _ in range(3):
            b._next_sweep.clear()  # sweep the rows at each call, not once a second
            assert await b.lock_next_orchestration_work_item("b", LEASE) is None
        a._next_sweep.clear()
        item = await a.lock_next_orchestration_work_item("a", LEASE)
        assert item is not None and item.instance_id == iid

        late = next(f"j-{n}" for n in itertools.count() if a._control_queue(f"j-{n}") in mine)
        await b.create_instance(started(late), NO_REUSE)
        monkeypatch.setattr(_dequeue, "OVERDUE_AFTER", 0.0)  # now it is
        b._next_sweep.clear()
        item = await b.lock_next_orchestration_work_item("b", LEASE)
        assert item is not None and item.instance_id == late
    finally:
        await a.delete_task_hub()
        await a.close()
        await b.close()
