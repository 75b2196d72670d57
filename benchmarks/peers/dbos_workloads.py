"""W1-W5 written for DBOS Transact, run by ``--compare dbos`` beside the duratask ones.

DBOS runs a workflow in the process that starts it, checkpointing each step to its system
database (SQLite or PostgreSQL), so there is no separate worker: the benchmark process starts
the workflows, runs them and awaits their handles. Each trial runs in a fresh process with a
fresh system database (a new SQLite file, or a new PostgreSQL schema via
``dbos_system_schema``), with DBOS's default settings.

Requires the optional package ``dbos`` (``pip install dbos``); nothing else imports it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any

from dbos import DBOS, DBOSConfig, WorkflowHandleAsync

from benchmarks.hubs import HubPlace
from benchmarks.measure import Progress, cpu_seconds, peak_rss_mb, percentile, rss_mb

SCHEDULE_CONCURRENCY = 32
EVENT_WAIT_SECONDS = 24 * 3600

# perf_counter() of each stamped step (W4 progress), and how many W5 workflows are waiting.
STAMPS: list[float] = []
WAITING = [0]


# -- workflows and steps ----------------------------------------------------------------------


@DBOS.step()
async def bump(value: int) -> int:
    return value + 1


@DBOS.step()
async def bump_stamped(value: int) -> int:
    STAMPS.append(time.perf_counter())
    return value + 1


@DBOS.workflow()
async def sequence(steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = await bump(value)
    return value


@DBOS.workflow()
async def chain(steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = await bump_stamped(value)
    return value


@DBOS.workflow()
async def fan_out(width: int) -> int:
    results = await asyncio.gather(*(bump(i) for i in range(width)))
    return sum(results)


@DBOS.workflow()
async def wait_event() -> int:
    WAITING[0] += 1  # not durable; only tells this process the workflow reached its wait
    value: int = await DBOS.recv_async("go", timeout_seconds=EVENT_WAIT_SECONDS)
    return value


# -- lifecycle -----------------------------------------------------------------------------------


def config_for(place: HubPlace) -> DBOSConfig:
    config: DBOSConfig = {"name": "duratask-bench", "log_level": "WARNING"}
    if place.store == "sqlite":
        config["system_database_url"] = f"sqlite:///{place.sqlite_path('dbos.sqlite')}"
    elif place.store == "postgresql":
        config["system_database_url"] = place.pg_url
        config["dbos_system_schema"] = place.schema
    else:
        raise ValueError(f"DBOS has no {place.store!r} system database")
    return config


async def _start_many(
    workflow: Callable[..., Coroutine[Any, Any, Any]], args: list[tuple[Any, ...]]
) -> list[WorkflowHandleAsync[Any]]:
    slots = asyncio.Semaphore(SCHEDULE_CONCURRENCY)

    async def one(arg: tuple[Any, ...]) -> WorkflowHandleAsync[Any]:
        async with slots:
            return await DBOS.start_workflow_async(workflow, *arg)

    return list(await asyncio.gather(*(one(a) for a in args)))


async def _warm_up() -> None:
    handle = await DBOS.start_workflow_async(sequence, 1)
    await handle.get_result()


# -- the workloads -------------------------------------------------------------------------------


async def w1_sequence(params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    n = int(params["orchestrations"])
    steps = int(params.get("activities", 5))
    await _warm_up()
    started = time.perf_counter()
    handles = await _start_many(sequence, [(steps,)] * n)
    scheduled = time.perf_counter() - started
    results = await asyncio.gather(*(h.get_result() for h in handles))
    elapsed = time.perf_counter() - started
    if results != [steps] * n:
        raise RuntimeError("some workflows returned a wrong result")
    return {
        "seconds": elapsed,
        "schedule_seconds": scheduled,
        "orch_per_s": n / elapsed,
        "act_per_s": n * steps / elapsed,
        "orchestrations": n,
        "activities_each": steps,
    }


async def w2_fan_out(params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    width = int(params["activities"])
    await _warm_up()
    started = time.perf_counter()
    handle = await DBOS.start_workflow_async(fan_out, width)
    total = await handle.get_result()
    elapsed = time.perf_counter() - started
    if total != sum(range(1, width + 1)):
        raise RuntimeError(f"fan-out sum was {total!r}")
    return {
        "seconds": elapsed,
        "act_per_s": width / elapsed,
        "activities": width,
    }


async def w3_latency(params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    n = int(params["orchestrations"])
    await _warm_up()
    client_ms: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        handle = await DBOS.start_workflow_async(sequence, 1)
        await handle.get_result()
        client_ms.append((time.perf_counter() - started) * 1000)
        progress.update(i + 1, n)
    return {
        "p50_ms": percentile(client_ms, 50),
        "p99_ms": percentile(client_ms, 99),
        "samples": n,
    }


async def w4_chain(params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from benchmarks.workloads import _step_rates

    steps = int(params["steps"])
    await _warm_up()
    STAMPS.clear()
    progress.restart()
    started = time.perf_counter()
    handle = await DBOS.start_workflow_async(chain, steps)
    task = asyncio.ensure_future(handle.get_result())
    while not task.done():
        progress.update(len(STAMPS), steps, _step_rates(STAMPS, started))
        await asyncio.wait([task], timeout=0.25)
    result = task.result()
    elapsed = time.perf_counter() - started
    if result != steps:
        raise RuntimeError(f"chain returned {result!r}")
    return {
        "seconds": elapsed,
        "ms_per_step": elapsed / steps * 1000,
        "steps": steps,
        **_step_rates(STAMPS, started),
    }


async def w5_idle(params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    n = int(params["instances"])
    window = float(params.get("idle_window", 5.0))
    await _warm_up()
    WAITING[0] = 0
    progress.phase("start all and reach the wait")
    started = time.perf_counter()
    handles = await _start_many(wait_event, [()] * n)
    while WAITING[0] < n:
        progress.update(WAITING[0], n)
        await asyncio.sleep(0.01)
    setup = time.perf_counter() - started
    progress.measured(setup_seconds=setup)
    progress.phase("idle")
    await asyncio.sleep(1.0)
    gc.collect()
    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    await asyncio.sleep(window)
    cpu_used, wall = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
    idle_rss = rss_mb()
    progress.measured(rss_mb=idle_rss, idle_cpu_pct=cpu_used / wall * 100)
    progress.phase("deliver the events")
    started = time.perf_counter()
    slots = asyncio.Semaphore(SCHEDULE_CONCURRENCY)

    async def deliver(index: int, handle: WorkflowHandleAsync[Any]) -> None:
        async with slots:
            await DBOS.send_async(handle.get_workflow_id(), index, topic="go")

    await asyncio.gather(*(deliver(i, h) for i, h in enumerate(handles)))
    results = await asyncio.gather(*(h.get_result() for h in handles))
    delivered = time.perf_counter() - started
    if results != list(range(n)):
        raise RuntimeError("some waiting workflows returned a wrong result")
    return {
        "rss_mb": idle_rss,
        "peak_rss_mb": peak_rss_mb(),
        "idle_cpu_pct": cpu_used / wall * 100,
        "setup_seconds": setup,
        "deliver_seconds": delivered,
        "instances": n,
        "idle_window_s": wall,
    }


WORKLOADS = {
    "W1": w1_sequence,
    "W2": w2_fan_out,
    "W3": w3_latency,
    "W4": w4_chain,
    "W5": w5_idle,
}


async def run(
    workload: str, place: HubPlace, params: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """Launch DBOS on a fresh system database, run one workload, shut DBOS down."""
    baseline_mb = rss_mb()
    DBOS(config=config_for(place))
    DBOS.launch()
    try:
        metrics = await WORKLOADS[workload](params, progress)
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)
    if workload == "W5":
        metrics["baseline_rss_mb"] = baseline_mb
    metrics["dbos_version"] = metadata.version("dbos")
    return metrics
