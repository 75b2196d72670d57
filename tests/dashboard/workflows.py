"""Orchestrations and activities the dashboard tests run on a real worker."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import duratask as dt

_flaky_lock = threading.Lock()
_flaky_failed: set[str] = set()


def double(ctx: dt.ActivityContext, value: int) -> int:
    return value * 2


def flaky(ctx: dt.ActivityContext, key: str) -> str:
    """Fails the first time it is called with ``key``, succeeds afterwards (for rewind)."""
    with _flaky_lock:
        if key not in _flaky_failed:
            _flaky_failed.add(key)
            raise RuntimeError(f"flaky failure for {key} <b>bold</b>")
    return f"recovered {key}"


def explode(ctx: dt.ActivityContext, message: str) -> None:
    raise ValueError(message)


async def child(ctx: dt.OrchestrationContext, value: int) -> int:
    doubled: int = await ctx.call_activity(double, input=value)
    return doubled


async def approval(ctx: dt.OrchestrationContext, order: dict[str, Any]) -> dict[str, Any]:
    """Activity, timer, external event, sub-orchestration: one of each on the timeline."""
    doubled = await ctx.call_activity(double, input=order["amount"])
    await ctx.create_timer(timedelta(milliseconds=20))
    ctx.set_custom_status({"stage": "awaiting approval"})
    approver = await ctx.wait_for_external_event("approve")
    from_child = await ctx.call_sub_orchestrator(
        child, input=doubled, instance_id=f"{ctx.instance_id}:child"
    )
    ctx.set_custom_status({"stage": "done"})
    return {"approved_by": approver, "total": from_child}


async def wait_event(ctx: dt.OrchestrationContext, _: Any) -> Any:
    return await ctx.wait_for_external_event("go")


async def echo(ctx: dt.OrchestrationContext, value: Any) -> Any:
    return value


async def flaky_flow(ctx: dt.OrchestrationContext, key: str) -> str:
    result: str = await ctx.call_activity(flaky, input=key)
    return result


async def failing(ctx: dt.OrchestrationContext, message: str) -> None:
    await ctx.call_activity(explode, input=message)


async def waits_on_everything(ctx: dt.OrchestrationContext, _: Any) -> Any:
    """An activity no worker runs here, an hour's timer and a waiting sub-orchestration."""
    ctx.set_custom_status({"stage": "waiting on everything"})
    return await dt.when_all(
        [
            ctx.call_activity("runs_elsewhere", input=1),
            ctx.create_timer(timedelta(hours=1)),
            ctx.call_sub_orchestrator(wait_event, instance_id=f"{ctx.instance_id}:sub"),
        ]
    )


async def retried(ctx: dt.OrchestrationContext, key: str) -> str:
    """``flaky`` under a retry policy: its second try succeeds."""
    policy = dt.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=50), max_number_of_attempts=3
    )
    result: str = await ctx.call_activity(flaky, input=key, retry_policy=policy)
    return result


def counter(ctx: dt.EntityContext, amount: Any) -> Any:
    if ctx.operation_name == "add":
        ctx.set_state(ctx.get_state(int, 0) + amount)
    return ctx.get_state(int, 0)


async def rounds(ctx: dt.OrchestrationContext, state: dict[str, Any]) -> dict[str, Any]:
    """An eternal orchestration in brief: each round waits once, then continues as new,
    until it has run ``state["until"]`` rounds; the last round waits for "stop"."""
    done = state["round"]
    if done + 1 < state["until"]:
        await ctx.create_timer(timedelta(milliseconds=1))
        ctx.continue_as_new({**state, "round": done + 1})
        return state
    await ctx.wait_for_external_event("stop")
    return {**state, "round": done + 1}


ORCHESTRATIONS = (
    rounds,
    approval,
    child,
    wait_event,
    echo,
    flaky_flow,
    failing,
    waits_on_everything,
    retried,
)
ACTIVITIES = (double, flaky, explode)


def register(worker: dt.TaskHubWorker) -> dt.TaskHubWorker:
    for fn in ORCHESTRATIONS:
        worker.add_orchestration(fn)
    for activity in ACTIVITIES:
        worker.add_activity(activity)
    worker.add_entity(counter)
    return worker
