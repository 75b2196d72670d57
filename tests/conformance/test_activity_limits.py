"""Activity timeouts, heartbeats and tries, end to end on every store.

A start-to-close ``timeout`` and a ``heartbeat_timeout`` fail the task with
:class:`duratask.ActivityTimeoutError`, which a retry policy retries like any failure; the
details an activity reports with ``ctx.heartbeat`` reach its next try. ``ctx.attempt``
counts tries of a retried call and ``ctx.delivery_count`` deliveries of one try.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

import duratask as dt

from .e2e_hub import TaskHub

S = dt.OrchestrationStatus
_release = threading.Event()  # set at the end of each test: threads left running end
_runs: list[dict[str, Any]] = []


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[TaskHub]:
    _runs.clear()
    _release.clear()
    hub = TaskHub(store_url, max_concurrent_activities=2, shutdown_grace=timedelta(seconds=1))
    hub.register(
        calls,
        activities=(hangs_in_a_thread, hangs_async, beats_then_stalls, resumes, quick),
    )
    yield hub
    _release.set()
    await hub.stop()


def hangs_in_a_thread(ctx: dt.ActivityContext, _: None) -> str:
    _runs.append({"name": "hangs_in_a_thread"})
    _release.wait(60)
    return "late"


async def hangs_async(ctx: dt.ActivityContext, _: None) -> str:
    _runs.append({"name": "hangs_async"})
    await asyncio.sleep(60)
    return "late"


def beats_then_stalls(ctx: dt.ActivityContext, beats: int) -> str:
    for n in range(beats):
        ctx.heartbeat({"beat": n})
        _release.wait(0.05)
    _release.wait(60)  # no more heartbeats
    return "late"


def resumes(ctx: dt.ActivityContext, _: None) -> dict[str, Any]:
    """Fails its first try after reporting progress; the next try resumes from it."""
    _runs.append(
        {"attempt": ctx.attempt, "delivery": ctx.delivery_count, "seen": ctx.heartbeat_details}
    )
    if ctx.attempt == 1:
        ctx.heartbeat({"done": 3})
        raise RuntimeError("interrupted after 3 items")
    return {"attempt": ctx.attempt, "resumed_from": ctx.heartbeat_details}


def quick(ctx: dt.ActivityContext, n: int) -> int:
    return n * 2


async def calls(ctx: dt.OrchestrationContext, plan: dict[str, Any]) -> Any:
    """Calls the activity the plan names with its options; reports the outcome."""
    options: dict[str, Any] = {}
    if "timeout" in plan:
        options["timeout"] = timedelta(seconds=plan["timeout"])
    if "heartbeat_timeout" in plan:
        options["heartbeat_timeout"] = timedelta(seconds=plan["heartbeat_timeout"])
    if plan.get("retries"):
        options["retry_policy"] = dt.RetryPolicy(
            max_number_of_attempts=plan["retries"], first_retry_interval=timedelta(seconds=0.1)
        )
    try:
        result = await ctx.call_activity(plan["activity"], input=plan.get("input"), **options)
    except dt.TaskFailedError as exc:
        details = exc.failure_details
        return {"failed": details.error_type, "message": details.message}
    after = await ctx.call_activity(quick, input=21)
    return {"result": result, "after": after}


async def run(hub: TaskHub, plan: dict[str, Any]) -> dt.OrchestrationState:
    if hub._run is None:
        await hub.start()
    return await hub.run(calls, plan)


async def outcome(hub: TaskHub, plan: dict[str, Any]) -> Any:
    state = await run(hub, plan)
    assert state.runtime_status is S.COMPLETED, state.failure_details
    return state.output


@pytest.mark.parametrize("activity", ["hangs_in_a_thread", "hangs_async"])
async def test_an_activity_past_its_timeout_fails_its_task_with_a_timeout_error(
    hub: TaskHub, activity: str
) -> None:
    out = await outcome(hub, {"activity": activity, "timeout": 0.3})
    assert out["failed"] == "ActivityTimeoutError"
    assert "timeout of 0:00:00.300000" in out["message"]
    # The worker goes on: a hung thread does not hold a slot (there are two).
    assert (await outcome(hub, {"activity": "quick", "input": 1}))["after"] == 42


async def test_the_worker_default_timeout_applies_to_calls_without_one(store_url: str) -> None:
    _release.clear()
    hub = TaskHub(store_url, activity_timeout=timedelta(seconds=0.3))
    hub.register(calls, activities=(hangs_in_a_thread, quick))
    try:
        out = await outcome(hub, {"activity": "hangs_in_a_thread"})
    finally:
        _release.set()
        await hub.stop()
    assert out["failed"] == "ActivityTimeoutError"


async def test_an_activity_that_stops_beating_fails_with_a_timeout_error(hub: TaskHub) -> None:
    out = await outcome(
        hub, {"activity": "beats_then_stalls", "input": 6, "heartbeat_timeout": 0.2}
    )
    assert out["failed"] == "ActivityTimeoutError"
    assert "no heartbeat" in out["message"]


async def test_heartbeats_keep_a_slow_activity_alive(hub: TaskHub) -> None:
    # Beating every 50 ms (the last beat at 0.55 s) keeps it within a 0.3 s heartbeat
    # timeout; then it stops beating and times out, 0.85 s in.
    state = await run(hub, {"activity": "beats_then_stalls", "input": 12, "heartbeat_timeout": 0.3})
    assert state.output["failed"] == "ActivityTimeoutError"
    history = await hub.client.get_orchestration_history(state.instance_id)
    (scheduled,) = [e for e in history if isinstance(e, dt.history.TaskScheduled)]
    (failed,) = [e for e in history if isinstance(e, dt.history.TaskFailed)]
    assert failed.timestamp - scheduled.timestamp >= timedelta(seconds=0.55 + 0.3)
    assert failed.heartbeat_details == '{"beat":11}'


async def test_a_timeout_is_retried_by_the_retry_policy(hub: TaskHub) -> None:
    out = await outcome(hub, {"activity": "hangs_async", "timeout": 0.2, "retries": 3})
    assert out["failed"] == "ActivityTimeoutError"
    assert [r["name"] for r in _runs] == ["hangs_async"] * 3


async def test_the_next_try_sees_the_last_heartbeat_details_and_its_attempt(
    hub: TaskHub,
) -> None:
    out = await outcome(hub, {"activity": "resumes", "retries": 2})
    assert out["result"] == {"attempt": 2, "resumed_from": {"done": 3}}
    assert _runs == [
        {"attempt": 1, "delivery": 1, "seen": None},
        {"attempt": 2, "delivery": 1, "seen": {"done": 3}},
    ]


async def test_scheduled_activities_record_their_options(hub: TaskHub) -> None:
    state = await run(hub, {"activity": "resumes", "retries": 2, "timeout": 30})
    scheduled = [
        e
        for e in await hub.client.get_orchestration_history(state.instance_id)
        if isinstance(e, dt.history.TaskScheduled) and e.name == "resumes"
    ]
    assert [(e.attempt, e.timeout) for e in scheduled] == [
        (1, timedelta(seconds=30)),
        (2, timedelta(seconds=30)),
    ]


@pytest.mark.parametrize("bad", [0, -1])
async def test_timeouts_must_be_positive(hub: TaskHub, bad: float) -> None:
    state = await run(hub, {"activity": "quick", "input": 1, "timeout": bad})
    assert state.runtime_status is S.FAILED
    assert state.failure_details is not None
    assert state.failure_details.error_type == "ValueError"
    assert "timeout of activity 'quick' must be positive" in state.failure_details.message
