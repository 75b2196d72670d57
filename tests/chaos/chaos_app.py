"""Orchestrations and activities of the chaos and soak tests, shared with the worker process.

The test process imports this module to schedule orchestrations by function (registered
names are function names); ``chaos_worker.py`` imports it to register them on a worker.

The one activity, ``step``, appends a JSON line to ``activity-runs.log`` in the work
directory for every execution (one ``os.write`` on an ``O_APPEND`` descriptor, so lines of
concurrent threads and processes never interleave), then works for ``activity_ms`` and
returns ``(x * 31 + 7) % 1_000_003``. The tests compute the expected outputs on their own
(``workload.py``); nothing here is used to check a result.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duratask as dt

ACTIVITY_LOG = "activity-runs.log"


@dataclass
class _Config:
    workdir: Path | None = None
    activity_seconds: float = 0.0


_config = _Config()


def configure(workdir: Path, *, activity_seconds: float = 0.0) -> None:
    """Set where activities log their executions and how long each one works."""
    _config.workdir = workdir
    _config.activity_seconds = activity_seconds


def _record(ctx: dt.ActivityContext) -> None:
    if _config.workdir is None:
        raise RuntimeError("chaos_app.configure() was not called in this process")
    line = {
        "pid": os.getpid(),
        "instance": ctx.orchestration_id,
        "task_id": ctx.task_id,
        "delivery": ctx.delivery_count,
        "at": time.time(),
    }
    fd = os.open(_config.workdir / ACTIVITY_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


# -- the activity ---------------------------------------------------------------------------------
def step(ctx: dt.ActivityContext, x: int) -> int:
    _record(ctx)
    if _config.activity_seconds > 0:
        threading.Event().wait(_config.activity_seconds)  # simulated work, killable mid-way
    return (x * 31 + 7) % 1_000_003


def kill_worker(ctx: dt.ActivityContext, n: int) -> int:
    """Poison: takes its worker process down with it (exit code :data:`POISON_EXIT`), every time."""
    _record(ctx)
    os._exit(POISON_EXIT)


POISON_EXIT = 3


# -- inputs ---------------------------------------------------------------------------------------
@dataclass
class Chain:
    """``length`` steps one after the other, each fed the previous result plus its index."""

    n: int
    length: int = 5


@dataclass
class Fan:
    """``width`` steps at once (when_all), then one step over their sum."""

    n: int
    width: int = 10


@dataclass
class Timers:
    """A step after each durable timer of ``delays_ms``."""

    n: int
    delays_ms: list[int] = field(default_factory=list)


@dataclass
class Child:
    """A step, a timer of ``timer_ms``, a step."""

    n: int
    timer_ms: int = 100


@dataclass
class Family:
    """``children`` sub-orchestrations at once, then one more."""

    n: int
    children: int = 3
    timer_ms: int = 100


@dataclass
class Waiter:
    """A step, then the external events ``events`` in this order, then a step over them."""

    n: int
    events: list[str] = field(default_factory=list)


@dataclass
class Mixed:
    """A step, a fan-out, a timer, a sub-orchestration, the event ``go``, a last step."""

    n: int
    width: int = 10
    timer_ms: int = 100


# -- orchestrations -------------------------------------------------------------------------------
async def chain(ctx: dt.OrchestrationContext, spec: Chain) -> int:
    value = spec.n
    for i in range(spec.length):
        value = await ctx.call_activity(step, input=value + i)
    return value


async def fan(ctx: dt.OrchestrationContext, spec: Fan) -> dict[str, Any]:
    values = await dt.when_all(
        [ctx.call_activity(step, input=spec.n * 100 + i) for i in range(spec.width)]
    )
    total = await ctx.call_activity(step, input=sum(values) % 1_000_003)
    return {"values": values, "total": total}


async def timers(ctx: dt.OrchestrationContext, spec: Timers) -> int:
    value = spec.n
    for delay in spec.delays_ms:
        await ctx.create_timer(timedelta(milliseconds=delay))
        value = await ctx.call_activity(step, input=value)
    return value


async def child(ctx: dt.OrchestrationContext, spec: Child) -> list[int]:
    first = await ctx.call_activity(step, input=spec.n)
    await ctx.create_timer(timedelta(milliseconds=spec.timer_ms))
    second = await ctx.call_activity(step, input=first)
    return [first, second]


async def family(ctx: dt.OrchestrationContext, spec: Family) -> dict[str, Any]:
    together = await dt.when_all(
        [
            ctx.call_sub_orchestrator(
                child,
                input=Child(spec.n * 10 + k, spec.timer_ms),
                instance_id=f"{ctx.instance_id}:c{k}",
            )
            for k in range(spec.children)
        ]
    )
    last = await ctx.call_sub_orchestrator(
        child, input=Child(spec.n * 10 + spec.children, 50), instance_id=f"{ctx.instance_id}:last"
    )
    return {"together": together, "last": last}


async def waiter(ctx: dt.OrchestrationContext, spec: Waiter) -> dict[str, Any]:
    first = await ctx.call_activity(step, input=spec.n)
    received = []
    for name in spec.events:
        received.append(await ctx.wait_for_external_event(name))
    last = await ctx.call_activity(step, input=first + sum(received))
    return {"received": received, "last": last}


async def mixed(ctx: dt.OrchestrationContext, spec: Mixed) -> dict[str, Any]:
    first = await ctx.call_activity(step, input=spec.n)
    values = await dt.when_all(
        [ctx.call_activity(step, input=first + i) for i in range(spec.width)]
    )
    await ctx.create_timer(timedelta(milliseconds=spec.timer_ms))
    sub = await ctx.call_sub_orchestrator(
        child, input=Child(spec.n, spec.timer_ms), instance_id=f"{ctx.instance_id}:sub"
    )
    go = await ctx.wait_for_external_event("go")
    last = await ctx.call_activity(step, input=(sum(values) + sum(sub) + go) % 1_000_003)
    return {"values": values, "sub": sub, "go": go, "last": last}


async def calls_a_killer(ctx: dt.OrchestrationContext, n: int) -> int:
    """Poison: its one activity kills whichever worker runs it."""
    return int(await ctx.call_activity(kill_worker, input=n))


def _burn(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def spins(ctx: dt.OrchestrationContext, _: Any) -> None:
    """Poison: orchestration code that never yields (and swallows what it can)."""
    while True:
        try:
            _burn(3600)
        except Exception:
            continue


def tally(ctx: dt.EntityContext, amount: Any) -> int:
    """The entity of the entity chaos test: ``add`` counts, anything else reads."""
    count: int = ctx.get_state(int, 0)
    if ctx.operation_name == "add":
        count += amount
        ctx.set_state(count)
    return count


async def increment(ctx: dt.OrchestrationContext, keys: list[str]) -> int:
    """Signal ``add 1`` to the tally of each key, then add 1 more to the first by a call."""
    for key in keys:
        ctx.signal_entity(dt.EntityInstanceId("tally", key), "add", 1)
    after: int = await ctx.call_entity(dt.EntityInstanceId("tally", keys[0]), "add", 1)
    return after


ORCHESTRATIONS = (
    chain,
    fan,
    timers,
    child,
    family,
    waiter,
    mixed,
    calls_a_killer,
    spins,
    increment,
)


def register(worker: dt.TaskHubWorker) -> None:
    for orchestration in ORCHESTRATIONS:
        worker.add_orchestration(orchestration)
    worker.add_activity(step)
    worker.add_activity(kill_worker)
    worker.add_entity(tally)
