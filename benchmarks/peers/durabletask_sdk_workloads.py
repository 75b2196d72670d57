"""W1-W5 written for Microsoft's Durable Task Python SDK (the ``durabletask`` package), run by
``--compare durabletask-sdk`` beside duratask's in-memory store.

The SDK is a client and a worker that talk gRPC to a backend. Its only backend that runs
in-process is the in-memory test backend of ``durabletask.testing`` (a gRPC server on a local
port, state in dictionaries): **nothing is durable**, so it is compared with duratask's
``memory`` store, which is not durable either. Each trial starts that backend on a free port
in its own process, a ``TaskHubGrpcWorker`` (its own thread and event loop, work items on a
thread pool) and an ``AsyncTaskHubGrpcClient``; orchestrators are generator functions, as the
SDK requires, and activities plain functions.

Two configurations (see :data:`CONFIGS` and benchmarks/README.md): ``dtsdk-default`` (the
SDK's defaults) and ``dtsdk-best`` (the fastest found). Both give the SDK's loggers level
WARNING: by default they write an INFO line to stderr for every schedule, step and completion,
which would measure the terminal rather than the engine (duratask's INFO records are dropped
the same way: trials log at WARNING).

``--compare durabletask-sdk-serve`` runs the same SDK worker and client against ``duratask
serve`` (a process of its own, as deployed) on the trial's SQLite or PostgreSQL hub:
durable, unlike the in-memory backend. Its two configurations (``dtsdk-serve-default``,
``dtsdk-serve-best``) set the SDK as above.

Requires the optional package ``durabletask`` (``pip install durabletask``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from durabletask import task
from durabletask.client import AsyncTaskHubGrpcClient, OrchestrationState, OrchestrationStatus
from durabletask.testing import create_test_backend
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker

from benchmarks.cpu import CpuWindow
from benchmarks.hubs import HubPlace
from benchmarks.measure import Progress, cpu_seconds, peak_rss_mb, percentile, rss_mb

SCHEDULE_CONCURRENCY = 32
WAITS_IN_FLIGHT = 4  # of the in-memory backend's 10 server threads (see wait_all)
WAIT_TIMEOUT = 24 * 3600.0  # the trial's own timeout bounds every wait

# perf_counter() of each stamped activity (W4 progress), and how many W5 instances wait.
STAMPS: list[float] = []
WAITING = [0]


# -- configurations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SdkSetup:
    """One way to run the SDK. None leaves the SDK's default."""

    concurrency: dict[str, int] = field(default_factory=dict)  # ConcurrencyOptions(...)
    emit_trace_spans: bool | None = None
    serve: bool = False  # duratask serve on the trial's hub, not the in-memory backend


CONFIGS: dict[str, SdkSetup] = {
    "dtsdk-default": SdkSetup(),
    # The fastest combination measured (benchmarks/README.md says how it was chosen): no
    # trace spans from worker and client. Thread pools of 2 or 16 workers instead of the
    # default (CPUs + 4) were not faster on W1.
    "dtsdk-best": SdkSetup(emit_trace_spans=False),
    "dtsdk-serve-default": SdkSetup(serve=True),
    "dtsdk-serve-best": SdkSetup(emit_trace_spans=False, serve=True),
}


# -- orchestrators and activities -------------------------------------------------------------


def bump(ctx: task.ActivityContext, value: int) -> int:
    return value + 1


def bump_stamped(ctx: task.ActivityContext, value: int) -> int:
    STAMPS.append(time.perf_counter())
    return value + 1


def sequence(ctx: task.OrchestrationContext, steps: int) -> Generator[task.Task[Any], Any, int]:
    value = 0
    for _ in range(steps):
        value = yield ctx.call_activity(bump, input=value)
    return value


def chain(ctx: task.OrchestrationContext, steps: int) -> Generator[task.Task[Any], Any, int]:
    value = 0
    for _ in range(steps):
        value = yield ctx.call_activity(bump_stamped, input=value)
    return value


def fan_out(ctx: task.OrchestrationContext, width: int) -> Generator[task.Task[Any], Any, int]:
    results = yield task.when_all([ctx.call_activity(bump, input=i) for i in range(width)])
    return sum(results)


def wait_event(ctx: task.OrchestrationContext, _: Any) -> Generator[task.Task[Any], Any, int]:
    if not ctx.is_replaying:
        WAITING[0] += 1  # only tells this process the instance reached its wait
    value: int = yield ctx.wait_for_external_event("go")
    return value


ORCHESTRATORS: tuple[Callable[..., Any], ...] = (sequence, chain, fan_out, wait_event)
ACTIVITIES: tuple[Callable[..., Any], ...] = (bump, bump_stamped)


# -- the hub: backend, worker, client -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def quiet_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(f"duratask-bench.{name}")
    logger.setLevel(logging.WARNING)
    return logger


@dataclass(slots=True)
class Hub:
    backend: Any
    worker: TaskHubGrpcWorker
    client: AsyncTaskHubGrpcClient


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Return once ``proc`` (a ``duratask serve``) listens on ``port``; kill it and raise
    if it exits or does not listen within 30 s."""
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"duratask serve exited with code {proc.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("duratask serve did not listen within 30 s")
        time.sleep(0.05)


def start_serve(url: str, port: int) -> subprocess.Popen[bytes]:
    """``duratask serve`` on ``url``, once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "duratask.cli", "serve", "--store", url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc)
    return proc


class _Serve:
    """A ``duratask serve`` process, stopped as the test backend is."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_hub(setup: SdkSetup, max_history: int, place: HubPlace | None = None) -> Hub:
    port = free_port()
    backend: Any
    if setup.serve:
        assert place is not None
        backend = _Serve(start_serve(place.duratask_url(), port))
    else:
        backend = create_test_backend(port=port, max_history_size=max_history)
    address = f"localhost:{port}"
    worker_args: dict[str, Any] = {"host_address": address, "logger": quiet_logger("worker")}
    if setup.concurrency:
        worker_args["concurrency_options"] = ConcurrencyOptions(**setup.concurrency)
    if setup.emit_trace_spans is not None:
        worker_args["emit_trace_spans"] = setup.emit_trace_spans
    worker = TaskHubGrpcWorker(**worker_args)
    for orchestrator in ORCHESTRATORS:
        worker.add_orchestrator(orchestrator)
    for activity in ACTIVITIES:
        worker.add_activity(activity)
    worker.start()  # type: ignore[no-untyped-call]
    client_args: dict[str, Any] = {"host_address": address, "logger": quiet_logger("client")}
    if setup.emit_trace_spans is not None:
        client_args["emit_trace_spans"] = setup.emit_trace_spans
    client = AsyncTaskHubGrpcClient(**client_args)
    return Hub(backend, worker, client)


async def stop_hub(hub: Hub) -> None:
    await hub.client.close()
    await asyncio.to_thread(hub.worker.stop)
    await asyncio.to_thread(hub.backend.stop)


async def completed(client: AsyncTaskHubGrpcClient, instance_id: str) -> OrchestrationState:
    """Wait (the backend answers when the instance finishes) and check it completed."""
    state = await client.wait_for_orchestration_completion(instance_id, timeout=WAIT_TIMEOUT)
    if state is None:
        raise RuntimeError(f"instance {instance_id} vanished")
    if state.runtime_status != OrchestrationStatus.COMPLETED:
        raise RuntimeError(f"instance {instance_id} ended {state.runtime_status.name}")
    return state


async def wait_all(client: AsyncTaskHubGrpcClient, ids: list[str]) -> list[Any]:
    """The outputs of all ``ids``, in order. A wait holds one of the backend server's 10
    threads until its instance finishes, so at most :data:`WAITS_IN_FLIGHT` run at once and
    the worker keeps threads for its own calls; a wait on an instance that already finished
    returns at once."""
    slots = asyncio.Semaphore(WAITS_IN_FLIGHT)

    async def one(iid: str) -> Any:
        async with slots:
            return (await completed(client, iid)).get_output()

    return list(await asyncio.gather(*(one(iid) for iid in ids)))


async def start(
    client: AsyncTaskHubGrpcClient, orchestrator: Callable[..., Any], value: Any
) -> str:
    """Schedule one instance (typed loosely: the SDK's signature infers no output type for a
    generator orchestrator)."""
    instance_id: str = await client.schedule_new_orchestration(orchestrator, input=value)
    return instance_id


async def schedule_many(
    client: AsyncTaskHubGrpcClient, orchestrator: Callable[..., Any], inputs: list[Any]
) -> list[str]:
    slots = asyncio.Semaphore(SCHEDULE_CONCURRENCY)

    async def one(value: Any) -> str:
        async with slots:
            return await start(client, orchestrator, value)

    return list(await asyncio.gather(*(one(v) for v in inputs)))


async def warm_up(client: AsyncTaskHubGrpcClient) -> None:
    iid = await start(client, sequence, 1)
    await completed(client, iid)


# -- the workloads -------------------------------------------------------------------------------


async def w1_sequence(hub: Hub, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    n = int(params["orchestrations"])
    steps = int(params.get("activities", 5))
    await warm_up(hub.client)
    window = CpuWindow()
    window.open()
    started = time.perf_counter()
    ids = await schedule_many(hub.client, sequence, [steps] * n)
    scheduled = time.perf_counter() - started
    results = await wait_all(hub.client, ids)
    elapsed = time.perf_counter() - started
    cpu = window.close(n * steps)
    if results != [steps] * n:
        raise RuntimeError("some orchestrations returned a wrong result")
    return cpu | {
        "seconds": elapsed,
        "schedule_seconds": scheduled,
        "orch_per_s": n / elapsed,
        "act_per_s": n * steps / elapsed,
        "orchestrations": n,
        "activities_each": steps,
    }


async def w2_fan_out(hub: Hub, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    width = int(params["activities"])
    await warm_up(hub.client)
    started = time.perf_counter()
    iid = await start(hub.client, fan_out, width)
    total = (await completed(hub.client, iid)).get_output()
    elapsed = time.perf_counter() - started
    if total != sum(range(1, width + 1)):
        raise RuntimeError(f"fan-out sum was {total!r}")
    return {"seconds": elapsed, "act_per_s": width / elapsed, "activities": width}


async def w3_latency(hub: Hub, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    n = int(params["orchestrations"])
    await warm_up(hub.client)
    client_ms: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        iid = await start(hub.client, sequence, 1)
        await completed(hub.client, iid)
        client_ms.append((time.perf_counter() - started) * 1000)
        progress.update(i + 1, n)
    return {
        "p50_ms": percentile(client_ms, 50),
        "p99_ms": percentile(client_ms, 99),
        "samples": n,
    }


async def w4_chain(hub: Hub, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    from benchmarks.workloads import _step_rates

    steps = int(params["steps"])
    await warm_up(hub.client)
    STAMPS.clear()
    progress.restart()
    started = time.perf_counter()
    iid = await start(hub.client, chain, steps)
    waiting = asyncio.ensure_future(completed(hub.client, iid))
    while not waiting.done():
        progress.update(len(STAMPS), steps, _step_rates(STAMPS, started))
        await asyncio.wait([waiting], timeout=0.25)
    result = waiting.result().get_output()
    elapsed = time.perf_counter() - started
    if result != steps:
        raise RuntimeError(f"chain returned {result!r}")
    return {
        "seconds": elapsed,
        "ms_per_step": elapsed / steps * 1000,
        "steps": steps,
        **_step_rates(STAMPS, started),
    }


async def w5_idle(hub: Hub, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    n = int(params["instances"])
    window = float(params.get("idle_window", 5.0))
    await warm_up(hub.client)
    WAITING[0] = 0
    progress.phase("start all and reach the wait")
    started = time.perf_counter()
    ids = await schedule_many(hub.client, wait_event, [None] * n)
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

    async def deliver(index: int, iid: str) -> None:
        async with slots:
            await hub.client.raise_orchestration_event(iid, "go", data=index)

    await asyncio.gather(*(deliver(i, iid) for i, iid in enumerate(ids)))
    results = await wait_all(hub.client, ids)
    delivered = time.perf_counter() - started
    if results != list(range(n)):
        raise RuntimeError("some waiting instances returned a wrong result")
    return {
        "rss_mb": idle_rss,
        "peak_rss_mb": peak_rss_mb(),
        "idle_cpu_pct": cpu_used / wall * 100,
        "setup_seconds": setup_s,
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


def max_history_for(workload: str, params: dict[str, Any]) -> int:
    """The test backend refuses an instance whose history would pass ``max_history_size``
    (10,000 events by default); a chain step adds a handful of events, and the fan-out two
    per activity plus a few, so the limit is raised to fit the workload."""
    size = 10_000
    if workload == "W4":
        size = max(size, 8 * int(params["steps"]) + 100)
    if workload == "W2":
        size = max(size, 4 * int(params["activities"]) + 100)
    return size


def run(
    system: str, workload: str, place: HubPlace, params: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """Start the in-memory backend, a worker and a client configured as ``system``, run
    one workload, stop them."""
    setup = CONFIGS[system]
    if (place.store == "memory") == setup.serve:
        raise ValueError(f"{system} does not run on the {place.store} store")
    baseline_mb = rss_mb()

    async def main() -> dict[str, Any]:
        hub = start_hub(setup, max_history_for(workload, params), place)
        try:
            return await WORKLOADS[workload](hub, params, progress)
        finally:
            await stop_hub(hub)

    metrics = asyncio.run(main())
    if workload == "W5":
        metrics["baseline_rss_mb"] = baseline_mb
    metrics["durabletask_version"] = metadata.version("durabletask")
    return metrics
