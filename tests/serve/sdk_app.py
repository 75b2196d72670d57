"""Orchestrations and activities written against the official Python SDK's public API."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from durabletask import task

_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello {name}!"


def square(ctx: task.ActivityContext, n: int) -> int:
    return n * n


def flaky(ctx: task.ActivityContext, key: str) -> str:
    """Fails the first two times it runs for ``key``."""
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        attempt = _attempts[key]
    if attempt < 3:
        raise RuntimeError(f"attempt {attempt} of {key} fails")
    return f"{key} after {attempt}"


def fails_once(ctx: task.ActivityContext, key: str) -> str:
    with _attempts_lock:
        _attempts[key] = _attempts.get(key, 0) + 1
        attempt = _attempts[key]
    if attempt == 1:
        raise ValueError(f"{key} fails the first time")
    return f"{key} ok"


def sequence(ctx: task.OrchestrationContext, names: list[str]) -> Any:
    results = []
    for name in names:
        results.append((yield ctx.call_activity(greet, input=name)))
    return results


def fan_out(ctx: task.OrchestrationContext, n: int) -> Any:
    results = yield task.when_all([ctx.call_activity(square, input=i) for i in range(n)])
    return sum(results)


def timer_then_event(ctx: task.OrchestrationContext, _: Any) -> Any:
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(milliseconds=300))
    waited = (ctx.current_utc_datetime - start).total_seconds()
    value = yield ctx.wait_for_external_event("approve")
    return {"waited": waited >= 0.3, "value": value}


def child(ctx: task.OrchestrationContext, n: int) -> Any:
    return (yield ctx.call_activity(square, input=n))


def parent(ctx: task.OrchestrationContext, n: int) -> Any:
    a = yield ctx.call_sub_orchestrator(child, input=n, instance_id=f"{ctx.instance_id}-child")
    b = yield ctx.call_sub_orchestrator(child, input=n + 1)
    return a + b


def with_retries(ctx: task.OrchestrationContext, key: str) -> Any:
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=50), max_number_of_attempts=3
    )
    return (yield ctx.call_activity(flaky, input=key, retry_policy=policy))


def waiter(ctx: task.OrchestrationContext, _: Any) -> Any:
    return (yield ctx.wait_for_external_event("never"))


def waiting_parent(ctx: task.OrchestrationContext, _: Any) -> Any:
    return (yield ctx.call_sub_orchestrator(waiter, instance_id=f"{ctx.instance_id}-child"))


def approval(ctx: task.OrchestrationContext, _: Any) -> Any:
    return (yield ctx.wait_for_external_event("approve"))


def counter(ctx: task.OrchestrationContext, total: int) -> Any:
    """Adds the "add" events it receives; continues as new after each, keeping the events
    that arrived meanwhile."""
    total += yield ctx.wait_for_external_event("add")
    if total >= 6:
        return total
    ctx.continue_as_new(total, save_events=True)
    return None


def versioned(ctx: task.OrchestrationContext, _: Any) -> Any:
    return ctx.version


def rewindable(ctx: task.OrchestrationContext, key: str) -> Any:
    first = yield ctx.call_activity(greet, input=key)
    second = yield ctx.call_activity(fails_once, input=key)
    return [first, second]


ORCHESTRATORS = [
    sequence,
    fan_out,
    timer_then_event,
    child,
    parent,
    with_retries,
    waiter,
    waiting_parent,
    approval,
    counter,
    versioned,
    rewindable,
]
ACTIVITIES = [greet, square, flaky, fails_once]
