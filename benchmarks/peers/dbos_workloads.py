"""W1-W5 written for DBOS Transact, run by ``--compare dbos`` beside the duratask ones, in
two configurations (see :data:`CONFIGS` and benchmarks/README.md):

- ``dbos-default``: what a user gets without tuning: ``async def`` workflows and steps,
  DBOS's default settings, and for SQLite the default rollback journal;
- ``dbos-best``: the fastest configuration found on this machine: synchronous workflows and
  steps where the workload allows them, the SQLite file in WAL mode, tuned pool sizes.

DBOS runs a workflow in the process that starts it, checkpointing each step to its system
database (SQLite or PostgreSQL), so there is no separate worker: the benchmark process starts
the workflows, runs them and awaits their handles. Each trial runs in a fresh process with a
fresh system database (a new SQLite file, or a new PostgreSQL schema via
``dbos_system_schema``).

Requires the optional package ``dbos`` (``pip install dbos``); nothing else imports it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sqlite3
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from dbos import DBOS, DBOSConfig, WorkflowHandle, WorkflowHandleAsync

from benchmarks.cpu import CpuWindow
from benchmarks.hubs import HubPlace
from benchmarks.measure import Progress, cpu_seconds, peak_rss_mb, percentile, rss_mb

SCHEDULE_CONCURRENCY = 32
EVENT_WAIT_SECONDS = 24 * 3600

# perf_counter() of each stamped step (W4 progress), and how many W5 workflows are waiting.
STAMPS: list[float] = []
WAITING = [0]


# -- configurations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DbosSetup:
    """One way to run DBOS: code style and settings. None leaves DBOS's default."""

    sync_workloads: frozenset[str] = frozenset()  # run with sync workflows and steps
    sqlite_wal: bool = False  # put the SQLite system database in WAL mode first
    sys_db_pool_size: int | None = None
    max_executor_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more DBOSConfig keys

    def style(self, workload: str) -> str:
        return "sync" if workload in self.sync_workloads else "async"


CONFIGS: dict[str, DbosSetup] = {
    # As a user gets it: async def, DBOS defaults, SQLite's default rollback journal.
    "dbos-default": DbosSetup(),
    # The fastest combination measured (benchmarks/README.md says how it was chosen):
    # sync workflows and steps where a workload can be written that way without a thread
    # per waiting workflow (W5) or a child workflow per parallel step (W2); WAL; and at most
    # 8 executor threads (DBOS's default is unbounded: a thread per running sync workflow).
    "dbos-best": DbosSetup(
        sync_workloads=frozenset({"W1", "W3", "W4"}),
        sqlite_wal=True,
        max_executor_threads=8,
    ),
}


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


# The same, synchronous: workflows run on DBOS's executor threads, steps in the caller's.


@DBOS.step()
def bump_sync(value: int) -> int:
    return value + 1


@DBOS.step()
def bump_stamped_sync(value: int) -> int:
    STAMPS.append(time.perf_counter())
    return value + 1


@DBOS.workflow()
def sequence_sync(steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = bump_sync(value)
    return value


@DBOS.workflow()
def chain_sync(steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = bump_stamped_sync(value)
    return value


# -- lifecycle -----------------------------------------------------------------------------------


def config_for(place: HubPlace, setup: DbosSetup) -> DBOSConfig:
    config: DBOSConfig = {"name": "duratask-bench", "log_level": "WARNING"}
    if place.store == "sqlite":
        path = place.sqlite_path("dbos.sqlite")
        if setup.sqlite_wal:
            # WAL is a lasting property of the file: set once, every later connection (DBOS's
            # own pool included) opens the file in WAL mode. synchronous stays at SQLite's
            # default, FULL, as duratask's store has it.
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.close()
        config["system_database_url"] = f"sqlite:///{path}"
    elif place.store == "postgresql":
        config["system_database_url"] = place.pg_url
        config["dbos_system_schema"] = place.schema
        # Only the name changes (DBOS's own is "dbos_transact"): it finds the trial's
        # backends for W1's CPU figures. DBOS adds its connect_timeout to this as usual.
        config["db_engine_kwargs"] = {"connect_args": {"application_name": place.application_name}}
    else:
        raise ValueError(f"DBOS has no {place.store!r} system database")
    if setup.sys_db_pool_size is not None:
        config["sys_db_pool_size"] = setup.sys_db_pool_size
    if setup.max_executor_threads is not None:
        config["max_executor_threads"] = setup.max_executor_threads
    config.update(setup.extra)  # type: ignore[typeddict-item]
    return config


def sqlite_settings(dbos: DBOS) -> dict[str, Any]:
    """The journal mode and synchronous level of DBOS's own SQLite connections (read through
    DBOS's engine, a private attribute: a record of what was measured, not a setting)."""
    from sqlalchemy import text

    with dbos._sys_db.engine.connect() as conn:
        journal = conn.execute(text("PRAGMA journal_mode")).scalar()
        synchronous = conn.execute(text("PRAGMA synchronous")).scalar()
    return {"sqlite_journal_mode": str(journal), "sqlite_synchronous": synchronous}


def _cpu_window(place: HubPlace) -> CpuWindow:
    if place.store == "postgresql":
        return CpuWindow(pg_url=place.pg_url, application_name=place.application_name)
    return CpuWindow()


# -- the workloads, async style ------------------------------------------------------------------


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


async def w1_sequence(
    params: dict[str, Any], progress: Progress, place: HubPlace, setup: DbosSetup
) -> dict[str, Any]:
    n = int(params["orchestrations"])
    steps = int(params.get("activities", 5))
    await _warm_up()
    window = _cpu_window(place)
    window.open()
    started = time.perf_counter()
    handles = await _start_many(sequence, [(steps,)] * n)
    scheduled = time.perf_counter() - started
    results = await asyncio.gather(*(h.get_result() for h in handles))
    elapsed = time.perf_counter() - started
    cpu = window.close(n * steps)
    if results != [steps] * n:
        raise RuntimeError("some workflows returned a wrong result")
    return _w1_figures(n, steps, elapsed, scheduled) | cpu


def _w1_figures(n: int, steps: int, elapsed: float, scheduled: float) -> dict[str, Any]:
    return {
        "seconds": elapsed,
        "schedule_seconds": scheduled,
        "orch_per_s": n / elapsed,
        "act_per_s": n * steps / elapsed,
        "orchestrations": n,
        "activities_each": steps,
    }


async def w2_fan_out(
    params: dict[str, Any], progress: Progress, place: HubPlace, setup: DbosSetup
) -> dict[str, Any]:
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


async def w3_latency(
    params: dict[str, Any], progress: Progress, place: HubPlace, setup: DbosSetup
) -> dict[str, Any]:
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


async def w4_chain(
    params: dict[str, Any], progress: Progress, place: HubPlace, setup: DbosSetup
) -> dict[str, Any]:
    steps = int(params["steps"])
    await _warm_up()
    STAMPS.clear()
    progress.restart()
    started = time.perf_counter()
    handle = await DBOS.start_workflow_async(chain, steps)
    task = asyncio.ensure_future(handle.get_result())
    while not task.done():
        progress.update(len(STAMPS), steps, step_rates(STAMPS))
        await asyncio.wait([task], timeout=0.25)
    result = task.result()
    elapsed = time.perf_counter() - started
    return _w4_figures(result, steps, elapsed)


def step_rates(stamps: list[float]) -> dict[str, float]:
    from benchmarks.workloads import _step_rates

    return _step_rates(stamps, 0.0)


def _w4_figures(result: Any, steps: int, elapsed: float) -> dict[str, Any]:
    if result != steps:
        raise RuntimeError(f"chain returned {result!r}")
    return {
        "seconds": elapsed,
        "ms_per_step": elapsed / steps * 1000,
        "steps": steps,
        **step_rates(STAMPS),
    }


async def w5_idle(
    params: dict[str, Any], progress: Progress, place: HubPlace, setup: DbosSetup
) -> dict[str, Any]:
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
    setup_s = time.perf_counter() - started
    progress.measured(setup_seconds=setup_s)
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
        "setup_seconds": setup_s,
        "deliver_seconds": delivered,
        "instances": n,
        "idle_window_s": wall,
    }


ASYNC_WORKLOADS = {
    "W1": w1_sequence,
    "W2": w2_fan_out,
    "W3": w3_latency,
    "W4": w4_chain,
    "W5": w5_idle,
}


# -- the workloads, sync style -------------------------------------------------------------------


def _warm_up_sync() -> None:
    DBOS.start_workflow(sequence_sync, 1).get_result()


def w1_sequence_sync(
    params: dict[str, Any], progress: Progress, place: HubPlace, setup: DbosSetup
) -> dict[str, Any]:
    n = int(params["orchestrations"])
    steps = int(params.get("activities", 5))
    _warm_up_sync()
    window = _cpu_window(place)
    window.open()
    started = time.perf_counter()
    # As many starts in flight as the async style has (each start commits the workflow's row).
    with concurrent.futures.ThreadPoolExecutor(SCHEDULE_CONCURRENCY) as starters:
        handles: list[WorkflowHandle[int]] = list(
            starters.map(lambda _: DBOS.start_workflow(sequence_sync, steps), range(n))
        )
    scheduled = time.perf_counter() - started
    results = [h.get_result() for h in handles]
    elapsed = time.perf_counter() - started
    cpu = window.close(n * steps)
    if results != [steps] * n:
        raise RuntimeError("some workflows returned a wrong result")
    return _w1_figures(n, steps, elapsed, scheduled) | cpu


def w3_latency_sync(
    params: dict[str, Any], progress: Progress, place: HubPlace, setup: DbosSetup
) -> dict[str, Any]:
    n = int(params["orchestrations"])
    _warm_up_sync()
    client_ms: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        DBOS.start_workflow(sequence_sync, 1).get_result()
        client_ms.append((time.perf_counter() - started) * 1000)
        progress.update(i + 1, n)
    return {
        "p50_ms": percentile(client_ms, 50),
        "p99_ms": percentile(client_ms, 99),
        "samples": n,
    }


def w4_chain_sync(
    params: dict[str, Any], progress: Progress, place: HubPlace, setup: DbosSetup
) -> dict[str, Any]:
    steps = int(params["steps"])
    _warm_up_sync()
    STAMPS.clear()
    progress.restart()
    started = time.perf_counter()
    handle = DBOS.start_workflow(chain_sync, steps)
    with concurrent.futures.ThreadPoolExecutor(1) as waiter:
        result_future = waiter.submit(handle.get_result)
        while True:
            try:
                result = result_future.result(timeout=0.25)
                break
            except concurrent.futures.TimeoutError:
                progress.update(len(STAMPS), steps, step_rates(STAMPS))
    elapsed = time.perf_counter() - started
    return _w4_figures(result, steps, elapsed)


SYNC_WORKLOADS: dict[str, Callable[..., dict[str, Any]]] = {
    "W1": w1_sequence_sync,
    "W3": w3_latency_sync,
    "W4": w4_chain_sync,
}


# -- running one trial ---------------------------------------------------------------------------


def run(
    system: str, workload: str, place: HubPlace, params: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """Launch DBOS configured as ``system`` on a fresh system database, run one workload in
    the configured style, shut DBOS down."""
    setup = CONFIGS[system]
    style = setup.style(workload)
    if style == "sync" and workload not in SYNC_WORKLOADS:
        raise ValueError(f"{workload} has no synchronous DBOS version")
    baseline_mb = rss_mb()
    dbos = DBOS(config=config_for(place, setup))
    if style == "sync":
        DBOS.launch()
        try:
            metrics = SYNC_WORKLOADS[workload](params, progress, place, setup)
            extra = sqlite_settings(dbos) if place.store == "sqlite" else {}
        finally:
            DBOS.destroy(workflow_completion_timeout_sec=0)
    else:

        async def main() -> tuple[dict[str, Any], dict[str, Any]]:
            DBOS.launch()
            try:
                found = await ASYNC_WORKLOADS[workload](params, progress, place, setup)
                return found, (sqlite_settings(dbos) if place.store == "sqlite" else {})
            finally:
                DBOS.destroy(workflow_completion_timeout_sec=0)

        metrics, extra = asyncio.run(main())
    if workload == "W5":
        metrics["baseline_rss_mb"] = baseline_mb
    metrics |= extra
    metrics["style"] = style
    metrics["dbos_version"] = metadata.version("dbos")
    return metrics
