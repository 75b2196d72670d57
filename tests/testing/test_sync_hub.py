"""The synchronous time-skipping hub, for tests that are plain functions."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import duratask as dt
from duratask import history as h
from duratask.testing import SyncTimeSkippingHub

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def remind(ctx: dt.ActivityContext, who: str) -> str:
    return f"reminded {who}"


async def monthly_reminder(ctx: dt.OrchestrationContext, who: str) -> list[str]:
    sent = []
    for _ in range(3):
        await ctx.create_timer(timedelta(days=30))
        note = await ctx.call_activity(remind, input=who)
        sent.append(f"{note} at {ctx.current_utc_datetime.date().isoformat()}")
    return sent


def test_ninety_days_of_reminders_in_a_sync_test() -> None:
    with SyncTimeSkippingHub(start=T0) as hub:
        hub.register(monthly_reminder, activities=(remind,))
        began = time.monotonic()
        iid = hub.client.schedule_new_orchestration(monthly_reminder, input="bob")
        state = hub.client.wait_for_orchestration_completion(iid, timeout=10)
        elapsed = time.monotonic() - began

    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state.failure_details
    assert state.output == [
        "reminded bob at 2024-03-31",
        "reminded bob at 2024-04-30",
        "reminded bob at 2024-05-30",
    ]
    assert hub.now == T0 + timedelta(days=90)
    assert elapsed < 1.0, f"took {elapsed:.3f}s of wall time"


def test_sync_advance_without_auto_skip() -> None:
    with SyncTimeSkippingHub(start=T0, auto_skip=False) as hub:
        hub.register(monthly_reminder, activities=(remind,))
        iid = hub.client.schedule_new_orchestration(monthly_reminder, input="ann")
        hub.advance(timedelta(days=45))
        state = hub.client.get_orchestration_state(iid)
        assert state is not None and state.runtime_status is dt.OrchestrationStatus.RUNNING
        history = hub.client.get_orchestration_history(iid)
        assert sum(isinstance(e, h.TaskCompleted) for e in history) == 1

        hub.advance_to(T0 + timedelta(days=90))
        state = hub.client.wait_for_orchestration_completion(iid, timeout=10)

    assert state.output[-1] == "reminded ann at 2024-05-30"
