"""Non-determinism is caught in the first test run: the time-skipping hub replays every
episode from the stored history and checks each step strictly, so orchestration code that
reads the clock or random numbers fails at once instead of after a crash in production."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duratask as dt
from duratask.testing import SyncTimeSkippingHub, TimeSkippingHub

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def record(ctx: dt.ActivityContext, value: Any) -> Any:
    return value


async def stamps_with_the_clock(ctx: dt.OrchestrationContext, _: None) -> str:
    stamp = datetime.now(UTC).isoformat()  # wrong: a different value on every replay
    await ctx.call_activity(record, input=stamp)
    done: str = await ctx.call_activity(record, input="done")
    return done


async def picks_a_random_step(ctx: dt.OrchestrationContext, _: None) -> str:
    await ctx.call_activity(record, input=random.random())  # wrong: random in orchestration
    return "done"


async def names_a_child_with_uuid4(ctx: dt.OrchestrationContext, _: None) -> int:
    child_id = f"child-{uuid.uuid4()}"  # wrong: use ctx.new_uuid()
    result: int = await ctx.call_sub_orchestrator(child, input=1, instance_id=child_id)
    return result


async def waits_until_the_clock_says(ctx: dt.OrchestrationContext, _: None) -> str:
    await ctx.create_timer(datetime.now(UTC) + timedelta(hours=1))  # wrong: the real clock
    return "done"


async def child(ctx: dt.OrchestrationContext, n: int) -> int:
    return n + 1


async def deterministic(ctx: dt.OrchestrationContext, _: None) -> list[Any]:
    """The same steps, done right: the context's time and ids replay as the same values."""
    stamp = ctx.current_utc_datetime.isoformat()
    first = await ctx.call_activity(record, input=stamp)
    kid: int = await ctx.call_sub_orchestrator(child, input=1, instance_id=f"c-{ctx.new_uuid()}")
    await ctx.create_timer(ctx.current_utc_datetime + timedelta(hours=1))
    roll = await ctx.call_activity(record, input=4)  # a random number comes from an activity
    return [first, kid, roll]


NON_DETERMINISTIC: list[tuple[Callable[..., Any], str]] = [
    (stamps_with_the_clock, "activity 'record' with input"),
    (picks_a_random_step, "activity 'record' with input"),
    (names_a_child_with_uuid4, "sub-orchestration 'child' with instance id"),
    (waits_until_the_clock_says, "a timer with fire time"),
]


def _hub(**options: Any) -> TimeSkippingHub:
    hub = TimeSkippingHub(start=T0, **options)
    hub.register(*(fn for fn, _ in NON_DETERMINISTIC), child, deterministic, activities=(record,))
    return hub


@pytest.mark.parametrize(("orchestration", "step"), NON_DETERMINISTIC)
async def test_non_deterministic_code_fails_in_its_first_test_run(
    orchestration: Any, step: str
) -> None:
    async with _hub() as hub:
        iid = await hub.client.schedule_new_orchestration(orchestration)
        state = await hub.client.wait_for_orchestration_completion(iid)
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    failure = state.failure_details
    assert failure is not None and failure.error_type == "NonDeterminismError"
    message = failure.message
    assert step in message, message
    # Both causes, and the deterministic replacements.
    assert "code changed while this instance was running" in message
    assert "random numbers" in message and "datetime.now()" in message and "I/O" in message
    assert "set" in message
    assert "ctx.current_utc_datetime" in message and "ctx.new_uuid()" in message
    assert "activities" in message


async def test_deterministic_code_passes_the_same_checks() -> None:
    async with _hub() as hub:
        iid = await hub.client.schedule_new_orchestration(deterministic)
        state = await hub.client.wait_for_orchestration_completion(iid)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state.failure_details
    assert state.output == [T0.isoformat(), 2, 4]


async def test_without_verify_replay_the_cache_hides_it() -> None:
    # What production workers do: the cached orchestration never replays, so the clock's
    # changing value goes unnoticed until a crash makes the worker replay the history.
    async with _hub(verify_replay=False) as hub:
        iid = await hub.client.schedule_new_orchestration(stamps_with_the_clock)
        state = await hub.client.wait_for_orchestration_completion(iid)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED


def test_the_sync_hub_verifies_too() -> None:
    with SyncTimeSkippingHub(start=T0) as hub:
        hub.register(stamps_with_the_clock, activities=(record,))
        iid = hub.client.schedule_new_orchestration(stamps_with_the_clock)
        state = hub.client.wait_for_orchestration_completion(iid)
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type == "NonDeterminismError"
