"""The entity half of the store seam, the same on every store: leasing, fencing, lock
holders, delays, deduplication state, queries and cleaning."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from duratask.backends.base import (
    EntityCommit,
    EntityMessage,
    EntityQuery,
    EntityRecord,
    OrchestrationMessage,
    TaskHubStore,
    WorkFilter,
)
from duratask.errors import LeaseLostError
from duratask.history import EntityOperationCompleted, ExecutionStarted

from .conftest import T0, FakeClock

LEASE = timedelta(seconds=30)


def signal(entity: str, request: str, source: str | None = None, **kw: object) -> EntityMessage:
    return EntityMessage(entity, "signal", request, "add", "1", source=source, **kw)  # type: ignore[arg-type]


async def test_a_message_creates_the_entity_and_is_leased_with_its_batch(
    store: TaskHubStore,
) -> None:
    assert await store.lock_next_entity_work_item("w", LEASE) is None
    for i in range(5):
        await store.send_entity_message(signal("@counter@a", f"r{i}"))
    item = await store.lock_next_entity_work_item("w", LEASE, max_messages=3)
    assert item is not None
    assert item.entity_id == "@counter@a"
    assert item.record == EntityRecord()
    assert [m.message.request_id for m in item.messages] == ["r0", "r1", "r2"]
    assert all(m.dequeue_count == 1 for m in item.messages)
    # Leased: no one else gets it.
    assert await store.lock_next_entity_work_item("w2", LEASE) is None
    record = EntityRecord("3", None, ("r0", "r1", "r2"))
    await store.complete_entity_work_item(
        item, EntityCommit(record, [m.message_id for m in item.messages])
    )
    found = await store.get_entity("@counter@a")
    assert found is not None
    assert (found.serialized_state, found.backlog, found.last_modified_at) == ("3", 2, T0)
    again = await store.lock_next_entity_work_item("w2", LEASE)
    assert again is not None and again.record == record
    assert [m.message.request_id for m in again.messages] == ["r3", "r4"]


async def test_two_workers_never_hold_one_entity(store: TaskHubStore, peer: TaskHubStore) -> None:
    for i in range(3):
        await store.send_entity_message(signal(f"@counter@{i}", f"r{i}"))
    leased = await asyncio.gather(
        *(s.lock_next_entity_work_item(f"w{n}", LEASE) for n, s in enumerate([store, peer] * 3))
    )
    ids = [item.entity_id for item in leased if item is not None]
    assert sorted(ids) == ["@counter@0", "@counter@1", "@counter@2"]


async def test_a_lost_lease_refuses_the_commit(
    store: TaskHubStore, peer: TaskHubStore, clock: FakeClock
) -> None:
    await store.send_entity_message(signal("@counter@a", "r1"))
    first = await store.lock_next_entity_work_item("w1", LEASE)
    assert first is not None
    clock.advance(LEASE + timedelta(seconds=1))
    second = await peer.lock_next_entity_work_item("w2", LEASE)
    assert second is not None and second.messages[0].dequeue_count == 2
    with pytest.raises(LeaseLostError):
        await store.complete_entity_work_item(first, EntityCommit(EntityRecord("9")))
    with pytest.raises(LeaseLostError):
        await store.renew_entity_work_item(first, LEASE)
    await peer.complete_entity_work_item(
        second, EntityCommit(EntityRecord("1"), [second.messages[0].message_id])
    )
    found = await store.get_entity("@counter@a")
    assert found is not None and found.serialized_state == "1" and found.backlog == 0


async def test_a_renewal_extends_the_entity_lease(
    store: TaskHubStore, peer: TaskHubStore, clock: FakeClock
) -> None:
    await store.send_entity_message(signal("@counter@a", "r1"))
    item = await store.lock_next_entity_work_item("w1", LEASE)
    assert item is not None and item.locked_until == T0 + LEASE
    clock.advance(timedelta(seconds=20))
    await store.renew_entity_work_item(item, LEASE)
    assert item.locked_until == T0 + timedelta(seconds=20) + LEASE
    clock.advance(LEASE - timedelta(seconds=10))  # past the first lease, within the renewed one
    assert await peer.lock_next_entity_work_item("w2", LEASE) is None
    await store.complete_entity_work_item(
        item, EntityCommit(EntityRecord("1"), [item.messages[0].message_id])
    )


async def test_a_locked_entity_gets_only_its_holders_messages(store: TaskHubStore) -> None:
    await store.send_entity_message(signal("@counter@a", "r1", source="other"))
    await store.send_entity_message(signal("@counter@a", "r2", source="holder"))
    item = await store.lock_next_entity_work_item("w", LEASE)
    assert item is not None
    # Commit as if the batch had locked the entity for "holder" before r1 applied.
    await store.complete_entity_work_item(item, EntityCommit(EntityRecord(None, "holder")))
    again = await store.lock_next_entity_work_item("w", LEASE)
    assert again is not None
    assert [m.message.request_id for m in again.messages] == ["r2"]
    await store.complete_entity_work_item(
        again, EntityCommit(EntityRecord("1", "holder"), [again.messages[0].message_id])
    )
    # Only "other"'s message waits now: nothing to lease while "holder" holds the lock.
    assert await store.lock_next_entity_work_item("w", LEASE) is None
    found = await store.get_entity("@counter@a")
    assert found is not None and found.locked_by == "holder" and found.backlog == 1


async def test_delayed_messages_and_abandon(store: TaskHubStore, clock: FakeClock) -> None:
    await store.send_entity_message(
        signal("@counter@a", "r1", visible_at=T0 + timedelta(minutes=5))
    )
    assert await store.lock_next_entity_work_item("w", LEASE) is None
    clock.advance(timedelta(minutes=5))
    item = await store.lock_next_entity_work_item("w", LEASE)
    assert item is not None
    assert item.messages[0].message.visible_at == T0 + timedelta(minutes=5)
    await store.abandon_entity_work_item(item, T0 + timedelta(minutes=10))
    assert await store.lock_next_entity_work_item("w", LEASE) is None
    clock.advance(timedelta(minutes=5, microseconds=1))
    again = await store.lock_next_entity_work_item("w", LEASE)
    assert again is not None and again.messages[0].dequeue_count == 2


async def test_work_filter_names_entities(store: TaskHubStore) -> None:
    await store.send_entity_message(signal("@counter@a", "r1"))
    nothing = WorkFilter(entities=frozenset({"account"}))
    assert await store.lock_next_entity_work_item("w", LEASE, work_filter=nothing) is None
    assert (
        await store.lock_next_entity_work_item(
            "w", LEASE, work_filter=WorkFilter(entities=frozenset())
        )
        is None
    )
    counters = WorkFilter(entities=frozenset({"counter"}))
    assert await store.lock_next_entity_work_item("w", LEASE, work_filter=counters) is not None


async def test_a_batch_sends_to_entities_and_orchestrations_atomically(
    store: TaskHubStore,
) -> None:
    start = ExecutionStarted(
        timestamp=T0, name="Greet", instance_id="o1", execution_id="e1", input='"x"'
    )
    await store.send_message(OrchestrationMessage("o1", start))
    await store.send_entity_message(
        EntityMessage("@counter@a", "call", "r1", "get", source="o1", task_id=4)
    )
    item = await store.lock_next_entity_work_item("w", LEASE)
    assert item is not None
    answer = EntityOperationCompleted(timestamp=T0, task_scheduled_id=4, request_id="r1")
    commit = EntityCommit(
        EntityRecord("0"),
        [item.messages[0].message_id],
        [signal("@counter@b", "r2", source="@counter@a")],
        [OrchestrationMessage("o1", answer, "e1")],
    )
    await store.complete_entity_work_item(item, commit)
    work = await store.lock_next_orchestration_work_item("w", LEASE)
    assert work is not None
    assert [m.message.event for m in work.messages] == [start, answer]
    forwarded = await store.lock_next_entity_work_item("w", LEASE)
    assert forwarded is not None and forwarded.entity_id == "@counter@b"
    assert forwarded.messages[0].message.source == "@counter@a"


async def test_query_get_and_clean(store: TaskHubStore, clock: FakeClock) -> None:
    for key in ("b", "a", "c"):
        await store.send_entity_message(signal(f"@counter@{key}", f"r{key}"))
        item = await store.lock_next_entity_work_item("w", LEASE)
        assert item is not None
        await store.complete_entity_work_item(
            item, EntityCommit(EntityRecord(f'"{key}"'), [item.messages[0].message_id])
        )
        clock.advance(timedelta(minutes=1))
    # An entity with a row but no state is not shown, and is cleaned.
    await store.send_entity_message(signal("@other@x", "rx"))
    item = await store.lock_next_entity_work_item("w", LEASE)
    assert item is not None
    await store.complete_entity_work_item(
        item, EntityCommit(EntityRecord(None), [item.messages[0].message_id])
    )
    assert await store.get_entity("@other@x") is None
    first = await store.query_entities(EntityQuery(page_size=2, include_state=False))
    assert [e.entity_id for e in first.entities] == ["@counter@a", "@counter@b"]
    assert first.entities[0].serialized_state is None
    rest = await store.query_entities(
        EntityQuery(page_size=2, continuation_token=first.continuation_token)
    )
    assert [(e.entity_id, e.serialized_state) for e in rest.entities] == [("@counter@c", '"c"')]
    assert rest.continuation_token is None
    window = EntityQuery(
        last_modified_from=T0 + timedelta(minutes=1), last_modified_to=T0 + timedelta(minutes=2)
    )
    assert [e.entity_id for e in (await store.query_entities(window)).entities] == ["@counter@a"]
    assert (await store.query_entities(EntityQuery(name="other"))).entities == []
    cleaned = await store.clean_entity_storage()
    assert (cleaned.empty_entities_removed, cleaned.orphaned_locks_released) == (1, 0)
    assert len((await store.query_entities(EntityQuery())).entities) == 3
