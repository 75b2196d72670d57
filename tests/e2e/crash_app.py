"""Orchestrations and activities shared by the crash tests and the worker subprocess.

The test process imports this module to schedule orchestrations by function (their
registered names are the function names); ``crash_worker.py`` imports it to register the
same functions on a :class:`duratask.TaskHubWorker`.

Every activity execution appends one JSON line to ``executions.log`` in the work directory
(one ``os.write`` on an ``O_APPEND`` descriptor, so lines from concurrent threads and
processes never interleave), with the worker's pid and the wall-clock time. The test counts
those lines to see which activities ran again after a crash, where and when. ``hang_once``
is the activity a worker in ``activity`` mode gets stuck in.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duratask as dt

EXECUTIONS_LOG = "executions.log"
HANG_MARKER = "hang.marker"
EPISODE_KILL_RECORD = "episode-kill.json"
# How long a hung activity blocks if nobody kills its worker: far longer than any test waits.
HANG_SECONDS = 60.0


@dataclass
class _Config:
    workdir: Path | None = None
    hang: bool = False
    activity_seconds: float = 0.0


_config = _Config()


def configure(workdir: Path, *, hang: bool, activity_seconds: float = 0.0) -> None:
    """Set where activities log their executions, whether ``hang_once`` may hang, and how
    long each activity works (blocks) before returning."""
    _config.workdir = workdir
    _config.hang = hang
    _config.activity_seconds = activity_seconds


def _simulate_work() -> None:
    if _config.activity_seconds > 0:
        threading.Event().wait(_config.activity_seconds)


def _record(ctx: dt.ActivityContext, value: Any) -> None:
    if _config.workdir is None:
        raise RuntimeError("crash_app.configure() was not called in this process")
    line = {
        "pid": os.getpid(),
        "instance": ctx.orchestration_id,
        "task_id": ctx.task_id,
        "activity": ctx.name,
        "delivery": ctx.delivery_count,
        "input": value,
        "at": time.time(),
    }
    data = (json.dumps(line) + "\n").encode()
    fd = os.open(_config.workdir / EXECUTIONS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _claim_hang_marker(ctx: dt.ActivityContext) -> bool:
    """Atomically create the hang marker (with who hangs in it); False if it already exists.

    The content is written to a private file first and then hard-linked into place, so a
    reader never sees a marker without its content, and only one execution ever wins.
    """
    assert _config.workdir is not None
    marker = _config.workdir / HANG_MARKER
    if marker.exists():
        return False
    private = _config.workdir / f"{HANG_MARKER}.{os.getpid()}.{threading.get_ident()}"
    claim = {"pid": os.getpid(), "instance": ctx.orchestration_id, "task_id": ctx.task_id}
    private.write_text(json.dumps(claim))
    try:
        os.link(private, marker)
    except FileExistsError:
        return False
    finally:
        private.unlink()
    return True


# -- activities -----------------------------------------------------------------------------------
def work(ctx: dt.ActivityContext, item: str) -> str:
    _record(ctx, item)
    _simulate_work()
    return f"{item}:done"


def square(ctx: dt.ActivityContext, n: int) -> int:
    _record(ctx, n)
    _simulate_work()
    return n * n


def hang_once(ctx: dt.ActivityContext, item: str) -> str:
    """Like ``work``; on a worker in ``activity`` mode, the first execution ever blocks."""
    _record(ctx, item)
    if _config.hang and _claim_hang_marker(ctx):
        threading.Event().wait(HANG_SECONDS)  # the test SIGKILLs the worker meanwhile
    _simulate_work()
    return f"{item}:done"


def kills_its_worker(ctx: dt.ActivityContext, item: str) -> str:
    """Poison: takes its worker process down with it, every time."""
    _record(ctx, item)
    os._exit(3)


ACTIVITIES = (work, square, hang_once, kills_its_worker)


# -- orchestrations -------------------------------------------------------------------------------
@dataclass
class Job:
    n: int
    timer_ms: int = 100
    fan_out: int = 4


async def sequence(ctx: dt.OrchestrationContext, n: int) -> list[str]:
    """Four activities one after the other; the second is ``hang_once``."""
    results = [await ctx.call_activity(work, input=f"{n}-0")]
    results.append(await ctx.call_activity(hang_once, input=f"{n}-1"))
    for step in (2, 3):
        results.append(await ctx.call_activity(work, input=f"{n}-{step}"))
    return results


def expected_sequence(n: int) -> list[str]:
    return [f"{n}-{step}:done" for step in range(4)]


async def calls_a_killer(ctx: dt.OrchestrationContext, n: int) -> str:
    return str(await ctx.call_activity(kills_its_worker, input=f"{n}-poison"))


def burn_cpu(seconds: float) -> None:
    """Pure-Python work that never yields, for ``seconds`` of wall time."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


async def spins(ctx: dt.OrchestrationContext, _: Any) -> None:
    """Orchestration code that never yields (and swallows what it can)."""
    while True:
        try:
            burn_cpu(3600)
        except Exception:
            continue


async def cpu_heavy(ctx: dt.OrchestrationContext, plan: list[float]) -> list[str]:
    """Each step burns plan[i] seconds of CPU in orchestration code, then calls an activity."""
    results = []
    for i, seconds in enumerate(plan):
        burn_cpu(seconds)
        results.append(await ctx.call_activity(work, input=f"{ctx.instance_id}-{i}"))
    return results


async def child_flow(ctx: dt.OrchestrationContext, n: int) -> list[Any]:
    squared = await ctx.call_activity(square, input=n)
    done = await ctx.call_activity(work, input=f"{n}-child")
    return [squared, done]


async def pipeline(ctx: dt.OrchestrationContext, job: Job) -> dict[str, Any]:
    """An activity, a fan-out, a durable timer, a sub-orchestration, then a last activity."""
    first = await ctx.call_activity(work, input=f"{job.n}-first")
    squares = await dt.when_all(
        [ctx.call_activity(square, input=job.n + i) for i in range(job.fan_out)]
    )
    await ctx.create_timer(timedelta(milliseconds=job.timer_ms))
    child = await ctx.call_sub_orchestrator(
        child_flow, input=job.n, instance_id=f"{ctx.instance_id}:child"
    )
    last = await ctx.call_activity(work, input=f"{job.n}-last")
    return {"first": first, "squares": squares, "child": child, "last": last}


def expected_pipeline(job: Job) -> dict[str, Any]:
    return {
        "first": f"{job.n}-first:done",
        "squares": [(job.n + i) ** 2 for i in range(job.fan_out)],
        "child": [job.n * job.n, f"{job.n}-child:done"],
        "last": f"{job.n}-last:done",
    }


@dataclass
class Burst:
    n: int
    steps: int = 5
    fan_out: int = 10


async def steps_then_fan_out(ctx: dt.OrchestrationContext, burst: Burst) -> dict[str, Any]:
    """``burst.steps`` activities one after the other, then a fan-out of ``burst.fan_out``."""
    steps = []
    for step in range(burst.steps):
        steps.append(await ctx.call_activity(work, input=f"{burst.n}-s{step}"))
    squares = await dt.when_all(
        [ctx.call_activity(square, input=burst.n + i) for i in range(burst.fan_out)]
    )
    return {"steps": steps, "squares": squares}


def expected_steps_then_fan_out(burst: Burst) -> dict[str, Any]:
    return {
        "steps": [f"{burst.n}-s{step}:done" for step in range(burst.steps)],
        "squares": [(burst.n + i) ** 2 for i in range(burst.fan_out)],
    }


async def stream_collector(ctx: dt.OrchestrationContext, seen: list[int]) -> list[int]:
    """An eternal orchestration: one value per execution (every third squared by an
    activity), until ``None``; the other values wait in the store or are carried into the
    next execution."""
    n = await ctx.wait_for_external_event("n")
    if n is None:
        return seen
    squared = await ctx.call_activity(square, input=n) if n % 3 == 0 else n * n
    ctx.continue_as_new([*seen, squared], save_events=True)
    return seen


ORCHESTRATIONS = (
    calls_a_killer,
    spins,
    cpu_heavy,
    sequence,
    child_flow,
    pipeline,
    steps_then_fan_out,
    stream_collector,
)


def register(worker: dt.TaskHubWorker) -> None:
    for orchestration in ORCHESTRATIONS:
        worker.add_orchestration(orchestration)
    for activity in ACTIVITIES:
        worker.add_activity(activity)
