"""Durable entities through the sidecar with Microsoft's Python SDK (public API only):
function- and class-based entities, signals (delayed too), calls and critical sections
from orchestrations, the client's entity RPCs, and one hub shared with duratask's own
client and worker."""

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import Any

from durabletask import client as sdk_client
from durabletask import entities, scheduled, task

import duratask as dt
from tests.serve.harness import sdk_client_on, sdk_worker_on, serving, wait_until


def counter(ctx: entities.EntityContext, input: Any) -> Any:
    """A function-based entity: add, get, delete."""
    value = ctx.get_state(int, 0)
    if ctx.operation == "delete":
        ctx.set_state(None)
        return None
    if ctx.operation == "add":
        ctx.set_state(value + int(input))
        return None
    return value


class Account(entities.DurableEntity):
    """A class-based entity."""

    def deposit(self, amount: int) -> int:
        balance = self.get_state(int, 0) + amount
        self.set_state(balance)
        return balance

    def withdraw(self, amount: int) -> int:
        balance = self.get_state(int, 0)
        if amount > balance:
            raise ValueError(f"insufficient funds: {balance} < {amount}")
        self.set_state(balance - amount)
        return balance - amount

    def balance(self, _: Any = None) -> int:
        return self.get_state(int, 0)


def bank(ctx: task.OrchestrationContext, key: str) -> Generator[Any, Any, Any]:
    """Signal a counter, call an account, see a failed operation, and move money inside
    a critical section holding two accounts."""
    source = entities.EntityInstanceId("Account", f"{key}-a")
    target = entities.EntityInstanceId("Account", f"{key}-b")
    ctx.signal_entity(entities.EntityInstanceId("counter", key), "add", input=5)
    first = yield ctx.call_entity(source, "deposit", input=100)
    try:
        yield ctx.call_entity(source, "withdraw", input=1000)
        refused = ""
    except Exception as exc:  # the entity's failure reaches the caller
        refused = str(exc)
    with (yield ctx.lock_entities([target, source])):
        yield ctx.call_entity(source, "withdraw", input=30)
        yield ctx.call_entity(target, "deposit", input=30)
    a = yield ctx.call_entity(source, "balance")
    b = yield ctx.call_entity(target, "balance")
    return {"first": first, "refused": "insufficient funds" in refused, "a": a, "b": b}


def caller(ctx: task.OrchestrationContext, key: str) -> Generator[Any, Any, Any]:
    """Call an entity that a duratask worker runs."""
    entity = entities.EntityInstanceId("tally", key)
    yield ctx.call_entity(entity, "add", input=2)
    total = yield ctx.call_entity(entity, "add", input=3)
    return total


def tally(ctx: dt.EntityContext, amount: int) -> int:
    """duratask's own entity: add ``amount``, return the total."""
    total = int(ctx.get_state(int, 0)) + amount
    ctx.set_state(total)
    return total


def _state(sdk: sdk_client.TaskHubGrpcClient, entity: entities.EntityInstanceId) -> Any:
    found = sdk.get_entity(entity)
    return None if found is None else found.get_state(int)


def test_sdk_entities_signal_call_lock_and_client_rpcs(hub_url: str) -> None:
    def configure(w: Any) -> None:
        w.add_entity(counter)
        w.add_entity(Account)

    with (
        serving(hub_url) as server,
        sdk_worker_on(server.address, [bank], configure=configure),
    ):
        sdk = sdk_client_on(server.address)
        iid = sdk.schedule_new_orchestration(bank, input="k1")
        state = sdk.wait_for_orchestration_completion(iid, timeout=30)
        assert state is not None and state.runtime_status.name == "COMPLETED", state
        assert json.loads(state.serialized_output or "") == {
            "first": 100,
            "refused": True,
            "a": 70,
            "b": 30,
        }
        ticks = entities.EntityInstanceId("counter", "k1")
        assert wait_until(lambda: _state(sdk, ticks) == 5, what="the orchestration's signal")

        # Client signals, one of them delayed.
        sdk.signal_entity(ticks, "add", input=1)
        later = datetime.now(UTC) + timedelta(seconds=1.5)
        sdk.signal_entity(ticks, "add", input=10, signal_time=later)
        wait_until(lambda: _state(sdk, ticks) == 6, what="the client's signal")
        assert _state(sdk, ticks) == 6  # the delayed signal is not due yet
        wait_until(lambda: _state(sdk, ticks) == 16, what="the delayed signal")
        assert datetime.now(UTC) >= later

        missing = sdk.get_entity(entities.EntityInstanceId("counter", "none"))
        assert missing is None
        found = sdk.get_all_entities(sdk_client.EntityQuery(instance_id_starts_with="@account@"))
        assert sorted(str(e.id) for e in found) == ["@account@k1-a", "@account@k1-b"]
        paged = sdk.get_all_entities(sdk_client.EntityQuery(page_size=1))
        assert {str(e.id) for e in paged} == {"@account@k1-a", "@account@k1-b", "@counter@k1"}

        # An entity whose state was deleted is removed by the storage clean-up.
        sdk.signal_entity(ticks, "delete")
        wait_until(lambda: sdk.get_entity(ticks) is None, what="the state's deletion")
        cleaned = sdk.clean_entity_storage()
        assert cleaned.orphaned_locks_released == 0
        sdk.close()


def test_sdk_and_duratask_entities_share_the_hub(hub_url: str) -> None:
    mine = dt.TaskHubWorker(hub_url, lease_duration=timedelta(seconds=10))
    mine.add_entity(tally)

    def configure(w: Any) -> None:
        w.add_entity(counter)

    with (
        serving(hub_url) as server,
        dt.TaskHubClient(hub_url) as client,
        mine,
        sdk_worker_on(server.address, [caller], filters=True, configure=configure),
    ):
        sdk = sdk_client_on(server.address)
        # An SDK orchestration calls duratask's entity.
        iid = sdk.schedule_new_orchestration(caller, input="t1")
        state = sdk.wait_for_orchestration_completion(iid, timeout=30)
        assert state is not None and json.loads(state.serialized_output or "") == 5, state
        seen = sdk.get_entity(entities.EntityInstanceId("tally", "t1"))
        assert seen is not None and seen.get_state(int) == 5
        # duratask's client signals the SDK's entity, and reads what it did.
        client.signal_entity("@counter@c1", "add", 7)
        got = wait_until(
            lambda: client.get_entity("@counter@c1"), what="the SDK entity to take the signal"
        )
        assert got.state == 7
        sdk.close()


def tick(ctx: task.OrchestrationContext, label: str) -> str:
    return f"tick {label}"


def test_sdk_recurring_schedules_run_on_entities(hub_url: str) -> None:
    def configure(w: Any) -> None:
        w.configure_scheduled_tasks()

    with (
        serving(hub_url) as server,
        dt.TaskHubClient(hub_url) as client,
        sdk_worker_on(server.address, [tick], configure=configure),
    ):
        sdk = sdk_client_on(server.address)
        schedules = scheduled.ScheduledTaskClient(sdk, operation_timeout=30)
        handle = schedules.create_schedule(
            scheduled.ScheduleCreationOptions(
                schedule_id="every-second",
                orchestration_name="tick",
                interval=timedelta(seconds=1),
                orchestration_input="a",
            )
        )
        described = handle.describe()
        assert described.status is scheduled.ScheduleStatus.ACTIVE

        def ticks() -> list[Any]:
            page = client.query_orchestrations(statuses=[dt.OrchestrationStatus.COMPLETED])
            return [s for s in page.states if s.name == "tick"]

        ran = wait_until(lambda: len(ticks()) >= 2, timeout=30, what="two scheduled runs")
        assert ran and all(s.output == "tick a" for s in ticks())
        handle.pause()
        assert handle.describe().status is scheduled.ScheduleStatus.PAUSED
        handle.delete()
        assert schedules.get_schedule("every-second") is None
        sdk.close()
