"""The time-skipping hub: days of virtual time pass in milliseconds of wall time."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

import duratask as dt
from duratask import history as h
from duratask.testing import TimeSkippingHub

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
OrchestrationStatus = dt.OrchestrationStatus


async def wait_three_days(ctx: dt.OrchestrationContext, _: None) -> str:
    await ctx.create_timer(timedelta(days=3))
    return ctx.current_utc_datetime.isoformat()


async def two_timers(ctx: dt.OrchestrationContext, _: None) -> list[str]:
    seen = [ctx.current_utc_datetime.isoformat()]
    await ctx.create_timer(timedelta(days=1))
    seen.append(ctx.current_utc_datetime.isoformat())
    ctx.set_custom_status("first timer fired")
    await ctx.create_timer(timedelta(days=3))
    seen.append(ctx.current_utc_datetime.isoformat())
    return seen


async def approval(ctx: dt.OrchestrationContext, _: None) -> str:
    try:
        who = await ctx.wait_for_external_event("approval", timeout=timedelta(days=3))
    except dt.EventTimeoutError:
        return f"timed out at {ctx.current_utc_datetime.isoformat()}"
    return f"approved by {who} at {ctx.current_utc_datetime.isoformat()}"


ATTEMPTS: dict[str, int] = {}


def flaky(ctx: dt.ActivityContext, key: str) -> int:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 3:
        raise ConnectionError(f"attempt {ATTEMPTS[key]} failed")
    return ATTEMPTS[key]


async def with_retries(ctx: dt.OrchestrationContext, key: str) -> dict[str, object]:
    policy = dt.RetryPolicy(
        first_retry_interval=timedelta(hours=1), max_number_of_attempts=5, backoff_coefficient=2
    )
    attempts = await ctx.call_activity(flaky, input=key, retry_policy=policy)
    return {"attempts": attempts, "at": ctx.current_utc_datetime.isoformat()}


def at(delta: timedelta) -> str:
    return (T0 + delta).isoformat()


async def test_a_three_day_timer_completes_in_well_under_a_second() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(wait_three_days)
        began = time.monotonic()
        iid = await hub.client.schedule_new_orchestration(wait_three_days)
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)
        elapsed = time.monotonic() - began

    assert state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.output == at(timedelta(days=3))  # the orchestration saw virtual time
    assert hub.now == T0 + timedelta(days=3)
    assert elapsed < 1.0, f"took {elapsed:.3f}s of wall time"


async def test_advance_fires_only_the_timers_due_by_then() -> None:
    async with TimeSkippingHub(start=T0, auto_skip=False) as hub:
        hub.register(two_timers)
        iid = await hub.client.schedule_new_orchestration(two_timers)

        assert await hub.advance(timedelta(days=2)) == T0 + timedelta(days=2)
        state = await hub.client.get_orchestration_state(iid)
        assert state is not None
        assert state.runtime_status is OrchestrationStatus.RUNNING
        assert state.custom_status == "first timer fired"

        await hub.advance(timedelta(days=2) - timedelta(seconds=1))
        state = await hub.client.get_orchestration_state(iid)
        assert state is not None and state.runtime_status is OrchestrationStatus.RUNNING

        await hub.advance(timedelta(seconds=1))
        state = await hub.client.get_orchestration_state(iid)

    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.output == [at(timedelta(0)), at(timedelta(days=1)), at(timedelta(days=4))]


async def test_advance_steps_through_due_times_in_order() -> None:
    # One jump of 10 days still fires the first timer at day 1, so the second timer it
    # creates is due at day 4 (not day 13) and fires within the same advance.
    async with TimeSkippingHub(start=T0, auto_skip=False) as hub:
        hub.register(two_timers)
        iid = await hub.client.schedule_new_orchestration(two_timers)
        await hub.advance_to(T0 + timedelta(days=10))
        state = await hub.client.get_orchestration_state(iid)

    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.output == [at(timedelta(0)), at(timedelta(days=1)), at(timedelta(days=4))]
    assert hub.now == T0 + timedelta(days=10)


async def test_an_event_timeout_fires_on_virtual_time() -> None:
    async with TimeSkippingHub(start=T0, auto_skip=False) as hub:
        hub.register(approval)
        iid = await hub.client.schedule_new_orchestration(approval)
        await hub.advance(timedelta(days=2, hours=23))
        state = await hub.client.get_orchestration_state(iid)
        assert state is not None and state.runtime_status is OrchestrationStatus.RUNNING

        await hub.advance(timedelta(hours=1))
        state = await hub.client.get_orchestration_state(iid)

    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.output == f"timed out at {at(timedelta(days=3))}"


async def test_an_event_before_the_timeout_wins_and_start_does_not_skip_past_it() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(approval)
        iid = await hub.client.schedule_new_orchestration(approval)
        # Waiting for the start must not jump to the 3-day timeout once the instance runs.
        await hub.client.wait_for_orchestration_start(iid, timeout=10)
        await hub.wait_until_idle()
        assert hub.now == T0
        await hub.advance(timedelta(days=1))
        await hub.client.raise_orchestration_event(iid, "approval", data="alice")
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)

    assert state.output == f"approved by alice at {at(timedelta(days=1))}"


async def test_retry_back_offs_are_skipped() -> None:
    key = "retry-back-offs"
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(with_retries, activities=(flaky,))
        began = time.monotonic()
        iid = await hub.client.schedule_new_orchestration(with_retries, input=key)
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)
        elapsed = time.monotonic() - began

    assert state.runtime_status is OrchestrationStatus.COMPLETED, state.failure_details
    # Back-offs of 1 h, then 2 h (coefficient 2) before the third, successful attempt.
    assert state.output == {"attempts": 3, "at": at(timedelta(hours=3))}
    assert ATTEMPTS[key] == 3
    assert elapsed < 1.0, f"took {elapsed:.3f}s of wall time"


async def test_without_auto_skip_time_moves_only_when_advanced() -> None:
    async with TimeSkippingHub(start=T0, auto_skip=False) as hub:
        hub.register(wait_three_days)
        iid = await hub.client.schedule_new_orchestration(wait_three_days)
        await hub.wait_until_idle()
        with pytest.raises(dt.OrchestrationWaitTimeoutError):
            await hub.client.wait_for_orchestration_completion(iid, timeout=0.05)
        state = await hub.client.get_orchestration_state(iid)
        assert state is not None and state.runtime_status is OrchestrationStatus.RUNNING
        assert hub.now == T0

        await hub.advance(timedelta(days=3))
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)

    assert state.output == at(timedelta(days=3))


async def test_a_delayed_start_is_skipped_to() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(wait_three_days)
        iid = await hub.client.schedule_new_orchestration(
            wait_three_days, start_at=T0 + timedelta(days=7)
        )
        started = await hub.client.wait_for_orchestration_start(iid, timeout=10)
        assert started.runtime_status is OrchestrationStatus.RUNNING
        assert hub.now == T0 + timedelta(days=7)
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)

    assert state.output == at(timedelta(days=10))


RELEASE = threading.Event()
STARTED = threading.Event()


def blocking(ctx: dt.ActivityContext, _: None) -> str:
    STARTED.set()
    RELEASE.wait(10)
    return "done"


async def activity_then_timer(ctx: dt.OrchestrationContext, _: None) -> str:
    await ctx.call_activity(blocking)
    await ctx.create_timer(timedelta(days=1))
    return ctx.current_utc_datetime.isoformat()


async def test_advance_lets_running_work_finish_before_moving_the_clock() -> None:
    RELEASE.clear()
    STARTED.clear()
    async with TimeSkippingHub(start=T0, auto_skip=False) as hub:
        hub.register(activity_then_timer, activities=(blocking,))
        iid = await hub.client.schedule_new_orchestration(activity_then_timer)
        advancing = asyncio.create_task(hub.advance(timedelta(hours=1)))
        assert await asyncio.to_thread(STARTED.wait, 10)
        for _ in range(20):
            await asyncio.sleep(0)
        assert not advancing.done()
        assert hub.now == T0  # the clock waits for the running activity
        RELEASE.set()
        await advancing

        # The timer was created at T0, when the activity finished, not an hour later.
        history = await hub.client.get_orchestration_history(iid)
        timers = [e for e in history if isinstance(e, h.TimerCreated)]
        assert [t.fire_at for t in timers] == [T0 + timedelta(days=1)]
        await hub.advance(timedelta(hours=23))
        state = await hub.client.get_orchestration_state(iid)

    assert state is not None and state.runtime_status is OrchestrationStatus.COMPLETED
    assert state.output == at(timedelta(days=1))


async def test_time_never_goes_back() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        with pytest.raises(ValueError, match="cannot go back"):
            await hub.advance_to(T0 - timedelta(seconds=1))
        with pytest.raises(ValueError, match="negative"):
            await hub.advance(timedelta(seconds=-1))
        with pytest.raises(ValueError, match="naive"):
            await hub.advance_to(datetime(2030, 1, 1))
        assert hub.now == T0


async def test_a_hub_that_is_not_started_says_so() -> None:
    hub = TimeSkippingHub(start=T0)
    with pytest.raises(RuntimeError, match="not started"):
        await hub.advance(timedelta(days=1))
    await hub.stop()


async def nap(ctx: dt.OrchestrationContext, days: int) -> str:
    await ctx.create_timer(timedelta(days=days))
    return ctx.current_utc_datetime.isoformat()


async def parent(ctx: dt.OrchestrationContext, _: None) -> list[str]:
    return await dt.when_all([ctx.call_sub_orchestrator(nap, input=days) for days in (2, 5)])


async def daily(ctx: dt.OrchestrationContext, days_left: int) -> str:
    if days_left == 0:
        return ctx.current_utc_datetime.isoformat()
    await ctx.create_timer(timedelta(days=1))
    ctx.continue_as_new(days_left - 1)
    return ""


async def test_sub_orchestration_timers_skip_while_the_parent_is_awaited() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(parent, nap)
        iid = await hub.client.schedule_new_orchestration(parent)
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)

    assert state.output == [at(timedelta(days=2)), at(timedelta(days=5))]


async def test_continue_as_new_loops_skip_each_timer() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(daily)
        iid = await hub.client.schedule_new_orchestration(daily, input=5)
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)

    assert state.output == at(timedelta(days=5))


async def test_a_blocked_activity_is_named_when_the_hub_never_goes_idle() -> None:
    RELEASE.clear()
    STARTED.clear()
    async with TimeSkippingHub(start=T0, auto_skip=False, idle_timeout=0.2) as hub:
        hub.register(activity_then_timer, activities=(blocking,))
        await hub.client.schedule_new_orchestration(activity_then_timer, instance_id="stuck")
        try:
            with pytest.raises(TimeoutError, match="activity 'blocking' of 'stuck'"):
                await hub.advance(timedelta(days=1))
            assert hub.now == T0
        finally:
            RELEASE.set()
