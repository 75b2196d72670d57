"""Orchestrations and activities the command-line tests run on a real worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import duratask as dt

# The flaky activity fails while this is True; tests flip it to check rewind.
FLAKY = {"fail": True}


def say_hello(ctx: dt.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def explode(ctx: dt.ActivityContext, message: str) -> None:
    raise ValueError(message)


def flaky(ctx: dt.ActivityContext, value: int) -> int:
    if FLAKY["fail"]:
        raise RuntimeError("flaky activity failed")
    return value * 2


async def greet(ctx: dt.OrchestrationContext, name: str) -> str:
    greeting: str = await ctx.call_activity(say_hello, input=name)
    return greeting


async def fail(ctx: dt.OrchestrationContext, message: str) -> None:
    await ctx.call_activity(explode, input=message)


async def await_approval(ctx: dt.OrchestrationContext, _: Any) -> Any:
    ctx.set_custom_status({"stage": "waiting"})
    approval = await ctx.wait_for_external_event("approval")
    ctx.set_custom_status({"stage": "approved"})
    return {"approved_by": approval}


async def timed(ctx: dt.OrchestrationContext, name: str) -> str:
    await ctx.create_timer(timedelta(milliseconds=20))
    greeting: str = await ctx.call_activity(say_hello, input=name)
    return greeting


async def parent(ctx: dt.OrchestrationContext, names: list[str]) -> list[str]:
    results = []
    for i, name in enumerate(names):
        child_id = f"{ctx.instance_id}:child-{i}"
        results.append(await ctx.call_sub_orchestrator(greet, input=name, instance_id=child_id))
    return results


async def rewindable(ctx: dt.OrchestrationContext, value: int) -> int:
    result: int = await ctx.call_activity(flaky, input=value)
    return result


def counter(ctx: dt.EntityContext, amount: Any) -> Any:
    if ctx.operation_name == "add":
        ctx.set_state(ctx.get_state(int, 0) + amount)
    return ctx.get_state(int, 0)


async def countdown(ctx: dt.OrchestrationContext, n: int) -> str:
    """Continues as new down to 0, waiting once per round."""
    if n > 0:
        await ctx.create_timer(timedelta(milliseconds=1))
        ctx.continue_as_new(n - 1)
        return "continued"
    return "lift-off"


ORCHESTRATIONS = (greet, fail, await_approval, timed, parent, rewindable, countdown)
ACTIVITIES = (say_hello, explode, flaky)


def make_worker(url: str) -> dt.TaskHubWorker:
    worker = dt.TaskHubWorker(url, lease_duration=timedelta(seconds=10))
    for orchestration in ORCHESTRATIONS:
        worker.add_orchestration(orchestration)
    for activity in ACTIVITIES:
        worker.add_activity(activity)
    worker.add_entity(counter)
    return worker
