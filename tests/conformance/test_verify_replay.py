"""The worker's verify_replay option, on every store: each episode is replayed from the
stored history (not the cache) and checked strictly, so code that is not deterministic
fails at its next episode; deterministic code runs as usual."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

import duratask as dt
from duratask import history as h

from .e2e_hub import TaskHub

pytestmark = pytest.mark.timeout(60)


def echo(ctx: dt.ActivityContext, value: str) -> str:
    return value


async def uses_the_clock(ctx: dt.OrchestrationContext, _: None) -> str:
    await ctx.call_activity(echo, input=datetime.now(UTC).isoformat())
    done: str = await ctx.call_activity(echo, input="done")
    return done


async def child(ctx: dt.OrchestrationContext, value: str) -> str:
    return value


async def uses_the_context(ctx: dt.OrchestrationContext, _: None) -> list[str]:
    """Every kind of step, each given something that replays the same: what the stored
    history gives back (times, ids) must compare equal on every store."""
    first: str = await ctx.call_activity(echo, input=ctx.current_utc_datetime.isoformat())
    second: str = await ctx.call_activity(echo, input=str(ctx.new_uuid()))
    local = ctx.current_utc_datetime.astimezone(timezone(timedelta(hours=2)))
    await ctx.create_timer(local + timedelta(milliseconds=20))
    third: str = await ctx.call_sub_orchestrator(child, input="child")
    ctx.send_event(ctx.instance_id, "note", {"at": ctx.current_utc_datetime.isoformat()})
    await ctx.wait_for_external_event("note")
    return [first, second, third]


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[TaskHub]:
    hub = TaskHub(store_url, verify_replay=True)
    hub.register(uses_the_clock, uses_the_context, child, activities=(echo,))
    await hub.start()
    yield hub
    await hub.stop()


async def test_code_that_reads_the_clock_fails_at_its_next_episode(hub: TaskHub) -> None:
    state = await hub.run(uses_the_clock)
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type == "NonDeterminismError"
    assert "history has activity 'echo' with input" in state.failure_details.message
    # Nothing was taken from the cache: every episode replayed the stored history.
    assert hub.worker.orchestration_cache.hits == 0
    history = await hub.client.get_orchestration_history(state.instance_id)
    assert sum(isinstance(e, h.TaskScheduled) for e in history) == 1


async def test_deterministic_code_completes(hub: TaskHub) -> None:
    state = await hub.run(uses_the_context)
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state.failure_details
    first, second, third = state.output
    assert datetime.fromisoformat(first) <= datetime.now(UTC)
    assert len(second) == 36 and third == "child"
