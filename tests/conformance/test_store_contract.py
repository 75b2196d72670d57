"""The store contract (``duratask.backends.base``), checked on every store kind.

Time is a :class:`FakeClock` shared by the store(s) of a test: leases expire and timers come
due by advancing it, never by sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from duratask.backends import open_store
from duratask.backends.base import (
    ActivityRequest,
    ActivityWorkItem,
    EagerLease,
    HistoryMark,
    InstanceQuery,
    InstanceUnchanged,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationService,
    OrchestrationWorkItem,
    PurgeFilter,
    StatusChange,
    SupportsWakeUps,
    TaskHubStore,
    encode_continuation_token,
)
from duratask.backends.memory import MemoryOrchestrationService
from duratask.backends.sqlite import SqliteOrchestrationService
from duratask.errors import (
    InstanceBusyError,
    LeaseLostError,
    OrchestrationAlreadyExistsError,
    StoreError,
    TaskHubNotFoundError,
)
from duratask.history import (
    ContinueAsNew,
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationCalled,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityOperationSignaled,
    EntityUnlockSent,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    GenericEvent,
    HistoryEvent,
    OrchestratorCompleted,
    OrchestratorStarted,
    ParentInstanceInfo,
    SubOrchestrationInstanceCompleted,
    SubOrchestrationInstanceCreated,
    SubOrchestrationInstanceFailed,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from duratask.state import FailureDetails, OrchestrationState, OrchestrationStatus

from .conftest import ALL_SQLITE_VERSIONS, T0, FakeClock, StoreHub

S = OrchestrationStatus
LEASE = timedelta(seconds=30)
NO_REUSE: frozenset[OrchestrationStatus] = frozenset()
TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.TERMINATED})


# -- builders --------------------------------------------------------------------------------
def started(
    instance_id: str,
    *,
    name: str = "Greet",
    at: datetime = T0,
    input: str | None = '"world"',
    parent: str | None = None,
    execution_id: str = "exec-1",
) -> ExecutionStarted:
    info = ParentInstanceInfo(parent, "parent-exec", "Parent", 4) if parent else None
    return ExecutionStarted(
        timestamp=at,
        name=name,
        version="1.0",
        input=input,
        instance_id=instance_id,
        execution_id=execution_id,
        parent=info,
        scheduled_start_time=at + timedelta(minutes=5),
    )


def to(
    instance_id: str, event: HistoryEvent, visible_at: datetime | None = None
) -> OrchestrationMessage:
    return OrchestrationMessage(instance_id, event, execution_id="exec-1", visible_at=visible_at)


def raised(name: str, input: str | None = None) -> EventRaised:
    return EventRaised(timestamp=T0, name=name, input=input)


async def create(store: TaskHubStore, instance_id: str, **kwargs: Any) -> None:
    await store.create_instance(to(instance_id, started(instance_id, **kwargs)), NO_REUSE)


async def lock(store: TaskHubStore, owner: str = "w1") -> OrchestrationWorkItem:
    work_item = await store.lock_next_orchestration_work_item(owner, LEASE)
    assert work_item is not None, "expected a work item"
    return work_item


async def state_of(store: TaskHubStore, instance_id: str) -> OrchestrationState:
    state = await store.get_instance(instance_id)
    assert state is not None, f"no instance {instance_id!r}"
    return state


async def episode(
    store: TaskHubStore,
    work_item: OrchestrationWorkItem,
    status: OrchestrationStatus = S.RUNNING,
    finished: ActivityWorkItem | None = None,
    **commit: Any,
) -> OrchestrationCommit:
    """Commit an episode that consumes every message (unless told otherwise) and records
    them in the history."""
    state = dataclasses.replace(await state_of(store, work_item.instance_id), runtime_status=status)
    fields: dict[str, Any] = {
        "state": state,
        "new_events": [m.message.event for m in work_item.messages],
        "consumed_message_ids": [m.message_id for m in work_item.messages],
    }
    fields.update(commit)
    done = OrchestrationCommit(**fields, finished_activity=finished)
    await store.commit_episode(work_item.fence(), done)
    return done


async def drain(store: TaskHubStore, statuses: dict[str, OrchestrationStatus]) -> None:
    """Run one episode on every instance with messages, giving each its status."""
    while (work_item := await store.lock_next_orchestration_work_item("drain", LEASE)) is not None:
        await episode(store, work_item, statuses.get(work_item.instance_id, S.RUNNING))


def activity(instance_id: str, task_id: int, name: str = "Act") -> ActivityRequest:
    return ActivityRequest(instance_id, "exec-1", task_id, name, "1", f'"input-{task_id}"')


async def lock_activity(store: TaskHubStore, owner: str = "w1") -> ActivityWorkItem:
    leased = await store.lock_next_activity_work_items(owner, LEASE)
    assert len(leased) == 1, f"expected one activity, leased {leased}"
    return leased[0]


async def with_activities(store: TaskHubStore, instance_id: str, count: int) -> None:
    await create(store, instance_id)
    work_item = await lock(store)
    await episode(store, work_item, activities=[activity(instance_id, i) for i in range(count)])


def every_event() -> list[HistoryEvent]:
    """One event of every type, each field set away from its default."""
    failure = FailureDetails(
        "ValueError",
        "bad value ✗",
        "Traceback ...",
        inner_failure=FailureDetails("KeyError", "'k'"),
        is_non_retriable=True,
    )
    at = T0 + timedelta(microseconds=123_457)
    later = at + timedelta(hours=1, microseconds=1)
    return [
        ExecutionStarted(
            timestamp=at,
            name="Orch",
            version="2",
            input='{"a": [1, 2.5, null, "é🚀"]}',
            instance_id="i",
            execution_id="e",
            parent=ParentInstanceInfo("p", "pe", "Parent", 7),
            scheduled_start_time=later,
            tags={"team": "core"},
        ),
        ExecutionCompleted(timestamp=at, status=S.FAILED, result='"r"', failure_details=failure),
        ExecutionTerminated(timestamp=at, input='"why"', recurse=False),
        TaskScheduled(event_id=1, timestamp=at, name="act", version="1", input="[1]"),
        TaskCompleted(timestamp=at, task_scheduled_id=1, result="3"),
        TaskFailed(timestamp=at, task_scheduled_id=1, failure_details=failure),
        SubOrchestrationInstanceCreated(
            event_id=2, timestamp=at, name="Sub", version="1", instance_id="c", input="null"
        ),
        SubOrchestrationInstanceCompleted(timestamp=at, task_scheduled_id=2, result='"ok"'),
        SubOrchestrationInstanceFailed(timestamp=at, task_scheduled_id=2, failure_details=failure),
        TimerCreated(event_id=3, timestamp=at, fire_at=later),
        TimerFired(timestamp=at, timer_id=3, fire_at=later),
        OrchestratorStarted(timestamp=at),
        OrchestratorCompleted(timestamp=at),
        EventSent(event_id=4, timestamp=at, instance_id="o", name="ping", input='"x"'),
        EventRaised(timestamp=at, name="approve", input="true"),
        ContinueAsNew(timestamp=at, result='{"n": 2}'),
        GenericEvent(timestamp=at, data="d"),
        ExecutionSuspended(timestamp=at, reason="pause"),
        ExecutionResumed(timestamp=at, reason="go"),
        ExecutionRewound(timestamp=at, reason="fixed"),
        EntityOperationSignaled(
            event_id=5,
            timestamp=at,
            request_id="r1",
            operation="add",
            target_instance_id="@counter@a",
            input="1",
            scheduled_time=later,
        ),
        EntityOperationCalled(
            event_id=6,
            timestamp=at,
            request_id="r2",
            operation="get",
            target_instance_id="@counter@a",
        ),
        EntityOperationCompleted(timestamp=at, task_scheduled_id=6, request_id="r2", result="1"),
        EntityOperationFailed(
            timestamp=at, task_scheduled_id=6, request_id="r2", failure_details=failure
        ),
        EntityLockRequested(
            event_id=7, timestamp=at, critical_section_id="cs", lock_set=("@a@1", "@b@2")
        ),
        EntityLockGranted(timestamp=at, task_scheduled_id=7, critical_section_id="cs"),
        EntityUnlockSent(
            event_id=8, timestamp=at, critical_section_id="cs", target_instance_id="@a@1"
        ),
    ]


def _event_type_names(base: type[HistoryEvent] = HistoryEvent) -> set[str]:
    # By name: a slots dataclass leaves its pre-slots twin among the subclasses.
    found: set[str] = set()
    for cls in base.__subclasses__():
        found |= {cls.__name__} | _event_type_names(cls)
    return found


# -- creating instances ------------------------------------------------------------------------
async def test_create_instance_makes_a_pending_row(store: TaskHubStore) -> None:
    await create(store, "a", parent="p")
    state = await state_of(store, "a")
    assert state == OrchestrationState(
        instance_id="a",
        name="Greet",
        version="1.0",
        runtime_status=S.PENDING,
        created_at=T0,
        last_updated_at=T0,
        execution_id="exec-1",
        serialized_input='"world"',
        parent_instance_id="p",
        scheduled_start_at=T0 + timedelta(minutes=5),
    )
    assert state.created_at.utcoffset() == timedelta(0)
    assert state.converter is None
    assert await store.get_history("a") == []
    assert await store.get_instance("nobody") is None
    assert await store.get_history("nobody") == []


async def test_create_instance_enqueues_the_start_message(store: TaskHubStore) -> None:
    message = to("a", started("a"))
    await store.create_instance(message, NO_REUSE)
    work_item = await lock(store)
    assert work_item.instance_id == "a"
    assert [m.message for m in work_item.messages] == [message]


async def test_create_instance_needs_execution_started(store: TaskHubStore) -> None:
    with pytest.raises(TypeError):
        await store.create_instance(to("a", raised("x")), NO_REUSE)
    assert await store.get_instance("a") is None


async def test_naive_datetimes_are_refused(store: TaskHubStore) -> None:
    with pytest.raises(ValueError):
        await create(store, "a", at=datetime(2024, 1, 1))
    assert await store.get_instance("a") is None


async def test_duplicate_id_raises_and_changes_nothing(store: TaskHubStore) -> None:
    await create(store, "a")
    before = await state_of(store, "a")
    with pytest.raises(OrchestrationAlreadyExistsError) as info:
        await create(store, "a", input='"other"', at=T0 + timedelta(hours=1))
    assert info.value.instance_id == "a"
    with pytest.raises(OrchestrationAlreadyExistsError):
        await store.create_instance(to("a", started("a")), frozenset({S.COMPLETED}))
    assert await state_of(store, "a") == before
    work_item = await lock(store)
    assert [m.message.event for m in work_item.messages] == [started("a")]


async def test_replaceable_terminal_instance_starts_afresh(store: TaskHubStore) -> None:
    await create(store, "a")
    await episode(store, await lock(store), S.COMPLETED, activities=[activity("a", 0)])
    await store.send_message(to("a", raised("late")))
    assert await store.get_history("a") != []

    fresh = started("a", input='"again"', at=T0 + timedelta(hours=1), execution_id="exec-2")
    await store.create_instance(to("a", fresh), frozenset({S.COMPLETED, S.FAILED}))

    state = await state_of(store, "a")
    assert (state.runtime_status, state.serialized_input) == (S.PENDING, '"again"')
    assert (state.created_at, state.execution_id) == (T0 + timedelta(hours=1), "exec-2")
    assert state.completed_at is None
    assert await store.get_history("a") == []
    assert await store.lock_next_activity_work_items("w", LEASE) == []
    work_item = await lock(store)
    assert [m.message.event for m in work_item.messages] == [fresh]


# -- locking orchestration work items ----------------------------------------------------------
async def test_lock_returns_history_and_messages_in_order(store: TaskHubStore) -> None:
    await create(store, "a")
    first = await episode(store, await lock(store))
    events = [raised("one", "1"), raised("two", "2"), raised("three", "3")]
    for event in events:
        assert await store.send_message(to("a", event))

    work_item = await lock(store, owner="w2")
    assert work_item.instance_id == "a"
    assert work_item.history == list(first.new_events)
    assert [m.message.event for m in work_item.messages] == events
    ids = [m.message_id for m in work_item.messages]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [m.dequeue_count for m in work_item.messages] == [1, 1, 1]
    assert work_item.locked_until == T0 + LEASE
    assert work_item.state == first.state
    assert await store.lock_next_orchestration_work_item("w3", LEASE) is None


async def test_nothing_to_lock(store: TaskHubStore) -> None:
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None
    await create(store, "a")
    await episode(store, await lock(store))
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None


async def test_lock_prefers_the_longest_waiting_instance(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "z")
    clock.advance(timedelta(seconds=1))
    await create(store, "a")
    clock.advance(timedelta(seconds=1))
    # Enqueued last, but due before both others.
    await create(store, "m")
    await store.send_message(to("m", raised("early"), visible_at=T0 - timedelta(minutes=1)))

    order = [(await lock(store)).instance_id for _ in range(3)]
    assert order == ["m", "z", "a"]


async def test_message_arriving_during_the_lease_waits_for_the_next_lock(
    store: TaskHubStore,
) -> None:
    await create(store, "a")
    work_item = await lock(store)
    await store.send_message(to("a", raised("meanwhile")))
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None
    await episode(store, work_item)

    again = await lock(store)
    assert [m.message.event for m in again.messages] == [raised("meanwhile")]
    assert again.history == [started("a")]


async def test_redelivered_messages_count_their_dequeues(store: TaskHubStore) -> None:
    await create(store, "a")
    await store.abandon_orchestration_work_item(await lock(store))
    await store.abandon_orchestration_work_item(await lock(store))
    work_item = await lock(store)
    assert [m.dequeue_count for m in work_item.messages] == [3]


async def test_future_messages_are_not_delivered_before_visible_at(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a")
    await episode(store, await lock(store))
    due = T0 + timedelta(minutes=10)
    await store.send_message(to("a", raised("late"), visible_at=due))
    await store.send_message(to("a", raised("later"), visible_at=due + timedelta(minutes=1)))

    clock.advance(timedelta(minutes=10) - timedelta(microseconds=1))
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None
    clock.advance(timedelta(microseconds=1))
    work_item = await lock(store)
    assert [m.message.event for m in work_item.messages] == [raised("late")]
    assert work_item.messages[0].message.visible_at == due


async def test_visible_messages_come_in_enqueue_order_not_due_order(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a")
    await episode(store, await lock(store))
    await store.send_message(to("a", raised("first"), visible_at=T0 + timedelta(seconds=2)))
    await store.send_message(to("a", raised("second"), visible_at=T0 + timedelta(seconds=1)))
    await store.send_message(to("a", raised("third")))
    clock.advance(timedelta(seconds=5))
    work_item = await lock(store)
    assert [m.message.event for m in work_item.messages] == [
        raised("first"),
        raised("second"),
        raised("third"),
    ]


# -- leases ------------------------------------------------------------------------------------
async def test_lease_is_live_until_it_expires(store: TaskHubStore, clock: FakeClock) -> None:
    await create(store, "a")
    await lock(store, "w1")
    clock.advance(LEASE)
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None
    clock.advance(timedelta(microseconds=1))
    work_item = await lock(store, "w2")
    assert work_item.instance_id == "a"


async def test_expired_lease_goes_to_another_worker_and_the_first_is_refused(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a")
    await episode(store, await lock(store))
    await store.send_message(to("a", raised("go")))
    first = await lock(store, "w1")
    clock.advance(LEASE + timedelta(seconds=1))
    second = await lock(store, "w2")
    assert second.instance_id == "a"
    assert second.lock_token != first.lock_token
    assert second.history == first.history
    assert [m.message_id for m in second.messages] == [m.message_id for m in first.messages]

    state_before = await state_of(store, "a")
    with pytest.raises(LeaseLostError):
        await episode(
            store,
            first,
            S.COMPLETED,
            activities=[activity("a", 9)],
            messages=[to("a", raised("self")), to("child", started("child"))],
        )
    with pytest.raises(LeaseLostError):
        await store.renew_orchestration_work_item(first, LEASE)
    await store.abandon_orchestration_work_item(first, T0 + timedelta(days=1))  # ignored

    assert await store.get_history("a") == first.history
    assert await state_of(store, "a") == state_before
    assert await store.get_instance("child") is None
    assert await store.lock_next_activity_work_items("w", LEASE) == []
    # The second worker still holds the lease and its messages are untouched.
    assert await store.lock_next_orchestration_work_item("w3", LEASE) is None
    await episode(store, second)
    assert await store.get_history("a") == [*first.history, raised("go")]


async def test_renew_extends_the_lease(store: TaskHubStore, clock: FakeClock) -> None:
    await create(store, "a")
    work_item = await lock(store)
    clock.advance(timedelta(seconds=20))
    await store.renew_orchestration_work_item(work_item, LEASE)
    assert work_item.locked_until == T0 + timedelta(seconds=50)
    clock.advance(timedelta(seconds=30))  # t=50: the old lease is long gone, the new one is not
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None
    clock.advance(timedelta(microseconds=1))
    assert (await lock(store, "w2")).instance_id == "a"


async def test_history_length_fence(store: TaskHubStore) -> None:
    await create(store, "a")
    await episode(store, await lock(store))
    await store.send_message(to("a", raised("x")))
    work_item = await lock(store)
    saw = list(work_item.history)
    assert work_item.history_length == len(saw)

    work_item.history_length = len(saw) + 1
    with pytest.raises(LeaseLostError):
        await episode(store, work_item, S.COMPLETED)
    work_item.history_length = 0
    with pytest.raises(LeaseLostError):
        await episode(store, work_item, S.COMPLETED)
    assert await store.get_history("a") == saw
    assert (await state_of(store, "a")).runtime_status == S.RUNNING

    work_item.history_length = len(saw)  # the fence passes again: the lease was never lost
    await episode(store, work_item, S.COMPLETED)
    assert await store.get_history("a") == [*saw, raised("x")]


async def test_known_history_is_not_sent_again(store: TaskHubStore) -> None:
    await create(store, "a")
    first = await episode(store, await lock(store))
    history = list(first.new_events)
    execution_id = first.state.execution_id
    assert execution_id is not None

    await store.send_message(to("a", raised("x")))
    stale = {"a": HistoryMark(execution_id, len(history) - 1)}
    work_item = await store.lock_next_orchestration_work_item("w", LEASE, stale)
    assert work_item is not None
    assert work_item.history_loaded and work_item.history == history
    await store.abandon_orchestration_work_item(work_item)

    current = {"a": HistoryMark(execution_id, len(history))}
    work_item = await store.lock_next_orchestration_work_item("w", LEASE, current)
    assert work_item is not None
    assert not work_item.history_loaded and work_item.history == []
    assert work_item.history_length == len(history)
    await episode(store, work_item, S.COMPLETED)  # the fence uses the length, not the list
    assert (await store.get_history("a"))[: len(history)] == history


# -- completing an episode -----------------------------------------------------------------------
async def test_complete_appends_history_and_consumes_only_the_given_messages(
    store: TaskHubStore,
) -> None:
    await create(store, "a")
    await create(store, "b")
    await episode(store, await lock(store))
    await store.send_message(to("a", raised("keep")))
    b_item = await lock(store)
    assert b_item.instance_id == "b"
    a_item = await lock(store)
    assert a_item.instance_id == "a"
    keep = a_item.messages[0].message_id
    new_events = [OrchestratorStarted(timestamp=T0), OrchestratorCompleted(timestamp=T0)]
    await episode(
        store,
        a_item,
        new_events=new_events,
        # b's message id is not a's to consume: it must survive.
        consumed_message_ids=[b_item.messages[0].message_id],
    )
    assert await store.get_history("a") == [started("a"), *new_events]
    await store.abandon_orchestration_work_item(b_item)

    remaining = {}
    while (work_item := await store.lock_next_orchestration_work_item("w", LEASE)) is not None:
        remaining[work_item.instance_id] = [m.message_id for m in work_item.messages]
    assert remaining == {"a": [keep], "b": [b_item.messages[0].message_id]}


async def test_complete_writes_the_whole_instance_row(store: TaskHubStore) -> None:
    await create(store, "a")
    work_item = await lock(store)
    failure = FailureDetails("RuntimeError", "nope", "tb", FailureDetails("OSError", "disk"))
    state = OrchestrationState(
        instance_id="a",
        name="Renamed",
        version="9",
        runtime_status=S.FAILED,
        created_at=T0 - timedelta(days=1),
        last_updated_at=T0 + timedelta(seconds=3, microseconds=7),
        completed_at=T0 + timedelta(seconds=4),
        execution_id="exec-9",
        serialized_input='"in"',
        serialized_output='"out"',
        serialized_custom_status='{"step": 3}',
        failure_details=failure,
        parent_instance_id="parent",
        scheduled_start_at=T0 + timedelta(hours=2),
    )
    await store.commit_episode(
        work_item.fence(),
        OrchestrationCommit(
            state=state,
            new_events=[OrchestratorStarted(timestamp=T0)],
            consumed_message_ids=[work_item.messages[0].message_id],
        ),
    )
    assert await state_of(store, "a") == state
    # The lease is released: a new message makes the instance lockable at once.
    await store.send_message(to("a", raised("x")))
    assert (await lock(store, "w2")).instance_id == "a"


async def test_commit_without_events_keeps_the_row_and_releases_the_lease(
    store: TaskHubStore,
) -> None:
    await create(store, "a")
    await drain(store, {"a": S.FAILED})
    await store.send_message(to("a", raised("late")))
    work_item = await lock(store)
    assert work_item.state is not None and work_item.state.runtime_status is S.FAILED
    # A rewind arrives while the work item is held: the instance waits for a worker again.
    await store.send_message(rewind_message("a"))
    assert (await state_of(store, "a")).runtime_status is S.PENDING
    # The held work item only drops its late message, with the row it was leased with.
    await store.commit_episode(
        work_item.fence(),
        OrchestrationCommit(
            state=work_item.state, consumed_message_ids=[work_item.messages[0].message_id]
        ),
    )
    assert (await state_of(store, "a")).runtime_status is S.PENDING
    rewind = await lock(store, "w2")
    assert [type(m.message.event) for m in rewind.messages] == [ExecutionRewound]


def rewind_message(instance_id: str) -> OrchestrationMessage:
    """A rewind, as the client sends it: a FAILED instance becomes PENDING."""
    return OrchestrationMessage(
        instance_id,
        ExecutionRewound(timestamp=T0, reason="fixed"),
        status_change=StatusChange(when=S.FAILED, becomes=S.PENDING),
    )


async def test_a_status_change_applies_only_to_the_status_it_names(
    store: TaskHubStore,
) -> None:
    await create(store, "done")
    await create(store, "running")
    await drain(store, {"done": S.COMPLETED})
    for instance_id in ("done", "running"):
        await store.send_message(rewind_message(instance_id))
    assert (await state_of(store, "done")).runtime_status is S.COMPLETED
    assert (await state_of(store, "running")).runtime_status is S.RUNNING


async def test_a_status_change_sent_by_an_episode_applies_to_its_target(
    store: TaskHubStore,
) -> None:
    await create(store, "child")
    await drain(store, {"child": S.FAILED})
    await create(store, "parent")
    work_item = await lock(store)
    await episode(store, work_item, messages=[rewind_message("child")])
    assert (await state_of(store, "child")).runtime_status is S.PENDING


async def test_a_lease_fences_only_its_own_instance(store: TaskHubStore) -> None:
    await create(store, "a")
    await create(store, "b")
    work_item = await lock(store)
    other = dataclasses.replace(await state_of(store, "b"), serialized_custom_status='"x"')
    with pytest.raises(LeaseLostError):
        await store.commit_episode(work_item.fence(), OrchestrationCommit(state=other))
    assert (await state_of(store, "b")).serialized_custom_status is None


async def test_complete_enqueues_outbound_messages_by_the_rules(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a")
    await create(store, "b")
    await episode(store, await lock(store))
    await episode(store, await lock(store))
    await store.send_message(to("a", raised("go")))
    timer_due = T0 + timedelta(minutes=1)
    child = started("child", name="Child", parent="a", at=T0 + timedelta(seconds=1))
    await episode(
        store,
        await lock(store),
        messages=[
            to("a", TimerFired(timestamp=T0, timer_id=1, fire_at=timer_due), visible_at=timer_due),
            to("child", child),
            to("b", raised("hello b")),
            to("ghost", raised("dropped")),
        ],
    )

    assert await store.get_instance("ghost") is None
    assert await state_of(store, "child") == OrchestrationState(
        instance_id="child",
        name="Child",
        version="1.0",
        runtime_status=S.PENDING,
        created_at=T0 + timedelta(seconds=1),
        last_updated_at=T0 + timedelta(seconds=1),
        execution_id="exec-1",
        serialized_input='"world"',
        parent_instance_id="a",
        scheduled_start_at=T0 + timedelta(minutes=5, seconds=1),
    )
    delivered = {}
    while (work_item := await store.lock_next_orchestration_work_item("w", LEASE)) is not None:
        delivered[work_item.instance_id] = [m.message.event for m in work_item.messages]
        await episode(store, work_item)
    assert delivered == {"child": [child], "b": [raised("hello b")]}

    clock.advance(timedelta(minutes=1))
    work_item = await lock(store)
    assert work_item.instance_id == "a"
    assert [type(m.message.event) for m in work_item.messages] == [TimerFired]


async def test_execution_started_to_an_existing_instance_is_just_enqueued(
    store: TaskHubStore,
) -> None:
    await create(store, "a")
    await create(store, "b", input='"b"')
    await drain(store, {})
    await store.send_message(to("a", raised("wake")))
    restart = started("b", input='"ignored by the store"')
    await episode(store, await lock(store), messages=[to("b", restart)])
    state = await state_of(store, "b")
    assert (state.serialized_input, state.runtime_status) == ('"b"', S.RUNNING)
    work_item = await lock(store)
    assert [m.message.event for m in work_item.messages] == [restart]


async def test_reset_history_replaces_the_history(store: TaskHubStore) -> None:
    await create(store, "a")
    await episode(store, await lock(store), new_events=[started("a"), raised("1"), raised("2")])
    await store.send_message(to("a", raised("restart")))
    fresh = [started("a", input='"next"'), raised("r")]
    await episode(store, await lock(store), reset_history=True, new_events=fresh)
    assert await store.get_history("a") == fresh

    await store.send_message(to("a", raised("after")))
    work_item = await lock(store)
    assert work_item.history == fresh
    await episode(store, work_item)
    assert await store.get_history("a") == [*fresh, raised("after")]


# -- abandoning ------------------------------------------------------------------------------------
async def test_abandon_without_retry_at_makes_messages_visible_now(
    store: TaskHubStore,
) -> None:
    await create(store, "a")
    work_item = await lock(store)
    await store.abandon_orchestration_work_item(work_item)
    again = await lock(store, "w2")
    assert [m.message_id for m in again.messages] == [m.message_id for m in work_item.messages]
    assert again.history == []


async def test_abandon_with_retry_at_rests_the_instance_until_then(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a")
    work_item = await lock(store)
    retry_at = T0 + timedelta(minutes=1)
    await store.abandon_orchestration_work_item(work_item, retry_at)
    with pytest.raises(LeaseLostError):
        await store.renew_orchestration_work_item(work_item, LEASE)

    # A message sent meanwhile does not overtake the ones that were abandoned: the whole
    # instance waits, so its messages are delivered in the order they arrived.
    await store.send_message(to("a", raised("meanwhile")))
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None

    clock.advance(timedelta(minutes=1) - timedelta(microseconds=1))
    assert await store.lock_next_orchestration_work_item("w3", LEASE) is None
    clock.advance(timedelta(microseconds=1))
    retried = await lock(store, "w3")
    assert [m.message.event for m in retried.messages] == [started("a"), raised("meanwhile")]
    assert [m.dequeue_count for m in retried.messages] == [2, 1]


async def test_a_terminate_ends_the_rest_of_an_abandoned_instance(
    store: TaskHubStore,
) -> None:
    await create(store, "a")
    await store.send_message(to("a", raised("first")))
    await store.abandon_orchestration_work_item(await lock(store), T0 + timedelta(hours=1))
    terminate = ExecutionTerminated(timestamp=T0, input='"stop"')
    await store.send_message(OrchestrationMessage("a", terminate))
    work_item = await lock(store)
    assert [m.message.event for m in work_item.messages] == [
        started("a"),
        raised("first"),
        terminate,
    ]


async def test_a_resting_instance_is_not_run_on_an_activity_result(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await with_activities(store, "a", 1)
    leased = await lock_activity(store, "w1")
    await store.send_message(to("a", raised("first")))
    work_item = await lock(store)
    history_length = work_item.history_length
    await store.abandon_orchestration_work_item(work_item, T0 + timedelta(minutes=1))

    result = to("a", TaskCompleted(timestamp=T0, task_scheduled_id=0))
    commit = OrchestrationCommit(state=await state_of(store, "a"), new_events=[result.event])
    with pytest.raises(InstanceBusyError):  # it rests, behind the abandoned event
        await store.commit_episode(
            InstanceUnchanged("exec-1", history_length),
            dataclasses.replace(commit, finished_activity=leased),
        )
    await store.complete_activity_work_item(leased, result)
    clock.advance(timedelta(minutes=1))
    retried = await lock(store, "w2")
    assert [m.message.event for m in retried.messages] == [raised("first"), result.event]


async def test_abandon_never_brings_a_message_forward(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "a")
    await episode(store, await lock(store))
    await store.send_message(to("a", raised("x"), visible_at=T0 + timedelta(minutes=5)))
    clock.advance(timedelta(minutes=5))
    work_item = await lock(store)
    await store.abandon_orchestration_work_item(work_item, T0 + timedelta(minutes=1))
    again = await lock(store)
    assert again.messages[0].message.visible_at == T0 + timedelta(minutes=5)


# -- activities ------------------------------------------------------------------------------
async def test_activities_are_leased_oldest_first_one_worker_each(
    store: TaskHubStore,
) -> None:
    await with_activities(store, "a", 2)
    first = await lock_activity(store, "w1")
    second = await lock_activity(store, "w2")
    assert await store.lock_next_activity_work_items("w3", LEASE) == []
    assert (first.request, second.request) == (activity("a", 0), activity("a", 1))
    assert first.work_item_id != second.work_item_id
    assert first.lock_token != second.lock_token
    assert (first.dequeue_count, first.locked_until) == (1, T0 + LEASE)


async def test_activities_lease_in_batches_each_item_held_on_its_own(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await with_activities(store, "a", 5)
    first = await store.lock_next_activity_work_items("w1", LEASE, 3)
    second = await store.lock_next_activity_work_items("w2", LEASE, 3)
    assert [i.request.task_id for i in first] == [0, 1, 2]
    assert [i.request.task_id for i in second] == [3, 4]
    assert await store.lock_next_activity_work_items("w3", LEASE, 3) == []
    assert all(i.dequeue_count == 1 and i.locked_until == T0 + LEASE for i in first + second)
    # One item of a batch completes, one is abandoned, one is renewed; the rest expire.
    result = to("a", TaskCompleted(timestamp=T0, task_scheduled_id=1, result="1"))
    await store.complete_activity_work_item(first[1], result)
    await store.abandon_activity_work_item(first[0])
    assert [
        i.request.task_id for i in await store.lock_next_activity_work_items("w3", LEASE, 3)
    ] == [0]
    clock.advance(LEASE / 2)
    await store.renew_activity_work_item(first[2], LEASE)
    clock.advance(LEASE / 2 + timedelta(seconds=1))
    expired = []
    while leased := await store.lock_next_activity_work_items("w4", LEASE, 8):
        expired += leased  # each delivered before, so each alone
    assert sorted(i.request.task_id for i in expired) == [0, 3, 4], "task 2's lease was renewed"
    with pytest.raises(LeaseLostError):
        await store.complete_activity_work_item(second[0], result)


async def test_a_commit_can_lease_its_first_activities_to_the_committing_worker(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await create(store, "b")
    work_item = await lock(store)
    requests = [activity("b", i) for i in range(3)]
    commit = OrchestrationCommit(
        state=await state_of(store, "b"),
        new_events=[m.message.event for m in work_item.messages],
        consumed_message_ids=[m.message_id for m in work_item.messages],
        activities=requests,
        eager_activities=EagerLease("w1", LEASE, max_items=2),
    )
    eager_items = await store.commit_episode(work_item.fence(), commit)
    assert [i.request for i in eager_items] == requests[:2]
    assert all(i.dequeue_count == 1 and i.locked_until == T0 + LEASE for i in eager_items)
    assert len({i.work_item_id for i in eager_items}) == 2
    # Only the activity nobody holds is left to fetch.
    third = await lock_activity(store, "w2")
    assert third.request == requests[2]
    assert await store.lock_next_activity_work_items("w2", LEASE) == []
    # The eager lease is a lease like any other: renewed, completed, or taken once it expires.
    await store.renew_activity_work_item(eager_items[0], LEASE)
    result = to("b", TaskCompleted(timestamp=T0, task_scheduled_id=0, result="1"))
    await store.complete_activity_work_item(eager_items[0], result)
    clock.advance(LEASE + timedelta(seconds=1))
    again = await lock_activity(store, "w3")
    assert again.work_item_id in {eager_items[1].work_item_id, third.work_item_id}
    assert again.dequeue_count == 2


async def test_a_commit_without_an_eager_lease_leases_nothing(store: TaskHubStore) -> None:
    await create(store, "c")
    work_item = await lock(store)
    commit = OrchestrationCommit(
        state=await state_of(store, "c"),
        consumed_message_ids=[m.message_id for m in work_item.messages],
        new_events=[m.message.event for m in work_item.messages],
        activities=[activity("c", 0)],
    )
    assert await store.commit_episode(work_item.fence(), commit) == []
    assert (await lock_activity(store)).request == activity("c", 0)


async def test_activity_complete_deletes_it_and_enqueues_the_result(
    store: TaskHubStore,
) -> None:
    await with_activities(store, "a", 1)
    work_item = await lock_activity(store)
    result = to("a", TaskCompleted(timestamp=T0, task_scheduled_id=0, result='"done"'))
    await store.complete_activity_work_item(work_item, result)
    delivered = await lock(store)
    assert [m.message for m in delivered.messages] == [result]
    await store.abandon_orchestration_work_item(delivered)
    with pytest.raises(LeaseLostError):
        await store.complete_activity_work_item(work_item, result)
    assert len((await lock(store)).messages) == 1


async def test_activity_result_to_a_missing_instance_is_dropped(
    store: TaskHubStore,
) -> None:
    await with_activities(store, "a", 1)
    work_item = await lock_activity(store)
    await store.complete_activity_work_item(work_item, to("ghost", raised("r")))
    assert await store.get_instance("ghost") is None
    assert await store.lock_next_activity_work_items("w", LEASE) == []
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None


async def test_activity_lease_loss(store: TaskHubStore, clock: FakeClock) -> None:
    await with_activities(store, "a", 1)
    first = await lock_activity(store, "w1")
    clock.advance(timedelta(seconds=10))
    await store.renew_activity_work_item(first, LEASE)
    assert first.locked_until == T0 + timedelta(seconds=40)
    clock.advance(LEASE)
    assert await store.lock_next_activity_work_items("w2", LEASE) == []
    clock.advance(timedelta(microseconds=1))
    second = await lock_activity(store, "w2")
    assert (second.work_item_id, second.dequeue_count) == (first.work_item_id, 2)

    result = to("a", TaskCompleted(timestamp=T0, task_scheduled_id=0, result="1"))
    with pytest.raises(LeaseLostError):
        await store.complete_activity_work_item(first, result)
    with pytest.raises(LeaseLostError):
        await store.renew_activity_work_item(first, LEASE)
    await store.abandon_activity_work_item(first)  # ignored: w2 holds it
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None
    assert await store.lock_next_activity_work_items("w3", LEASE) == []

    await store.complete_activity_work_item(second, result)
    assert [m.message for m in (await lock(store)).messages] == [result]


async def test_activity_abandon(store: TaskHubStore, clock: FakeClock) -> None:
    await with_activities(store, "a", 1)
    work_item = await lock_activity(store)
    await store.abandon_activity_work_item(work_item)
    again = await lock_activity(store, "w2")
    # Handed back unrun: the delivery does not count.
    assert (again.work_item_id, again.dequeue_count) == (work_item.work_item_id, 1)

    await store.abandon_activity_work_item(again, T0 + timedelta(minutes=1))
    clock.advance(timedelta(minutes=1) - timedelta(microseconds=1))
    assert await store.lock_next_activity_work_items("w3", LEASE) == []
    clock.advance(timedelta(microseconds=1))
    assert (await lock_activity(store, "w3")).dequeue_count == 1


# -- client operations ---------------------------------------------------------------------------
async def test_send_message(store: TaskHubStore) -> None:
    assert await store.send_message(to("nobody", raised("x"))) is False
    assert await store.get_instance("nobody") is None
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None

    await create(store, "a")
    await episode(store, await lock(store))
    assert await store.send_message(to("a", raised("x"))) is True
    assert [m.message.event for m in (await lock(store)).messages] == [raised("x")]


async def test_send_message_with_execution_started_creates_the_instance(
    store: TaskHubStore,
) -> None:
    assert await store.send_message(to("new", started("new"))) is True
    assert (await state_of(store, "new")).runtime_status == S.PENDING


async def test_every_event_type_round_trips(store: TaskHubStore) -> None:
    events = every_event()
    assert {type(e).__name__ for e in events} == _event_type_names()
    await create(store, "a")
    await episode(store, await lock(store), new_events=events)
    assert await store.get_history("a") == events

    east = timezone(timedelta(hours=2))
    visible_at = datetime(2024, 1, 1, 13, 0, tzinfo=east)  # an hour before the clock
    messages = [
        OrchestrationMessage("a", e, execution_id=None, visible_at=visible_at) for e in events
    ]
    for message in messages:
        assert await store.send_message(message)
    work_item = await lock(store)
    assert work_item.history == events
    assert [m.message for m in work_item.messages] == messages
    offsets = {m.message.visible_at.utcoffset() for m in work_item.messages if m.message.visible_at}
    assert offsets == {timedelta(0)}


# -- queries ------------------------------------------------------------------------------------
async def test_query_filters(store: TaskHubStore) -> None:
    await create(store, "a1", name="Alpha", at=T0)
    await create(store, "a2", name="Alpha", at=T0 + timedelta(seconds=1), parent="a1")
    await create(store, "b1", name="Beta", at=T0 + timedelta(seconds=2), parent="a1")
    await create(store, "b2", name="Beta", at=T0 + timedelta(seconds=3))
    await drain(store, {"a1": S.COMPLETED, "a2": S.FAILED, "b1": S.RUNNING, "b2": S.TERMINATED})

    async def ids(**filters: Any) -> list[str]:
        page = await store.query_instances(InstanceQuery(**filters))
        assert page.continuation_token is None
        return [s.instance_id for s in page.states]

    assert await ids() == ["a1", "a2", "b1", "b2"]
    assert await ids(statuses=frozenset({S.COMPLETED, S.TERMINATED})) == ["a1", "b2"]
    assert await ids(statuses=frozenset()) == []
    assert await ids(created_from=T0 + timedelta(seconds=1)) == ["a2", "b1", "b2"]
    assert await ids(created_to=T0 + timedelta(seconds=2)) == ["a1", "a2"]
    assert await ids(
        created_from=datetime(2024, 1, 1, 13, 0, 1, tzinfo=timezone(timedelta(hours=1))),
        created_to=T0 + timedelta(seconds=2),
    ) == ["a2"]
    assert await ids(name="Beta") == ["b1", "b2"]
    assert await ids(parent_instance_id="a1") == ["a2", "b1"]
    assert await ids(instance_id_prefix="b") == ["b1", "b2"]
    assert await ids(name="Alpha", statuses=frozenset({S.FAILED, S.RUNNING})) == ["a2"]
    assert await ids(name="Beta", parent_instance_id="a1", instance_id_prefix="b1") == ["b1"]
    assert await ids(name="Nope") == []

    page = await store.query_instances(InstanceQuery(name="Alpha"))
    assert page.states == [await state_of(store, "a1"), await state_of(store, "a2")]


async def test_query_prefix_is_literal(store: TaskHubStore) -> None:
    ids = ["a%b", "a_b", "axb", "a\\b", "ab", "A%b", "b%"]
    for instance_id in ids:
        await create(store, instance_id)

    async def matching(prefix: str) -> set[str]:
        page = await store.query_instances(InstanceQuery(instance_id_prefix=prefix))
        return {s.instance_id for s in page.states}

    assert await matching("a%") == {"a%b"}
    assert await matching("a_") == {"a_b"}
    assert await matching("a\\") == {"a\\b"}
    assert await matching("a") == {"a%b", "a_b", "axb", "a\\b", "ab"}
    assert await matching("") == set(ids)


async def test_query_paging_walks_every_instance_once_in_order(
    store: TaskHubStore,
) -> None:
    # 11 instances, created three to a second, ids not in creation order.
    expected = []
    for i in range(11):
        at = T0 + timedelta(seconds=i // 3)
        instance_id = f"q{(7 * i) % 11:02d}"
        await create(store, instance_id, at=at)
        expected.append((at, instance_id))
    await create(store, "other", name="Other")
    expected.sort()

    pages = []
    token = None
    while True:
        page = await store.query_instances(
            InstanceQuery(
                name="Greet", instance_id_prefix="q", page_size=3, continuation_token=token
            )
        )
        pages.append([(s.created_at, s.instance_id) for s in page.states])
        token = page.continuation_token
        if token is None:
            break
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [row for p in pages for row in p] == expected


async def test_query_paging_with_an_exact_multiple_of_the_page_size(
    store: TaskHubStore,
) -> None:
    for i in range(6):
        await create(store, f"i{i}", at=T0)
    first = await store.query_instances(InstanceQuery(page_size=3))
    assert first.continuation_token == encode_continuation_token(T0, "i2")
    second = await store.query_instances(
        InstanceQuery(page_size=3, continuation_token=first.continuation_token)
    )
    assert [s.instance_id for s in second.states] == ["i3", "i4", "i5"]
    assert second.continuation_token is None


async def test_query_rejects_bad_tokens_and_page_sizes(store: TaskHubStore) -> None:
    with pytest.raises(ValueError):
        await store.query_instances(InstanceQuery(continuation_token="not a token!"))
    naive = encode_continuation_token(datetime(2024, 1, 1), "a")
    with pytest.raises(ValueError):
        await store.query_instances(InstanceQuery(continuation_token=naive))
    with pytest.raises(ValueError):
        await store.query_instances(InstanceQuery(page_size=0))


# -- purging ------------------------------------------------------------------------------------
async def test_purge_instance(store: TaskHubStore) -> None:
    await with_activities(store, "running", 1)
    await create(store, "done")
    # "done" ends with history, an unconsumed message and an activity: all must go.
    await episode(
        store,
        await lock(store),
        S.COMPLETED,
        activities=[activity("done", 1)],
        consumed_message_ids=[],
    )
    await create(store, "pending")
    assert await store.get_history("done") != []

    assert await store.purge_instance("nobody") is False
    assert await store.purge_instance("running") is False
    assert await store.purge_instance("pending") is False
    assert (await state_of(store, "running")).runtime_status == S.RUNNING
    assert (await state_of(store, "pending")).runtime_status == S.PENDING

    assert await store.purge_instance("done") is True
    assert await store.get_instance("done") is None
    assert await store.get_history("done") == []
    assert await store.purge_instance("done") is False
    assert (await lock(store)).instance_id == "pending"
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None
    assert (await lock_activity(store)).request.instance_id == "running"
    assert await store.lock_next_activity_work_items("w", LEASE) == []


async def test_purge_instances_by_filter(store: TaskHubStore) -> None:
    statuses = {
        "c0": S.COMPLETED,
        "f1": S.FAILED,
        "t2": S.TERMINATED,
        "r3": S.RUNNING,
        "c4": S.COMPLETED,
        "c5": S.COMPLETED,
        "f6": S.FAILED,
    }
    for i, instance_id in enumerate(statuses):
        await create(store, instance_id, at=T0 + timedelta(hours=i))
    await drain(store, statuses)

    async def remaining() -> list[str]:
        return [s.instance_id for s in (await store.query_instances(InstanceQuery())).states]

    assert await store.purge_instances(PurgeFilter(statuses=frozenset({S.RUNNING}))) == 0
    window = PurgeFilter(
        created_from=T0 + timedelta(hours=1), created_before=T0 + timedelta(hours=5)
    )
    assert await store.purge_instances(window) == 3
    assert await remaining() == ["c0", "r3", "c5", "f6"]
    only_failed = PurgeFilter(statuses=frozenset({S.FAILED, S.RUNNING}))
    assert await store.purge_instances(only_failed) == 1
    assert await remaining() == ["c0", "r3", "c5"]
    assert await store.purge_instances(PurgeFilter()) == 2
    assert await remaining() == ["r3"]
    assert await store.get_history("c0") == []


# -- lifecycle, sharing, concurrency -------------------------------------------------------------
async def test_delete_task_hub_then_open_again(store: TaskHubStore) -> None:
    await with_activities(store, "a", 1)
    await store.send_message(to("a", raised("x")))
    await store.delete_task_hub()
    await store.open()
    assert await store.get_instance("a") is None
    assert await store.lock_next_orchestration_work_item("w", LEASE) is None
    assert await store.lock_next_activity_work_items("w", LEASE) == []
    await create(store, "a")
    assert (await lock(store)).history == []


async def test_open_is_idempotent_and_close_then_open_keeps_data(
    store: TaskHubStore,
) -> None:
    await store.open()
    await create(store, "a")
    await store.close()
    await store.close()
    await store.open()
    assert (await state_of(store, "a")).runtime_status == S.PENDING


async def test_two_handles_share_the_hub_and_never_lock_the_same_instance(
    store: TaskHubStore, peer: TaskHubStore
) -> None:
    await create(store, "a")
    assert (await state_of(peer, "a")).name == "Greet"
    for i in range(4):
        await create(peer, f"p{i}")

    handles = [store, peer] * 5
    items = await asyncio.gather(
        *(h.lock_next_orchestration_work_item(f"w{i}", LEASE) for i, h in enumerate(handles))
    )
    locked = [w.instance_id for w in items if w is not None]
    assert sorted(locked) == ["a", "p0", "p1", "p2", "p3"]


async def test_concurrent_activity_locks_never_share_an_activity(
    store: TaskHubStore, peer: TaskHubStore
) -> None:
    await with_activities(store, "a", 4)
    handles = [store, peer] * 4
    batches = await asyncio.gather(
        *(h.lock_next_activity_work_items(f"w{i}", LEASE, 2) for i, h in enumerate(handles))
    )
    ids = [w.work_item_id for batch in batches for w in batch]
    assert len(ids) == 4 and len(set(ids)) == 4


async def test_store_serves_another_thread_with_its_own_event_loop(
    store: TaskHubStore,
) -> None:
    await create(store, "a")

    def elsewhere() -> OrchestrationState | None:
        async def work() -> OrchestrationState | None:
            await store.send_message(to("a", raised("from another loop")))
            return await store.get_instance("a")

        return asyncio.run(work())

    state = await asyncio.to_thread(elsewhere)
    assert state is not None and state.instance_id == "a"
    assert len((await lock(store)).messages) == 2


async def test_stores_satisfy_the_protocol(store: TaskHubStore) -> None:
    assert isinstance(store, OrchestrationService)


# -- memory store specifics -------------------------------------------------------------------
def test_named_memory_stores_are_process_global() -> None:
    one = MemoryOrchestrationService.named("conformance-shared")
    assert MemoryOrchestrationService.named("conformance-shared") is one
    assert MemoryOrchestrationService.named("conformance-other") is not one
    assert open_store("memory://conformance-shared") is one
    assert MemoryOrchestrationService() is not MemoryOrchestrationService()


# -- SQLite store specifics ----------------------------------------------------------------------
def _schema_versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]


async def test_sqlite_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    stores = [SqliteOrchestrationService(str(path)) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert _schema_versions(path) == ALL_SQLITE_VERSIONS
        await stores[0].create_instance(to("a", started("a")), NO_REUSE)
        assert await stores[3].get_instance("a") is not None
    finally:
        for s in stores:
            await s.close()
    reopened = SqliteOrchestrationService(str(path))
    await reopened.open()
    await reopened.close()
    assert _schema_versions(path) == ALL_SQLITE_VERSIONS


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    store = SqliteOrchestrationService(str(path), synchronous="normal")
    await store.open()
    try:
        pragmas = await store._db.run(  # on the write connection
            lambda c: [
                c.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            ]
        )
        assert pragmas == ["wal", 1, 1, 10_000]
    finally:
        await store.close()
    with pytest.raises(ValueError):
        SqliteOrchestrationService(str(path), synchronous="sometimes")


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    store = SqliteOrchestrationService(str(path))
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
    with pytest.raises(StoreError, match="99"):
        await store.open()


async def test_sqlite_store_must_be_opened(tmp_path: Path) -> None:
    store = SqliteOrchestrationService(str(tmp_path / "hub.db"))
    with pytest.raises(StoreError, match="open"):
        await store.get_instance("a")


async def test_sqlite_gives_up_on_a_lock_held_for_too_long(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    store = SqliteOrchestrationService(str(path), busy_timeout=0.01)
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            await store.create_instance(to("a", started("a")), NO_REUSE)
        blocker.execute("ROLLBACK")
        await store.create_instance(to("a", started("a")), NO_REUSE)
        assert await store.get_instance("a") is not None
    finally:
        blocker.close()
        await store.close()


async def test_sqlite_delete_task_hub_keeps_the_file(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "hub.db"
    store = SqliteOrchestrationService(str(path), clock=clock)
    await store.open()
    await with_activities(store, "a", 1)
    await store.delete_task_hub()
    assert path.exists()
    with sqlite3.connect(path) as conn:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
        ).fetchall()
    assert tables == []
    await store.open()
    assert _schema_versions(path) == ALL_SQLITE_VERSIONS
    await store.close()


def test_open_store_urls(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(store, SqliteOrchestrationService)
    assert store.path == str(tmp_path / "x.db")


# -- push wake-ups ---------------------------------------------------------------------------------
async def test_push_wakeups_reach_another_handle(store: TaskHubStore, peer: TaskHubStore) -> None:
    assert isinstance(store, SupportsWakeUps) and isinstance(peer, SupportsWakeUps)
    async with store.watch_instance("a") as watch:
        work = asyncio.create_task(store.wait_for_notification(20, kind="orchestration"))
        await create(peer, "a")
        assert await asyncio.wait_for(work, 20)
        assert await watch.changed(20)
        await episode(peer, await lock(peer))
        assert await watch.changed(20)


async def test_sqlite_older_than_3_35_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    store = SqliteOrchestrationService(str(tmp_path / "hub.db"))
    with pytest.raises(StoreError, match=r"needs SQLite 3\.35\.0 or newer.*uses 3\.31\.1"):
        await store.open()


async def test_sqlite_file_under_a_regular_file_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    store = SqliteOrchestrationService(str(blocker / "hub.db"))
    with pytest.raises(StoreError, match="cannot create the directory of the SQLite task hub"):
        await store.create_task_hub()


async def test_sqlite_opening_makes_a_file_but_never_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "hub.db"
    store = SqliteOrchestrationService(str(path))
    with pytest.raises(StoreError, match=r"the directory .* does not exist"):
        await store.open()
    with pytest.raises(TaskHubNotFoundError, match=r"the directory .* does not exist"):
        await store.open(create=False)
    assert not (tmp_path / "deep").exists()
    await store.create_task_hub()  # the explicit way: directories too
    try:
        assert path.exists()
        await store.create_instance(to("a", started("a")), NO_REUSE)
    finally:
        await store.close()


async def test_opening_without_create_refuses_a_missing_or_empty_hub(
    store_hub: StoreHub, tmp_path: Path
) -> None:
    missing = store_hub.handle()
    if store_hub.kind == "memory":
        await missing.open(create=False)  # an in-memory hub always exists
    else:
        with pytest.raises(TaskHubNotFoundError):
            await missing.open(create=False)
    made = store_hub.handle()
    await made.open()
    await made.create_instance(to("a", started("a")), NO_REUSE)
    found = store_hub.handle()
    await found.open(create=False)
    assert await found.get_instance("a") is not None


async def _unleased_episode(
    store: TaskHubStore, instance_id: str, result: OrchestrationMessage
) -> tuple[InstanceUnchanged, OrchestrationCommit]:
    """The fence of an episode a worker runs on an activity's result with its own copy of
    the instance, and a commit that records the result and schedules one more activity,
    leased to the committer."""
    state = await state_of(store, instance_id)
    assert state.execution_id is not None
    fence = InstanceUnchanged(state.execution_id, len(await store.get_history(instance_id)))
    commit = OrchestrationCommit(
        state=dataclasses.replace(state, serialized_custom_status='"next"'),
        new_events=[result.event],
        activities=[activity(instance_id, 9)],
        eager_activities=EagerLease("w1", LEASE, max_items=1),
    )
    return fence, commit


async def test_an_activity_and_the_episode_on_its_result_commit_together(
    store: TaskHubStore,
) -> None:
    await with_activities(store, "a", 2)
    first = await lock_activity(store, "w1")
    before = await store.get_history("a")
    done = to("a", TaskCompleted(timestamp=T0, task_scheduled_id=0, result='"one"'))
    fence, commit = await _unleased_episode(store, "a", done)
    leased = await store.commit_episode(fence, dataclasses.replace(commit, finished_activity=first))
    assert [i.request for i in leased] == [activity("a", 9)]
    assert await store.get_history("a") == [*before, done.event]
    assert (await state_of(store, "a")).serialized_custom_status == '"next"'
    assert await store.lock_next_orchestration_work_item("w2", LEASE) is None, "no message"
    with pytest.raises(LeaseLostError):  # the activity is gone with its lease
        await store.complete_activity_work_item(first, done)
    remaining = await store.lock_next_activity_work_items("w2", LEASE, 8)
    assert [i.request.task_id for i in remaining] == [1], "the leased activity 9 is held"


async def test_an_episode_on_an_activity_result_waits_for_a_busy_or_changed_instance(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await with_activities(store, "a", 3)
    first = await lock_activity(store, "w1")
    done = to("a", TaskCompleted(timestamp=T0, task_scheduled_id=0, result="1"))

    async def refused(fence: InstanceUnchanged, commit: OrchestrationCommit) -> None:
        before = await store.get_history("a")
        with pytest.raises(InstanceBusyError):
            await store.commit_episode(fence, dataclasses.replace(commit, finished_activity=first))
        assert await store.get_history("a") == before, "nothing was written"

    # A message is waiting for the instance (an event raised meanwhile).
    fence, commit = await _unleased_episode(store, "a", done)
    await store.send_message(to("a", raised("meanwhile")))
    await refused(fence, commit)
    # Another worker holds the instance.
    held = await lock(store, "w2")
    await refused(fence, commit)
    # The history grew since the worker's copy was made.
    await episode(store, held)
    await refused(fence, commit)
    # Another execution is current.
    fence, commit = await _unleased_episode(store, "a", done)
    await refused(dataclasses.replace(fence, execution_id="exec-0"), commit)
    # A fresh copy commits, and the activity's lease was kept through all of it.
    assert (
        await store.commit_episode(fence, dataclasses.replace(commit, finished_activity=first))
        is not None
    )
    # An activity whose lease expired and went to another worker is refused outright.
    second = await lock_activity(store, "w1")
    clock.advance(LEASE + timedelta(seconds=1))
    taken = []
    while leased := await store.lock_next_activity_work_items("w2", LEASE, 8):
        taken += leased  # the one delivered before comes alone
    assert second.work_item_id in {i.work_item_id for i in taken}
    done2 = to("a", TaskCompleted(timestamp=T0, task_scheduled_id=1, result="2"))
    fence, commit = await _unleased_episode(store, "a", done2)
    history = await store.get_history("a")
    with pytest.raises(LeaseLostError):
        await store.commit_episode(fence, dataclasses.replace(commit, finished_activity=second))
    assert await store.get_history("a") == history


async def test_a_leased_episode_can_consume_an_activity_result_too(
    store: TaskHubStore,
) -> None:
    await with_activities(store, "a", 1)
    leased = await lock_activity(store, "w1")
    await store.send_message(to("a", raised("x")))
    work_item = await lock(store)
    done = TaskCompleted(timestamp=T0, task_scheduled_id=0, result="1")
    await episode(store, work_item, new_events=[raised("x"), done], finished=leased)
    with pytest.raises(LeaseLostError):  # deleted with the episode
        await store.complete_activity_work_item(leased, to("a", done))
    assert (await store.get_history("a"))[-1] == done
