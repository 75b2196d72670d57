"""Types the orchestration context gives the tasks it makes (checked by mypy, not run).

A task is typed from its target's annotations: an activity's or a sub-orchestration's
return type (``async def``, plain or generator functions), or the explicit ``return_type`` /
``data_type`` when the target is named by a string.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, assert_type

import duratask as dt


@dataclass
class Receipt:
    order: int


async def charge(ctx: dt.ActivityContext, amount: float) -> Receipt:
    return Receipt(int(amount))


def count(ctx: dt.ActivityContext, items: list[str]) -> int:
    return len(items)


def ping(ctx: dt.ActivityContext) -> str:
    return "pong"


async def child(ctx: dt.OrchestrationContext, n: int) -> list[int]:
    return [n]


def generator_child(ctx: dt.OrchestrationContext, n: int) -> Generator[Any, Any, str]:
    yield ctx.create_timer(ctx.current_utc_datetime)
    return str(n)


async def typed_tasks(ctx: dt.OrchestrationContext, _: None) -> None:
    assert_type(ctx.call_activity(charge, input=9.5), dt.Task[Receipt])
    assert_type(ctx.call_activity(count, input=["a"]), dt.Task[int])
    assert_type(ctx.call_activity(ping), dt.Task[str])
    assert_type(ctx.call_activity("charge"), dt.Task[Any])
    assert_type(ctx.call_activity("charge", return_type=Receipt), dt.Task[Receipt])
    assert_type(ctx.call_sub_orchestrator(child, input=3), dt.Task[list[int]])
    assert_type(ctx.call_sub_orchestrator(generator_child, input=3), dt.Task[str])
    assert_type(ctx.call_sub_orchestrator("child", return_type=int), dt.Task[int])
    assert_type(ctx.wait_for_external_event("approval"), dt.Task[Any])
    assert_type(ctx.wait_for_external_event("approval", data_type=Receipt), dt.Task[Receipt])
    receipt = await ctx.call_activity(charge, input=9.5)
    assert_type(receipt, Receipt)
    assert_type(await dt.when_all([ctx.call_activity(count, input=[])]), list[int])
