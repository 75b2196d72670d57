"""The task hub clients against the memory store, with the test playing the worker."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

import duratask.client as client_module
from duratask.backends import open_store
from duratask.backends.base import (
    InstanceQuery,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
)
from duratask.backends.memory import MemoryOrchestrationService
from duratask.client import AsyncTaskHubClient, ReuseIdPolicy, TaskHubClient
from duratask.converter import JsonDataConverter
from duratask.errors import (
    InvalidInstanceIdError,
    InvalidOperationError,
    OrchestrationAlreadyExistsError,
    OrchestrationFinishedError,
    OrchestrationNotFoundError,
    OrchestrationWaitTimeoutError,
    PayloadTooLargeError,
    SerializationError,
)
from duratask.history import (
    EventRaised,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
    OrchestratorStarted,
    ParentInstanceInfo,
)
from duratask.state import OrchestrationState, OrchestrationStatus

S = OrchestrationStatus
LEASE = timedelta(minutes=5)


@dataclasses.dataclass
class Order:
    sku: str
    quantity: int
    placed: datetime


class Color(enum.Enum):
    RED = "red"


def greet(ctx: Any, name: str) -> str:
    return f"hello {name}"


class SpyStore(MemoryOrchestrationService):
    """Signals once the client has polled an instance's state."""

    def __init__(self) -> None:
        super().__init__()
        self.polled = asyncio.Event()

    async def get_instance(self, instance_id: str) -> OrchestrationState | None:
        state = await super().get_instance(instance_id)
        self.polled.set()
        return state


class TaggingConverter(JsonDataConverter):
    """Decodes every payload as ("decoded", value) so its use is visible."""

    def deserialize(self, text: str | None, type_hint: Any = None) -> Any:
        return ("decoded", super().deserialize(text, type_hint))


@pytest.fixture
def store() -> SpyStore:
    return SpyStore()


@pytest.fixture
async def client(store: SpyStore) -> AsyncIterator[AsyncTaskHubClient]:
    async with AsyncTaskHubClient(store) as c:
        yield c


# -- a fake worker -------------------------------------------------------------------------


async def lock(store: MemoryOrchestrationService, instance_id: str) -> OrchestrationWorkItem:
    """Lease ``instance_id``, skipping (and then releasing) other instances with messages."""
    skipped: list[OrchestrationWorkItem] = []
    try:
        while True:
            work_item = await store.lock_next_orchestration_work_item("test-worker", LEASE)
            assert work_item is not None, f"nothing to lock for {instance_id!r}"
            if work_item.instance_id == instance_id:
                return work_item
            skipped.append(work_item)
    finally:
        for other in skipped:
            await store.abandon_orchestration_work_item(other)


async def messages_of(store: MemoryOrchestrationService, instance_id: str) -> list[HistoryEvent]:
    """The events queued for the instance (the lease is then given back)."""
    work_item = await lock(store, instance_id)
    await store.abandon_orchestration_work_item(work_item)
    return [m.message.event for m in work_item.messages]


async def run_episode(
    store: MemoryOrchestrationService,
    instance_id: str,
    status: OrchestrationStatus,
    *,
    output: str | None = None,
) -> None:
    """Consume the instance's messages and move it to ``status``, as a worker would."""
    work_item = await lock(store, instance_id)
    state = await store.get_instance(instance_id)
    assert state is not None
    now = datetime.now(UTC)
    events: list[HistoryEvent] = [OrchestratorStarted(timestamp=now)]
    events += [m.message.event for m in work_item.messages]
    if status.is_terminal:
        events.append(ExecutionCompleted(timestamp=now, status=status, result=output))
    new_state = dataclasses.replace(
        state,
        runtime_status=status,
        serialized_output=output,
        last_updated_at=now,
        completed_at=now if status.is_terminal else None,
    )
    commit = OrchestrationCommit(
        state=new_state,
        new_events=events,
        consumed_message_ids=[m.message_id for m in work_item.messages],
    )
    await store.commit_episode(work_item.fence(), commit)


async def start_child(
    store: MemoryOrchestrationService, parent_id: str, child_id: str, task_id: int
) -> None:
    event = ExecutionStarted(
        timestamp=datetime.now(UTC),
        name="child",
        instance_id=child_id,
        execution_id=uuid.uuid4().hex,
        parent=ParentInstanceInfo(
            instance_id=parent_id, execution_id="x", name="parent", task_scheduled_id=task_id
        ),
    )
    await store.create_instance(OrchestrationMessage(child_id, event), frozenset())


# -- scheduling ----------------------------------------------------------------------------


async def test_schedule_stores_pending_instance_with_encoded_input(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration(
        greet, input="ada", instance_id="order-1", version="2", tags={"team": "billing"}
    )

    assert instance_id == "order-1"
    state = await store.get_instance("order-1")
    assert state is not None
    assert state.runtime_status is S.PENDING
    assert state.name == "greet"
    assert state.version == "2"
    assert state.serialized_input == '"ada"'
    [start] = await messages_of(store, "order-1")
    assert isinstance(start, ExecutionStarted)
    assert (start.name, start.instance_id, start.input) == ("greet", "order-1", '"ada"')
    assert start.tags == {"team": "billing"}
    assert start.execution_id and start.timestamp.tzinfo is not None


async def test_schedule_defaults_to_a_fresh_hex_id_and_accepts_a_name(
    client: AsyncTaskHubClient,
) -> None:
    first = await client.schedule_new_orchestration("by_name")
    second = await client.schedule_new_orchestration("by_name")

    assert first != second
    assert len(first) == 32 and int(first, 16) >= 0
    state = await client.get_orchestration_state(first)
    assert state is not None and state.name == "by_name"


async def test_dataclass_datetime_and_enum_inputs_are_encoded(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    placed = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    value = {"order": Order("sku-1", 3, placed), "day": date(2024, 5, 2), "color": Color.RED}

    instance_id = await client.schedule_new_orchestration("ship", input=value)

    state = await client.get_orchestration_state(instance_id)
    assert state is not None
    assert state.input == {
        "order": {"sku": "sku-1", "quantity": 3, "placed": "2024-05-01T12:30:00Z"},
        "day": "2024-05-02",
        "color": "red",
    }


async def test_unserialisable_input_stores_nothing(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    with pytest.raises(SerializationError, match="input of orchestration 'greet'"):
        await client.schedule_new_orchestration(greet, input=object(), instance_id="bad")

    assert await store.get_instance("bad") is None
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None


async def test_oversize_input_stores_nothing(store: SpyStore) -> None:
    async with AsyncTaskHubClient(store, max_payload_bytes=100) as client:
        await client.schedule_new_orchestration("ok", input="x" * 90, instance_id="small")
        with pytest.raises(PayloadTooLargeError, match="input of orchestration 'big'"):
            await client.schedule_new_orchestration("big", input="x" * 200, instance_id="large")

    assert await store.get_instance("small") is not None
    assert await store.get_instance("large") is None


@pytest.mark.parametrize(
    ("bad_id", "reason"),
    [
        ("", "empty"),
        ("x" * 10_000, "over the limit"),
        ("a\x00b", "control character"),
        ("line\n", "control character"),
        ("del\x7f", "control character"),
    ],
)
async def test_invalid_instance_ids_are_refused(
    client: AsyncTaskHubClient, store: SpyStore, bad_id: str, reason: str
) -> None:
    with pytest.raises(InvalidInstanceIdError, match=reason):
        await client.schedule_new_orchestration("f", instance_id=bad_id)

    assert (await store.query_instances(_all())).states == []


async def test_instance_id_of_256_characters_is_accepted(client: AsyncTaskHubClient) -> None:
    long_id = "é" * 256
    assert await client.schedule_new_orchestration("f", instance_id=long_id) == long_id


async def test_duplicate_id_while_pending_is_refused(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    await client.schedule_new_orchestration("f", input=1, instance_id="dup")

    with pytest.raises(OrchestrationAlreadyExistsError, match="dup"):
        await client.schedule_new_orchestration("f", input=2, instance_id="dup")

    state = await store.get_instance("dup")
    assert state is not None and state.serialized_input == "1"


async def test_duplicate_id_while_running_is_refused(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    await client.schedule_new_orchestration("f", instance_id="dup")
    await run_episode(store, "dup", S.RUNNING)

    with pytest.raises(OrchestrationAlreadyExistsError):
        await client.schedule_new_orchestration("f", instance_id="dup")


@pytest.mark.parametrize("final", [S.COMPLETED, S.FAILED, S.TERMINATED])
async def test_finished_instance_is_replaced_by_default(
    client: AsyncTaskHubClient, store: SpyStore, final: OrchestrationStatus
) -> None:
    await client.schedule_new_orchestration("f", input=1, instance_id="again")
    await run_episode(store, "again", final)

    await client.schedule_new_orchestration("f", input=2, instance_id="again")

    state = await store.get_instance("again")
    assert state is not None
    assert (state.runtime_status, state.serialized_input) == (S.PENDING, "2")


async def test_error_if_exists_policy_refuses_finished_instances(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    await client.schedule_new_orchestration("f", instance_id="once")
    await run_episode(store, "once", S.COMPLETED)

    with pytest.raises(OrchestrationAlreadyExistsError):
        await client.schedule_new_orchestration(
            "f", instance_id="once", reuse_id_policy=ReuseIdPolicy.error_if_exists()
        )

    state = await store.get_instance("once")
    assert state is not None and state.runtime_status is S.COMPLETED


def test_reuse_policies() -> None:
    assert ReuseIdPolicy().replaceable_statuses == {S.COMPLETED, S.FAILED, S.TERMINATED}
    assert ReuseIdPolicy.replace_terminal() == ReuseIdPolicy()
    assert ReuseIdPolicy.error_if_exists().replaceable_statuses == frozenset()


async def test_start_at_must_be_aware_and_is_stored_in_utc(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    with pytest.raises(ValueError, match="start_at"):
        await client.schedule_new_orchestration("f", start_at=datetime(2030, 1, 1))
    assert (await store.query_instances(_all())).states == []

    later = datetime(2030, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    instance_id = await client.schedule_new_orchestration("f", start_at=later)

    state = await client.get_orchestration_state(instance_id)
    assert state is not None
    assert state.scheduled_start_at == later
    assert state.scheduled_start_at is not None and state.scheduled_start_at.tzinfo is UTC
    [start] = await messages_of(store, instance_id)
    assert isinstance(start, ExecutionStarted) and start.scheduled_start_time == later


async def test_clock_sets_the_timestamps(store: SpyStore) -> None:
    fixed = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with AsyncTaskHubClient(store, clock=lambda: fixed) as client:
        instance_id = await client.schedule_new_orchestration("f")
        await client.raise_orchestration_event(instance_id, "go")

    state = await store.get_instance(instance_id)
    assert state is not None and state.created_at == fixed
    assert [e.timestamp for e in await messages_of(store, instance_id)] == [fixed, fixed]


async def test_naive_clock_is_refused(store: SpyStore) -> None:
    async with AsyncTaskHubClient(store, clock=lambda: datetime(2024, 1, 1)) as client:
        with pytest.raises(ValueError, match="clock"):
            await client.schedule_new_orchestration("f")


# -- reading -------------------------------------------------------------------------------


async def test_states_decode_with_the_client_converter(store: SpyStore) -> None:
    converter = TaggingConverter()
    async with AsyncTaskHubClient(store, data_converter=converter) as client:
        instance_id = await client.schedule_new_orchestration("f", input={"a": 1})
        await run_episode(store, instance_id, S.COMPLETED, output="[1,2]")

        state = await client.get_orchestration_state(instance_id)
        page = await client.query_orchestrations()
        done = await client.wait_for_orchestration_completion(instance_id, timeout=1)

    for got in (state, page.states[0], done):
        assert got is not None
        assert got.converter is converter
        assert got.input == ("decoded", {"a": 1})
        assert got.output == ("decoded", [1, 2])


async def test_missing_instance_has_no_state(client: AsyncTaskHubClient) -> None:
    assert await client.get_orchestration_state("nope") is None


async def test_history_of_an_instance(client: AsyncTaskHubClient, store: SpyStore) -> None:
    instance_id = await client.schedule_new_orchestration("f", input=5)
    assert await client.get_orchestration_history(instance_id) == []

    await run_episode(store, instance_id, S.COMPLETED, output="6")

    history = await client.get_orchestration_history(instance_id)
    assert [type(e) for e in history] == [OrchestratorStarted, ExecutionStarted, ExecutionCompleted]
    with pytest.raises(OrchestrationNotFoundError, match="nope"):
        await client.get_orchestration_history("nope")


async def test_query_pages_through_all_matches(store: SpyStore) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    ticks = iter(range(100))
    async with AsyncTaskHubClient(store, clock=lambda: base + timedelta(seconds=next(ticks))) as c:
        for i in range(5):
            await c.schedule_new_orchestration("alpha", instance_id=f"a-{i}")
        await c.schedule_new_orchestration("beta", instance_id="b-0")

        seen: list[str] = []
        token: str | None = None
        pages = 0
        while True:
            page = await c.query_orchestrations(name="alpha", page_size=2, continuation_token=token)
            pages += 1
            seen += [s.instance_id for s in page.states]
            assert all(s.converter is c.data_converter for s in page.states)
            token = page.continuation_token
            if token is None:
                break

        assert seen == [f"a-{i}" for i in range(5)]
        assert pages == 3
        by_prefix = await c.query_orchestrations(instance_id_prefix="b-")
        assert [s.instance_id for s in by_prefix.states] == ["b-0"]
        window = await c.query_orchestrations(
            created_from=base + timedelta(seconds=1), created_to=base + timedelta(seconds=3)
        )
        assert [s.instance_id for s in window.states] == ["a-1", "a-2"]
        assert (await c.query_orchestrations(statuses=[S.RUNNING])).states == []
        assert len((await c.query_orchestrations(statuses={S.PENDING})).states) == 6


@pytest.mark.parametrize("page_size", [0, -1, 1001])
async def test_query_page_size_is_bounded(client: AsyncTaskHubClient, page_size: int) -> None:
    with pytest.raises(ValueError, match="page_size"):
        await client.query_orchestrations(page_size=page_size)


async def test_query_refuses_naive_datetimes(client: AsyncTaskHubClient) -> None:
    with pytest.raises(ValueError, match="created_from"):
        await client.query_orchestrations(created_from=datetime(2024, 1, 1))


# -- signalling ----------------------------------------------------------------------------


async def test_raise_event_enqueues_encoded_event(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    placed = datetime(2024, 5, 1, tzinfo=UTC)

    await client.raise_orchestration_event(instance_id, "approved", Order("s", 1, placed))

    _, event = await messages_of(store, instance_id)
    assert isinstance(event, EventRaised)
    assert event.name == "approved"
    assert event.input == '{"sku":"s","quantity":1,"placed":"2024-05-01T00:00:00Z"}'


async def test_raise_event_checks_name_payload_and_instance(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    with pytest.raises(ValueError, match="event name"):
        await client.raise_orchestration_event(instance_id, "")
    with pytest.raises(SerializationError, match="'approved'"):
        await client.raise_orchestration_event(instance_id, "approved", object())
    with pytest.raises(OrchestrationNotFoundError, match="ghost"):
        await client.raise_orchestration_event("ghost", "approved")

    assert len(await messages_of(store, instance_id)) == 1


async def test_terminate_enqueues_termination(client: AsyncTaskHubClient, store: SpyStore) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    await run_episode(store, instance_id, S.RUNNING)

    await client.terminate_orchestration(instance_id, output={"why": "stuck"}, recursive=False)

    [event] = await messages_of(store, instance_id)
    assert isinstance(event, ExecutionTerminated)
    assert event.input == '{"why":"stuck"}'
    assert event.recurse is False


async def test_terminate_is_recursive_by_default(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    await client.terminate_orchestration(instance_id)

    _, event = await messages_of(store, instance_id)
    assert isinstance(event, ExecutionTerminated) and event.recurse is True


async def test_suspend_and_resume_enqueue_their_events(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    await run_episode(store, instance_id, S.RUNNING)

    await client.suspend_orchestration(instance_id, reason="maintenance")
    await client.resume_orchestration(instance_id)

    suspended, resumed = await messages_of(store, instance_id)
    assert isinstance(suspended, ExecutionSuspended) and suspended.reason == "maintenance"
    assert isinstance(resumed, ExecutionResumed) and resumed.reason is None


async def test_signals_to_a_missing_instance_raise_not_found(client: AsyncTaskHubClient) -> None:
    with pytest.raises(OrchestrationNotFoundError):
        await client.terminate_orchestration("ghost")
    with pytest.raises(OrchestrationNotFoundError):
        await client.suspend_orchestration("ghost")
    with pytest.raises(OrchestrationNotFoundError):
        await client.resume_orchestration("ghost")


async def test_signals_to_a_finished_instance_are_refused(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    await run_episode(store, instance_id, S.COMPLETED)

    for signal in (
        client.raise_orchestration_event(instance_id, "go"),
        client.terminate_orchestration(instance_id),
        client.suspend_orchestration(instance_id),
        client.resume_orchestration(instance_id),
    ):
        with pytest.raises(OrchestrationFinishedError, match=r"already finished \(COMPLETED\)"):
            await signal

    assert await store.lock_next_orchestration_work_item("w", LEASE) is None


# -- waiting -------------------------------------------------------------------------------


async def test_wait_for_completion_times_out(client: AsyncTaskHubClient) -> None:
    instance_id = await client.schedule_new_orchestration("f", instance_id="slow")

    with pytest.raises(OrchestrationWaitTimeoutError) as caught:
        await client.wait_for_orchestration_completion(instance_id, timeout=0.05)

    message = str(caught.value)
    assert "'slow'" in message and "complete" in message and "PENDING" in message


async def test_wait_for_completion_returns_once_a_worker_finishes(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    waiter = asyncio.create_task(client.wait_for_orchestration_completion(instance_id, timeout=5))
    await store.polled.wait()
    assert not waiter.done()

    await run_episode(store, instance_id, S.COMPLETED, output='"done"')

    state = await waiter
    assert state.runtime_status is S.COMPLETED
    assert state.output == "done"


async def test_continued_as_new_is_not_completion(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    await run_episode(store, instance_id, S.CONTINUED_AS_NEW)

    with pytest.raises(OrchestrationWaitTimeoutError, match="CONTINUED_AS_NEW"):
        await client.wait_for_orchestration_completion(instance_id, timeout=timedelta(seconds=0.05))


async def test_wait_for_start(client: AsyncTaskHubClient, store: SpyStore) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    with pytest.raises(OrchestrationWaitTimeoutError, match="start"):
        await client.wait_for_orchestration_start(instance_id, timeout=0.02)

    await run_episode(store, instance_id, S.RUNNING)

    state = await client.wait_for_orchestration_start(instance_id, timeout=0)
    assert state.runtime_status is S.RUNNING


async def test_wait_on_a_missing_instance_raises_not_found(client: AsyncTaskHubClient) -> None:
    with pytest.raises(OrchestrationNotFoundError):
        await client.wait_for_orchestration_completion("ghost", timeout=1)
    with pytest.raises(OrchestrationNotFoundError):
        await client.wait_for_orchestration_start("ghost", timeout=1)


async def test_wait_raises_not_found_if_the_instance_disappears(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    waiter = asyncio.create_task(client.wait_for_orchestration_completion(instance_id, timeout=5))
    await store.polled.wait()

    await store.delete_task_hub()

    with pytest.raises(OrchestrationNotFoundError):
        await waiter


async def test_negative_timeout_is_refused(client: AsyncTaskHubClient) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    with pytest.raises(ValueError, match="timeout"):
        await client.wait_for_orchestration_completion(instance_id, timeout=-1)


# -- purging -------------------------------------------------------------------------------


async def test_purging_a_live_instance_is_refused(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f", instance_id="busy")
    await run_episode(store, instance_id, S.RUNNING)

    with pytest.raises(InvalidOperationError, match=r"'busy'.*RUNNING"):
        await client.purge_orchestration(instance_id)

    assert await store.get_instance(instance_id) is not None


async def test_purging_a_finished_instance_removes_it(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    instance_id = await client.schedule_new_orchestration("f")
    await run_episode(store, instance_id, S.COMPLETED)

    assert await client.purge_orchestration(instance_id) == 1

    assert await client.get_orchestration_state(instance_id) is None
    assert await store.get_history(instance_id) == []
    with pytest.raises(OrchestrationNotFoundError):
        await client.purge_orchestration(instance_id)


async def _family(client: AsyncTaskHubClient, store: SpyStore) -> None:
    """parent -> (child-1 -> grandchild, child-2), all finished, plus an unrelated instance."""
    await client.schedule_new_orchestration("parent", instance_id="parent")
    await client.schedule_new_orchestration("other", instance_id="other")
    await start_child(store, "parent", "child-1", 1)
    await start_child(store, "parent", "child-2", 2)
    await start_child(store, "child-1", "grandchild", 1)
    for instance_id in ("parent", "other", "child-1", "child-2", "grandchild"):
        await run_episode(store, instance_id, S.COMPLETED)


async def test_recursive_purge_removes_descendants(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    await _family(client, store)

    assert await client.purge_orchestration("parent") == 4

    remaining = [s.instance_id for s in (await store.query_instances(_all())).states]
    assert remaining == ["other"]


async def test_non_recursive_purge_keeps_children(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    await _family(client, store)

    assert await client.purge_orchestration("parent", recursive=False) == 1

    remaining = {s.instance_id for s in (await store.query_instances(_all())).states}
    assert remaining == {"other", "child-1", "child-2", "grandchild"}


async def test_recursive_purge_leaves_running_children(
    client: AsyncTaskHubClient, store: SpyStore
) -> None:
    await client.schedule_new_orchestration("parent", instance_id="parent")
    await start_child(store, "parent", "running-child", 1)
    await start_child(store, "parent", "done-child", 2)
    await start_child(store, "running-child", "grandchild", 1)
    await run_episode(store, "parent", S.TERMINATED)
    await run_episode(store, "running-child", S.RUNNING)
    await run_episode(store, "done-child", S.FAILED)
    await run_episode(store, "grandchild", S.COMPLETED)

    assert await client.purge_orchestration("parent") == 2

    remaining = {s.instance_id for s in (await store.query_instances(_all())).states}
    assert remaining == {"running-child", "grandchild"}


async def test_recursive_purge_pages_through_many_children(
    client: AsyncTaskHubClient, store: SpyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_QUERY_PAGE_SIZE", 2)
    await client.schedule_new_orchestration("parent", instance_id="parent")
    await run_episode(store, "parent", S.COMPLETED)
    for i in range(5):
        await start_child(store, "parent", f"c{i}", i)
        await run_episode(store, f"c{i}", S.COMPLETED)

    assert await client.purge_orchestration("parent") == 6
    assert (await store.query_instances(_all())).states == []


async def test_bulk_purge_removes_only_matching_finished_instances(
    store: SpyStore,
) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    ticks = iter(range(100))
    async with AsyncTaskHubClient(store, clock=lambda: base + timedelta(days=next(ticks))) as c:
        for instance_id in ("done-old", "failed-old", "pending-old", "done-new"):
            await c.schedule_new_orchestration("f", instance_id=instance_id)
        await run_episode(store, "done-old", S.COMPLETED)
        await run_episode(store, "failed-old", S.FAILED)
        await run_episode(store, "done-new", S.COMPLETED)

        with pytest.raises(ValueError, match="RUNNING"):
            await c.purge_orchestrations(statuses=[S.COMPLETED, S.RUNNING])
        with pytest.raises(ValueError, match="created_before"):
            await c.purge_orchestrations(created_before=datetime(2024, 1, 1))

        purged = await c.purge_orchestrations(
            created_before=base + timedelta(days=3), statuses=[S.COMPLETED]
        )
        assert purged == 1
        assert await c.purge_orchestrations() == 2

        remaining = [s.instance_id for s in (await c.query_orchestrations()).states]
        assert remaining == ["pending-old"]


# -- lifecycle -----------------------------------------------------------------------------


class CountingStore(MemoryOrchestrationService):
    def __init__(self) -> None:
        super().__init__()
        self.opened = 0
        self.closed = 0

    async def open(self, *, create: bool = True) -> None:
        await asyncio.sleep(0)
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1


async def test_store_is_opened_once_lazily_and_left_open_for_its_owner() -> None:
    store = CountingStore()
    client = AsyncTaskHubClient(store)
    assert store.opened == 0

    await asyncio.gather(*(client.get_orchestration_state(f"i{n}") for n in range(5)))
    await client.close()
    await client.close()

    assert (store.opened, store.closed) == (1, 0)
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_orchestration_state("x")


async def test_store_built_from_a_url_is_closed_with_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = CountingStore()
    monkeypatch.setattr(MemoryOrchestrationService, "named", classmethod(lambda cls, n: store))

    async with AsyncTaskHubClient(f"memory://{uuid.uuid4().hex}") as client:
        assert client.store is store
        await client.get_orchestration_state("x")

    assert (store.opened, store.closed) == (1, 1)


# -- the sync client -----------------------------------------------------------------------


@pytest.fixture
def hub_url() -> Iterator[str]:
    name = f"client-test-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    MemoryOrchestrationService._registry.pop(name, None)


def test_sync_client_from_plain_code(hub_url: str) -> None:
    threads_before = set(threading.enumerate())
    with TaskHubClient(hub_url) as client:
        instance_id = client.schedule_new_orchestration(greet, input="ada", instance_id="sync-1")
        assert instance_id == "sync-1"
        state = client.get_orchestration_state(instance_id)
        assert state is not None
        assert (state.runtime_status, state.input) == (S.PENDING, "ada")
        assert state.converter is client.data_converter
        assert [s.instance_id for s in client.query_orchestrations().states] == ["sync-1"]
        assert client.get_orchestration_history(instance_id) == []
        client.raise_orchestration_event(instance_id, "go", 1)
        client.suspend_orchestration(instance_id)
        client.resume_orchestration(instance_id)
        client.terminate_orchestration(instance_id)
        with pytest.raises(OrchestrationWaitTimeoutError):
            client.wait_for_orchestration_start(instance_id, timeout=0.02)
        with pytest.raises(OrchestrationNotFoundError):
            client.wait_for_orchestration_completion("ghost", timeout=0.02)
        with pytest.raises(InvalidOperationError):
            client.purge_orchestration(instance_id)
        with pytest.raises(OrchestrationAlreadyExistsError):
            client.schedule_new_orchestration(greet, instance_id="sync-1")
        assert client.purge_orchestrations() == 0
        portal_thread = client._portal.thread
        assert portal_thread is not None and portal_thread.is_alive()

    assert not portal_thread.is_alive()
    assert set(threading.enumerate()) <= threads_before
    store = open_store(hub_url)
    events = asyncio.run(_drain(store, "sync-1"))
    assert [type(e) for e in events] == [
        ExecutionStarted,
        EventRaised,
        ExecutionSuspended,
        ExecutionResumed,
        ExecutionTerminated,
    ]


async def _drain(store: Any, instance_id: str) -> list[HistoryEvent]:
    return await messages_of(store, instance_id)


def test_sync_client_close_is_idempotent_and_final(hub_url: str) -> None:
    client = TaskHubClient(hub_url)
    client.close()  # never used: no thread was started
    assert client._portal.thread is None

    client = TaskHubClient(hub_url)
    client.get_orchestration_state("x")
    thread = client._portal.thread
    client.close()
    client.close()

    assert thread is not None and not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        client.get_orchestration_state("x")


def test_sync_wait_returns_after_completion(hub_url: str) -> None:
    with TaskHubClient(hub_url) as client:
        instance_id = client.schedule_new_orchestration("f")
        store = open_store(hub_url)
        assert isinstance(store, MemoryOrchestrationService)
        asyncio.run(run_episode(store, instance_id, S.FAILED))

        state = client.wait_for_orchestration_completion(instance_id, timeout=1)
        assert state.runtime_status is S.FAILED
        assert client.purge_orchestration(instance_id) == 1


def _all() -> InstanceQuery:
    return InstanceQuery(page_size=1000)
