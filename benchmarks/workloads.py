"""The duratask workloads W1-W7.

Each ``w*`` coroutine runs one repetition on a fresh hub and returns its figures. Workers run
in this process (a ``worker.run()`` task beside the client) unless worker processes are asked
for. Before the clock starts, one warm-up orchestration proves the worker is running; times
are then taken with ``time.perf_counter`` around what the client does and observes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duratask as dt
from benchmarks.cpu import CpuWindow
from benchmarks.measure import Progress, cpu_seconds, peak_rss_mb, percentile, rss_mb

LIVE = (dt.OrchestrationStatus.PENDING, dt.OrchestrationStatus.RUNNING)
FAILED = (dt.OrchestrationStatus.FAILED, dt.OrchestrationStatus.TERMINATED)
SCHEDULE_CONCURRENCY = 32
POLL_INTERVAL = 0.01


@dataclass(frozen=True, slots=True)
class PgTarget:
    """Where W1 finds the PostgreSQL backends serving the trial: the server's URL and the
    ``application_name`` the trial's store URL gives its connections."""

    url: str
    application_name: str


# -- orchestrations and activities --------------------------------------------------------------

# perf_counter() of each bump_stamped call, in this process: W4's per-step progress.
STAMPS: list[float] = []


async def bump(ctx: dt.ActivityContext, value: int) -> int:
    """The trivial activity."""
    return value + 1


async def bump_stamped(ctx: dt.ActivityContext, value: int) -> int:
    """The trivial activity, noting when it ran (W4 runs its worker in this process)."""
    STAMPS.append(time.perf_counter())
    return value + 1


async def sequence(ctx: dt.OrchestrationContext, steps: int) -> int:
    """``steps`` activities one after the other (W1, W3)."""
    value = 0
    for _ in range(steps):
        value = await ctx.call_activity(bump, input=value)
    return value


async def chain(ctx: dt.OrchestrationContext, steps: int) -> int:
    """W4's long chain: as :func:`sequence`, with stamped steps."""
    value = 0
    for _ in range(steps):
        value = await ctx.call_activity(bump_stamped, input=value)
    return value


async def fan_out(ctx: dt.OrchestrationContext, width: int) -> int:
    """W2: ``width`` activities at once, then their sum."""
    results = await dt.when_all([ctx.call_activity(bump, input=i) for i in range(width)])
    return sum(results)


async def wait_event(ctx: dt.OrchestrationContext, _: object = None) -> int:
    """W5: wait for the external event ``go`` and return its data."""
    value: int = await ctx.wait_for_external_event("go")
    return value


def tally(ctx: dt.EntityContext, amount: Any) -> int:
    """W6's entity: ``add`` counts, ``get`` returns the count."""
    count: int = ctx.get_state(int, 0)
    if ctx.operation_name == "add":
        count += amount
        ctx.set_state(count)
    return count


async def call_tally(ctx: dt.OrchestrationContext, calls: int) -> int:
    """W6: ``calls`` sequential ``call_entity`` round trips."""
    count = 0
    for _ in range(calls):
        count = await ctx.call_entity("@tally@calls", "add", 1)
    return count


ORCHESTRATIONS: tuple[Callable[..., Any], ...] = (
    sequence,
    chain,
    fan_out,
    wait_event,
    call_tally,
)
ACTIVITIES: tuple[Callable[..., Any], ...] = (bump, bump_stamped)


def new_worker(url: str) -> dt.TaskHubWorker:
    """A worker with the benchmark's orchestrations, activities and entity, default options."""
    worker = dt.TaskHubWorker(url)
    for orchestration in ORCHESTRATIONS:
        worker.add_orchestration(orchestration)
    for activity in ACTIVITIES:
        worker.add_activity(activity)
    worker.add_entity(tally)
    return worker


# -- running workers ------------------------------------------------------------------------------


# The in-process worker running now, if any (its store's request counts, on Azure).
_RUNNING: list[dt.TaskHubWorker] = []


def storage_calls() -> int | None:
    """The requests the running in-process worker's store has sent (Azure counts them)."""
    calls = getattr(_RUNNING[-1].store, "calls", None) if _RUNNING else None
    return sum(calls.values()) if calls is not None else None


@contextlib.asynccontextmanager
async def in_process_worker(url: str) -> AsyncIterator[dt.TaskHubWorker]:
    worker = new_worker(url)
    task = asyncio.create_task(worker.run())
    _RUNNING.append(worker)
    try:
        yield worker
    finally:
        _RUNNING.remove(worker)
        await worker.shutdown()
        await asyncio.wait_for(task, timeout=120)


@contextlib.asynccontextmanager
async def worker_processes(url: str, count: int) -> AsyncIterator[list[subprocess.Popen[str]]]:
    """``count`` worker processes (``python -m benchmarks.worker_proc URL``), each ready."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker_proc", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            if line.strip() != "ready":
                raise RuntimeError(f"worker process {proc.pid} did not start (said {line!r})")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


@contextlib.asynccontextmanager
async def workers(url: str, processes: int) -> AsyncIterator[list[int] | None]:
    """Workers for a hub: in this process (``processes == 0``, yields None) or in
    subprocesses (yields their pids)."""
    if processes <= 0:
        async with in_process_worker(url):
            yield None
    else:
        async with worker_processes(url, processes) as procs:
            yield [proc.pid for proc in procs]


# -- client helpers -------------------------------------------------------------------------------


async def warm_up(client: dt.AsyncTaskHubClient) -> None:
    """Run one small orchestration to the end: a worker is up and the code paths are warm."""
    iid = await client.schedule_new_orchestration(sequence, input=1)
    state = await client.wait_for_orchestration_completion(iid, timeout=120)
    state.raise_if_failed()


async def schedule_many(
    client: dt.AsyncTaskHubClient, orchestration: Callable[..., Any], inputs: Iterable[Any]
) -> list[str]:
    """Schedule one instance per input, a few requests in flight at a time."""
    slots = asyncio.Semaphore(SCHEDULE_CONCURRENCY)

    async def one(value: Any) -> str:
        async with slots:
            return await client.schedule_new_orchestration(orchestration, input=value)

    return list(await asyncio.gather(*(one(v) for v in inputs)))


async def any_with_status(
    client: dt.AsyncTaskHubClient, statuses: Iterable[dt.OrchestrationStatus]
) -> bool:
    page = await client.query_orchestrations(statuses=statuses, page_size=1)
    return bool(page.states)


async def count_with_status(
    client: dt.AsyncTaskHubClient, statuses: Iterable[dt.OrchestrationStatus]
) -> int:
    """One grouped count in the store: cheap enough to run inside a timed window."""
    counts = await client.count_orchestrations()
    return sum(counts[status] for status in statuses)


async def wait_until_none(
    client: dt.AsyncTaskHubClient,
    statuses: Iterable[dt.OrchestrationStatus],
    progress: Progress,
    total: int,
) -> None:
    """Poll (every 10 ms) until no instance has one of ``statuses``; every 2 s, count how
    many are left, for the progress record."""
    wanted = tuple(statuses)
    counted = time.perf_counter()
    while await any_with_status(client, wanted):
        if time.perf_counter() - counted >= 2.0:
            progress.update(total - await count_with_status(client, wanted), total)
            counted = time.perf_counter()
        await asyncio.sleep(POLL_INTERVAL)


async def wait_each(client: dt.AsyncTaskHubClient, ids: list[str], progress: Progress) -> None:
    """Wait for each instance to finish, in order."""
    for done, instance_id in enumerate(ids, 1):
        await client.wait_for_orchestration_completion(instance_id, timeout=24 * 3600)
        progress.update(done, len(ids))


async def wait_one(client: dt.AsyncTaskHubClient, instance_id: str) -> dt.OrchestrationState:
    """Poll one instance every 10 ms until it has finished (tighter than the client's
    back-off, so a single long run is timed to within 10 ms)."""
    while True:
        state = await client.get_orchestration_state(instance_id)
        if state is not None and state.runtime_status.is_terminal:
            return state
        await asyncio.sleep(POLL_INTERVAL)


async def check_all_completed(client: dt.AsyncTaskHubClient, expected: int) -> None:
    failed = await count_with_status(client, FAILED)
    if failed:
        raise RuntimeError(f"{failed} of {expected} orchestrations did not complete")


def store_seconds(state: dt.OrchestrationState) -> float:
    """Creation to completion as the store recorded it."""
    end = state.completed_at or state.last_updated_at
    return (end - state.created_at).total_seconds()


# -- the workloads --------------------------------------------------------------------------------


async def w1_sequence(
    url: str, params: dict[str, Any], progress: Progress, pg: PgTarget | None = None
) -> dict[str, Any]:
    """N orchestrations of ``activities`` sequential activities, scheduled together.

    Also the CPU time of the worker side (this process, or the worker processes) and, on
    PostgreSQL (``pg``), of the server backends serving the trial, over the same window."""
    n = int(params["orchestrations"])
    steps = int(params.get("activities", 5))
    processes = int(params.get("worker_processes", 0))
    async with dt.AsyncTaskHubClient(url) as client, workers(url, processes) as pids:
        await warm_up(client)
        progress.restart()
        window = CpuWindow(
            worker_pids=pids,
            pg_url=pg.url if pg else None,
            application_name=pg.application_name if pg else None,
        )
        window.open()
        calls_before = storage_calls()
        started = time.perf_counter()
        ids = await schedule_many(client, sequence, [steps] * n)
        scheduled = time.perf_counter() - started
        if url.startswith("azure:"):
            # A status query reads the whole Instances table there: polling one every
            # 10 ms would measure the client's scans, so the client waits on each instance.
            await wait_each(client, ids, progress)
        else:
            await wait_until_none(client, LIVE, progress, n)
        elapsed = time.perf_counter() - started
        cpu = window.close(n * steps)
        calls_after = storage_calls()
        await check_all_completed(client, n)
    if calls_before is not None and calls_after is not None:
        cpu["storage_calls_per_activity"] = (calls_after - calls_before) / (n * steps)
    return cpu | {
        "seconds": elapsed,
        "schedule_seconds": scheduled,
        "orch_per_s": n / elapsed,
        "act_per_s": n * steps / elapsed,
        "orchestrations": n,
        "activities_each": steps,
        "worker_processes": processes,
    }


async def w2_fan_out(url: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """One orchestration running ``width`` activities in parallel and summing them."""
    width = int(params["activities"])
    async with dt.AsyncTaskHubClient(url) as client, workers(url, 0):
        await warm_up(client)
        started = time.perf_counter()
        iid = await client.schedule_new_orchestration(fan_out, input=width)
        state = await wait_one(client, iid)
        elapsed = time.perf_counter() - started
    state.raise_if_failed()
    expected = sum(range(1, width + 1))
    if state.output != expected:
        raise RuntimeError(f"fan-out sum was {state.output!r}, expected {expected}")
    return {
        "seconds": elapsed,
        "store_seconds": store_seconds(state),
        "act_per_s": width / elapsed,
        "activities": width,
    }


async def w3_latency(url: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """One-activity orchestrations, scheduled and awaited one at a time by the client."""
    n = int(params["orchestrations"])
    client_ms: list[float] = []
    store_ms: list[float] = []
    async with dt.AsyncTaskHubClient(url) as client, workers(url, 0):
        await warm_up(client)
        for i in range(n):
            started = time.perf_counter()
            iid = await client.schedule_new_orchestration(sequence, input=1)
            state = await client.wait_for_orchestration_completion(iid, timeout=60)
            client_ms.append((time.perf_counter() - started) * 1000)
            state.raise_if_failed()
            store_ms.append(store_seconds(state) * 1000)
            progress.update(i + 1, n)
    return {
        "p50_ms": percentile(client_ms, 50),
        "p99_ms": percentile(client_ms, 99),
        "store_p50_ms": percentile(store_ms, 50),
        "store_p99_ms": percentile(store_ms, 99),
        "samples": n,
    }


async def w4_chain(url: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """One orchestration of ``steps`` sequential activities."""
    steps = int(params["steps"])
    STAMPS.clear()
    async with dt.AsyncTaskHubClient(url) as client, workers(url, 0):
        await warm_up(client)
        STAMPS.clear()
        progress.restart()
        started = time.perf_counter()
        iid = await client.schedule_new_orchestration(chain, input=steps)
        while True:
            state = await client.get_orchestration_state(iid)
            if state is not None and state.runtime_status.is_terminal:
                break
            progress.update(len(STAMPS), steps, _step_rates(STAMPS, started))
            await asyncio.sleep(POLL_INTERVAL)
        elapsed = time.perf_counter() - started
    state.raise_if_failed()
    if state.output != steps:
        raise RuntimeError(f"chain returned {state.output!r}, expected {steps}")
    return {
        "seconds": elapsed,
        "ms_per_step": elapsed / steps * 1000,
        "steps": steps,
        **_step_rates(STAMPS, started),
    }


def _step_rates(stamps: list[float], started: float, window: int = 50) -> dict[str, float]:
    """ms per step over the first and the latest ``window`` steps (shows growth in a run)."""
    if len(stamps) < 2 * window:
        return {}
    first = (stamps[window] - stamps[0]) / window * 1000
    last = (stamps[-1] - stamps[-1 - window]) / window * 1000
    return {"first_ms_per_step": first, "last_ms_per_step": last}


async def w5_idle(url: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """``instances`` orchestrations waiting on an event: the worker's memory and CPU while
    they wait, then the time to deliver one event to each and see them all complete."""
    n = int(params["instances"])
    window = float(params.get("idle_window", 5.0))
    baseline_mb = rss_mb()
    async with dt.AsyncTaskHubClient(url) as client, workers(url, 0):
        await warm_up(client)
        progress.phase("start all and reach the wait")
        started = time.perf_counter()
        ids = await schedule_many(client, wait_event, [None] * n)
        await wait_until_none(client, (dt.OrchestrationStatus.PENDING,), progress, n)
        setup = time.perf_counter() - started
        progress.measured(setup_seconds=setup)
        progress.phase("idle")
        await asyncio.sleep(1.0)  # let the last episodes' commits settle
        gc.collect()
        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        await asyncio.sleep(window)
        cpu_used, wall = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
        idle_rss = rss_mb()
        progress.measured(rss_mb=idle_rss, idle_cpu_pct=cpu_used / wall * 100)
        progress.phase("deliver the events")
        started = time.perf_counter()
        slots = asyncio.Semaphore(SCHEDULE_CONCURRENCY)

        async def deliver(index: int, iid: str) -> None:
            async with slots:
                await client.raise_orchestration_event(iid, "go", data=index)

        await asyncio.gather(*(deliver(i, iid) for i, iid in enumerate(ids)))
        await wait_until_none(client, LIVE, progress, n)
        delivered = time.perf_counter() - started
        await check_all_completed(client, n)
    return {
        "rss_mb": idle_rss,
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": peak_rss_mb(),
        "idle_cpu_pct": cpu_used / wall * 100,
        "setup_seconds": setup,
        "deliver_seconds": delivered,
        "instances": n,
        "idle_window_s": wall,
        "pid": os.getpid(),
    }


# -- W6: entities ---------------------------------------------------------------------------------


async def w6_entities(url: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Signals to ``entities`` entities, all sent before the worker starts, then processed:
    signals per second from the worker's start until every count is right. Then
    ``calls`` sequential ``call_entity`` round trips from one orchestration, timed by the
    store (from the episode that called to the one that received the result)."""
    signals, entities, calls = int(params["signals"]), int(params["entities"]), int(params["calls"])
    keys = [f"k{i}" for i in range(entities)]
    async with dt.AsyncTaskHubClient(url) as client:
        progress.phase("send")
        for start in range(0, signals, SCHEDULE_CONCURRENCY):
            batch = range(start, min(start + SCHEDULE_CONCURRENCY, signals))
            await asyncio.gather(
                *(client.signal_entity(f"@tally@{keys[i % entities]}", "add", 1) for i in batch)
            )
        progress.phase("process")
        async with workers(url, 0):
            started = time.perf_counter()
            while (done := await _tallied(client, entities)) < signals:
                progress.update(done, signals)
                await asyncio.sleep(POLL_INTERVAL)
            seconds = time.perf_counter() - started
            progress.phase("calls")
            iid = await client.schedule_new_orchestration(call_tally, input=calls)
            state = await client.wait_for_orchestration_completion(iid, timeout=600)
            state.raise_if_failed()
            round_trips = _call_round_trips(await client.get_orchestration_history(iid))
    return {
        "signals_per_s": signals / seconds,
        "seconds": seconds,
        "call_p50_ms": percentile(round_trips, 50),
        "call_p99_ms": percentile(round_trips, 99),
        "signals": signals,
    }


async def _tallied(client: dt.AsyncTaskHubClient, entities: int) -> int:
    if entities == 1:
        found = await client.get_entity("@tally@k0")
        return int(found.state) if found is not None else 0
    total, token = 0, None
    while True:
        page = await client.query_entities(name="tally", continuation_token=token, page_size=1000)
        total += sum(int(e.state) for e in page.entities)
        token = page.continuation_token
        if token is None:
            return total


def _call_round_trips(history: list[dt.HistoryEvent]) -> list[float]:
    """Milliseconds from each call's episode to the episode that received its result."""
    from duratask import history as h

    called: dict[int, float] = {}
    episode_at = 0.0
    out: list[float] = []
    for event in history:
        if isinstance(event, h.OrchestratorStarted):
            episode_at = event.timestamp.timestamp()
        elif isinstance(event, h.EntityOperationCalled):
            called[event.event_id] = episode_at
        elif isinstance(event, h.EntityOperationCompleted) and event.task_scheduled_id in called:
            out.append((episode_at - called.pop(event.task_scheduled_id)) * 1000)
    return out


async def w7_idle_schedules(url: str, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """``schedules`` schedules none of which is due during the window: the CPU the worker
    spends meanwhile (it sleeps until the earliest due time, polling at most every second)."""
    n = int(params["schedules"])
    window = float(params.get("idle_window", 5.0))
    async with dt.AsyncTaskHubClient(url) as client, workers(url, 0):
        await warm_up(client)
        progress.phase("create the schedules")
        started = time.perf_counter()
        first = datetime.now(UTC) + timedelta(hours=1)
        for index in range(n):
            spec = dt.ScheduleSpec(
                intervals=[dt.Interval(timedelta(days=1), offset=timedelta(seconds=index))],
                start_at=first,
            )
            await client.create_schedule(f"idle-{index}", wait_event, spec)
        setup = time.perf_counter() - started
        progress.phase("idle")
        await asyncio.sleep(1.0)  # let the worker see them all
        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        await asyncio.sleep(window)
        cpu_used, wall = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
        progress.measured(idle_cpu_pct=cpu_used / wall * 100)
    return {
        "idle_cpu_pct": cpu_used / wall * 100,
        "setup_seconds": setup,
        "schedules": n,
        "idle_window_s": wall,
    }


WORKLOADS = {
    "W1": w1_sequence,
    "W2": w2_fan_out,
    "W3": w3_latency,
    "W4": w4_chain,
    "W5": w5_idle,
    "W6": w6_entities,
    "W7": w7_idle_schedules,
}


async def run(
    workload: str,
    url: str,
    params: dict[str, Any],
    progress: Progress,
    pg: PgTarget | None = None,
) -> Any:
    if workload == "W1":
        return await w1_sequence(url, params, progress, pg)
    return await WORKLOADS[workload](url, params, progress)
