"""Durable entities end to end, the same on every store: operations, signals, calls,
critical sections, delayed signals, deletion, queries and cleaning."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duratask as dt
from duratask.backends.base import EntityMessage

from .e2e_hub import TaskHub, wait_until

pytestmark = pytest.mark.timeout(90)


# -- entities ------------------------------------------------------------------------------
def counter(ctx: dt.EntityContext, value: Any) -> Any:
    """A function entity dispatching on the operation's name."""
    current = ctx.get_state(int, 0)
    if ctx.operation_name == "add":
        ctx.set_state(current + value)
    elif ctx.operation_name == "get":
        return current
    elif ctx.operation_name == "delete":
        ctx.delete_state()
    elif ctx.operation_name == "add_then_fail":
        ctx.set_state(current + value)
        ctx.signal_entity(dt.EntityInstanceId("counter", "never"), "add", 1)
        raise ValueError(f"refused {value}")
    elif ctx.operation_name == "start_greeter":
        return ctx.start_orchestration(greet, input=value, instance_id=f"greet-{value}")
    else:
        raise ValueError(f"unknown operation {ctx.operation_name!r}")
    return None


class Account(dt.Entity):
    """A class entity: public methods are operations."""

    default_state = 0

    def deposit(self, amount: int) -> int:
        self.state = self.state + amount
        return int(self.state)

    async def withdraw(self, amount: int) -> int:
        if amount > self.state:
            raise ValueError(f"balance {self.state} is below {amount}")
        self.state = self.state - amount
        return int(self.state)

    def balance(self) -> int:
        return int(self.state)


# -- orchestrations ------------------------------------------------------------------------
async def greet(ctx: dt.OrchestrationContext, name: str) -> str:
    return f"hello {name}"


async def add_to_counters(ctx: dt.OrchestrationContext, keys: list[str]) -> None:
    for key in keys:
        ctx.signal_entity(dt.EntityInstanceId("counter", key), "add", 1)


async def call_counter(ctx: dt.OrchestrationContext, key: str) -> Any:
    entity = dt.EntityInstanceId("counter", key)
    await ctx.call_entity(entity, "add", 5)
    value = await ctx.call_entity(entity, "get")
    try:
        await ctx.call_entity(entity, "add_then_fail", 100)
    except dt.EntityOperationFailedError as failure:
        return {"value": value, "error": failure.details.error_type, "op": failure.operation}
    return {"value": value, "error": None}


async def transfer(ctx: dt.OrchestrationContext, args: list[Any]) -> bool:
    source, target, amount = args
    a, b = dt.EntityInstanceId("account", source), dt.EntityInstanceId("account", target)
    async with ctx.lock_entities(a, b):
        assert ctx.is_in_critical_section
        balance = await ctx.call_entity(a, "balance")
        if balance < amount:
            return False
        await ctx.call_entity(a, "withdraw", amount)
        await ctx.call_entity(b, "deposit", amount)
    return True


def transfer_in_generator(ctx: dt.OrchestrationContext, args: list[Any]) -> Any:
    """``transfer`` as a generator orchestration: the yield waits for the locks."""
    source, target, amount = args
    a, b = dt.EntityInstanceId("account", source), dt.EntityInstanceId("account", target)
    with (yield ctx.lock_entities(b, a)) as section:
        assert ctx.is_in_critical_section and set(section.entity_ids) == {a, b}
        balance = yield ctx.call_entity(a, "balance")
        if balance < amount:
            return False
        yield ctx.call_entity(a, "withdraw", amount)
        yield ctx.call_entity(b, "deposit", amount)
    assert not ctx.is_in_critical_section
    return True


def lock_without_yield(ctx: dt.OrchestrationContext, _: None) -> Any:
    with ctx.lock_entities("@account@z"):
        yield ctx.call_entity("@account@z", "balance")


async def lock_then_fail(ctx: dt.OrchestrationContext, key: str) -> None:
    async with ctx.lock_entities(dt.EntityInstanceId("account", key)):
        raise RuntimeError("inside the section")


async def parent_of_lock_then_fail(ctx: dt.OrchestrationContext, key: str) -> None:
    await ctx.call_sub_orchestrator(lock_then_fail, input=key)


async def fail_after_section(ctx: dt.OrchestrationContext, key: str) -> str:
    async with ctx.lock_entities(dt.EntityInstanceId("account", key)):
        pass
    result: str = await ctx.call_activity(needs_flag, input=key)
    return result


_FLAGS: set[str] = set()


def needs_flag(ctx: dt.ActivityContext, key: str) -> str:
    if key not in _FLAGS:
        raise RuntimeError(f"no flag {key!r} yet")
    return "went on"


async def lock_then_call_other(ctx: dt.OrchestrationContext, _: None) -> str:
    async with ctx.lock_entities("@account@x"):
        try:
            await ctx.call_entity("@account@y", "balance")
        except dt.EntityLockError as error:
            return str(error)
    return "no error"


async def delayed_signal(ctx: dt.OrchestrationContext, seconds: float) -> None:
    when = ctx.current_utc_datetime + timedelta(seconds=seconds)
    ctx.signal_entity("@counter@later", "add", 7, signal_time=when)


@pytest.fixture
async def entity_hub(store_url: str) -> AsyncIterator[TaskHub]:
    hub = TaskHub(store_url)
    hub.register(
        greet,
        add_to_counters,
        call_counter,
        transfer,
        transfer_in_generator,
        lock_without_yield,
        lock_then_fail,
        parent_of_lock_then_fail,
        fail_after_section,
        lock_then_call_other,
        delayed_signal,
        activities=(needs_flag,),
    )
    hub.worker.add_entity(counter)
    hub.worker.add_entity(Account)
    await hub.start()
    yield hub
    await hub.stop()


async def _state_is(hub: TaskHub, entity: str, expected: Any, timeout: float = 30) -> None:
    async def reached() -> bool:
        found = await hub.client.get_entity(entity)
        return found is not None and found.state == expected

    await wait_until(reached, timeout, f"{entity} to hold {expected!r}")


# -- tests ---------------------------------------------------------------------------------
async def test_client_signals_count_once_each(entity_hub: TaskHub) -> None:
    for _ in range(20):
        await entity_hub.client.signal_entity("@counter@a", "add", 1)
    await _state_is(entity_hub, "@counter@a", 20)
    found = await entity_hub.client.get_entity(dt.EntityInstanceId("Counter", "a"))
    assert found is not None
    assert (found.name, found.key, found.locked_by, found.backlog) == ("counter", "a", None, 0)


async def test_a_signal_sent_again_with_its_request_id_applies_once(entity_hub: TaskHub) -> None:
    client = entity_hub.client
    for _ in range(3):  # a sender retrying after a timeout, say
        await client.signal_entity("@counter@retried", "add", 5, request_id="deposit-1")
    await client.signal_entity("@counter@retried", "add", 1, request_id="deposit-2")
    await client.signal_entity("@counter@retried", "add", 10)
    await _state_is(entity_hub, "@counter@retried", 16)
    found = await client.get_entity("@counter@retried")
    assert found is not None and found.backlog == 0 and found.state == 16
    with pytest.raises(ValueError, match="request_id"):
        await client.signal_entity("@counter@retried", "add", 1, request_id="")


async def test_signals_from_many_orchestrations(entity_hub: TaskHub) -> None:
    ids = [
        await entity_hub.client.schedule_new_orchestration(add_to_counters, input=["m1", "m2"])
        for _ in range(10)
    ]
    for iid in ids:
        await entity_hub.client.wait_for_orchestration_completion(iid, timeout=30)
    await _state_is(entity_hub, "@counter@m1", 10)
    await _state_is(entity_hub, "@counter@m2", 10)


async def test_call_with_result_and_with_failure(entity_hub: TaskHub) -> None:
    state = await entity_hub.run(call_counter, "c")
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert state.output == {"value": 5, "error": "ValueError", "op": "add_then_fail"}
    # The failed operation's state change and signal were rolled back; the entity went on.
    await _state_is(entity_hub, "@counter@c", 5)
    assert await entity_hub.client.get_entity("@counter@never") is None


async def test_critical_sections_conserve_the_total(entity_hub: TaskHub) -> None:
    client = entity_hub.client
    await client.signal_entity("@account@alice", "deposit", 100)
    await client.signal_entity("@account@bob", "deposit", 100)
    await _state_is(entity_hub, "@account@alice", 100)
    await _state_is(entity_hub, "@account@bob", 100)
    moves = [("alice", "bob", 7), ("bob", "alice", 5)] * 6
    # Half the moves are async def orchestrations, half generators: one lock discipline.
    ids = [
        await client.schedule_new_orchestration(
            transfer if n % 4 < 2 else transfer_in_generator, input=list(m)
        )
        for n, m in enumerate(moves)
    ]
    for iid in ids:
        state = await client.wait_for_orchestration_completion(iid, timeout=60)
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state.failure_details
    alice = await client.get_entity("@account@alice")
    bob = await client.get_entity("@account@bob")
    assert alice is not None and bob is not None
    assert alice.state + bob.state == 200
    assert (alice.state, bob.state) == (100 - 6 * 7 + 6 * 5, 100 + 6 * 7 - 6 * 5)

    async def released() -> bool:
        found = [await client.get_entity(f"@account@{k}") for k in ("alice", "bob")]
        return all(e is not None and e.locked_by is None for e in found)

    await wait_until(released, 30, "the sections to release their locks")


async def test_a_section_entered_without_yield_fails_saying_how(entity_hub: TaskHub) -> None:
    state = await entity_hub.run(lock_without_yield)
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert "with (yield ctx.lock_entities(...))" in state.failure_details.message


async def test_a_failing_section_releases_its_locks(entity_hub: TaskHub) -> None:
    state = await entity_hub.run(lock_then_fail, "f")
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    await entity_hub.client.signal_entity("@account@f", "deposit", 3)
    await _state_is(entity_hub, "@account@f", 3)
    found = await entity_hub.client.get_entity("@account@f")
    assert found is not None and found.locked_by is None


async def test_a_rewind_into_a_released_section_is_refused(entity_hub: TaskHub) -> None:
    """Its failure let the locks go: running on inside the section would not hold them."""
    client = entity_hub.client
    inside = await entity_hub.run(lock_then_fail, "r1")
    parent = await entity_hub.run(parent_of_lock_then_fail, "r2")
    for state, who in ((inside, "it"), (parent, "its sub-orchestration")):
        assert state.runtime_status is dt.OrchestrationStatus.FAILED
        with pytest.raises(dt.InvalidOperationError, match="restart the instance") as refused:
            await client.rewind_orchestration(state.instance_id)
        assert f"{who}" in str(refused.value) and "failed inside a critical section" in str(
            refused.value
        )
        after = await client.get_orchestration_state(state.instance_id)
        assert after is not None and after.runtime_status is dt.OrchestrationStatus.FAILED
    # Failing after the section ended is no reason: that rewind runs on.
    key = f"r3-{uuid.uuid4().hex}"
    failed = await entity_hub.run(fail_after_section, key)
    assert failed.runtime_status is dt.OrchestrationStatus.FAILED
    _FLAGS.add(key)
    await client.rewind_orchestration(failed.instance_id)
    done = await client.wait_for_orchestration_completion(failed.instance_id, timeout=30)
    assert done.runtime_status is dt.OrchestrationStatus.COMPLETED and done.output == "went on"


async def test_calls_inside_a_section_go_only_to_locked_entities(entity_hub: TaskHub) -> None:
    state = await entity_hub.run(lock_then_call_other)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert "only the entities it locked" in state.output


async def test_delayed_signal_waits(entity_hub: TaskHub) -> None:
    started = datetime.now(UTC)
    await entity_hub.run(delayed_signal, 1.5)
    await entity_hub.client.signal_entity("@counter@later", "add", 1)
    await _state_is(entity_hub, "@counter@later", 1)
    await _state_is(entity_hub, "@counter@later", 8)
    assert datetime.now(UTC) - started >= timedelta(seconds=1.5)


async def test_client_delayed_signal(entity_hub: TaskHub) -> None:
    when = datetime.now(UTC) + timedelta(seconds=1)
    await entity_hub.client.signal_entity("@counter@d", "add", 2, signal_time=when)
    assert await entity_hub.client.get_entity("@counter@d") is None
    await _state_is(entity_hub, "@counter@d", 2)
    assert datetime.now(UTC) >= when


async def test_delete_removes_the_entity(entity_hub: TaskHub) -> None:
    client = entity_hub.client
    await client.signal_entity("@counter@gone", "add", 1)
    await client.signal_entity("@account@gone", "deposit", 1)
    await _state_is(entity_hub, "@counter@gone", 1)
    await _state_is(entity_hub, "@account@gone", 1)
    await client.signal_entity("@counter@gone", "delete")
    await client.signal_entity("@account@gone", "delete")  # implicit for classes

    async def deleted() -> bool:
        return (
            await client.get_entity("@counter@gone") is None
            and await client.get_entity("@account@gone") is None
        )

    await wait_until(deleted, 30, "both entities to be deleted")
    page = await client.query_entities(entity_id_prefix="@counter@gone")
    assert page.entities == []
    cleaned = await client.clean_entity_storage()
    assert cleaned.empty_entities_removed >= 2


async def test_entity_starts_an_orchestration(entity_hub: TaskHub) -> None:
    client = entity_hub.client
    await client.signal_entity("@counter@s", "start_greeter", "ada")

    async def started() -> bool:
        return await client.get_orchestration_state("greet-ada") is not None

    await wait_until(started, 30, "the entity to start the orchestration")
    state = await entity_hub.client.wait_for_orchestration_completion("greet-ada", timeout=30)
    assert state.output == "hello ada"


async def test_clean_storage_releases_orphaned_locks(entity_hub: TaskHub) -> None:
    client = entity_hub.client
    assert await client.get_entity("@account@orphan") is None  # opens the client's store
    store = client.store
    # A lock held by an orchestration that does not exist (as after a purge).
    await store.send_entity_message(
        EntityMessage(
            "@account@orphan", "lock", "cs-1", source="ghost", lock_set=("@account@orphan",)
        )
    )

    async def locked() -> bool:
        found = await client.get_entity("@account@orphan")
        return found is not None and found.locked_by == "ghost"

    await wait_until(locked, 30, "the lock to be taken")
    await client.signal_entity("@account@orphan", "deposit", 4)
    result = await client.clean_entity_storage()
    assert result.orphaned_locks_released == 1
    await _state_is(entity_hub, "@account@orphan", 4)


async def test_query_pages_and_filters(entity_hub: TaskHub) -> None:
    client = entity_hub.client
    for i in range(7):
        await client.signal_entity(f"@counter@q{i}", "add", i + 1)
    await client.signal_entity("@account@q", "deposit", 1)
    for i in range(7):
        await _state_is(entity_hub, f"@counter@q{i}", i + 1)
    await _state_is(entity_hub, "@account@q", 1)
    seen: list[str] = []
    token = None
    while True:
        page = await client.query_entities(
            name="Counter", page_size=3, continuation_token=token, include_state=False
        )
        assert len(page.entities) <= 3
        assert all(e.serialized_state is None for e in page.entities)
        seen += [e.entity_id for e in page.entities]
        token = page.continuation_token
        if token is None:
            break
    assert seen == [f"@counter@q{i}" for i in range(7)]
    page = await client.query_entities(entity_id_prefix="@account@")
    assert [(e.entity_id, e.state) for e in page.entities] == [("@account@q", 1)]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert (await client.query_entities(last_modified_from=future)).entities == []
    recent = await client.query_entities(last_modified_to=future, name="counter")
    assert len(recent.entities) == 7


async def test_a_duplicate_delivery_is_applied_once(entity_hub: TaskHub) -> None:
    message = EntityMessage("@counter@dup", "signal", "req-1", "add", "1")
    assert await entity_hub.client.get_entity("@counter@dup") is None  # opens the store
    await entity_hub.client.store.send_entity_message(message)
    await _state_is(entity_hub, "@counter@dup", 1)
    await entity_hub.client.store.send_entity_message(message)
    await entity_hub.client.signal_entity("@counter@dup", "add", 10)
    await _state_is(entity_hub, "@counter@dup", 11)


async def test_signal_rejects_a_malformed_id(entity_hub: TaskHub) -> None:
    with pytest.raises(ValueError, match="@name@key"):
        await entity_hub.client.signal_entity("counter/a", "add", 1)
    await asyncio.sleep(0)
