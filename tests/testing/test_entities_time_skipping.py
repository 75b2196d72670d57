"""Entities in the time-skipping hub: delayed signals fall due on the virtual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duratask as dt
from duratask.testing import TimeSkippingHub

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def reminders(ctx: dt.EntityContext, text: Any) -> Any:
    seen = ctx.get_state(list, [])
    if ctx.operation_name == "remind":
        ctx.set_state([*seen, f"{text} at {ctx.entity_id.key}"])
        return None
    return seen


async def schedule_reminder(ctx: dt.OrchestrationContext, _: None) -> list[str]:
    later = ctx.current_utc_datetime + timedelta(days=2)
    ctx.signal_entity("@reminders@inbox", "remind", "wake up", signal_time=later)
    await ctx.create_timer(timedelta(days=3))
    result: list[str] = await ctx.call_entity("@reminders@inbox", "list")
    return result


async def test_a_delayed_signal_falls_due_on_the_virtual_clock() -> None:
    async with TimeSkippingHub(start=T0, auto_skip=False) as hub:
        hub.register(entities=(reminders,))
        await hub.client.signal_entity(
            "@reminders@inbox", "remind", "tea", signal_time=T0 + timedelta(hours=5)
        )
        await hub.advance(timedelta(hours=4, minutes=59))
        assert await hub.client.get_entity("@reminders@inbox") is None
        await hub.advance(timedelta(minutes=1))
        found = await hub.client.get_entity("@reminders@inbox")
        assert found is not None and found.state == ["tea at inbox"]
        assert found.last_modified_at == T0 + timedelta(hours=5)


async def test_orchestration_signals_and_calls_in_virtual_time() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(schedule_reminder, entities=(reminders,))
        iid = await hub.client.schedule_new_orchestration(schedule_reminder)
        state = await hub.client.wait_for_orchestration_completion(iid)
        assert state.output == ["wake up at inbox"]
        assert hub.now >= T0 + timedelta(days=3)
