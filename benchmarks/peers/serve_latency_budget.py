"""Where W3's time goes through ``duratask serve``: a timeline of one-activity orchestrations.

Runs W3 as ``--compare durabletask-sdk-serve`` does (the SDK's client and worker in this
process, ``duratask serve`` on a SQLite hub in a process of its own), with the client's
calls, the worker's steps and the server's RPCs, stream sends, store calls and durable
``COMMIT`` s stamped, and prints, for each, the median time from the client's start at which
it happened. ``--backend memory`` runs the SDK's in-memory backend instead (client and
worker stamps only: its steps are not instrumented). Stamps are ``time.perf_counter()``,
which on Linux is the same clock in both processes. The wrapping costs a few microseconds a
step: read it for the budget, not as the W3 figure.

    python -m benchmarks.peers.serve_latency_budget                  # 200 orchestrations
    python -m benchmarks.peers.serve_latency_budget --backend memory

Stamps: ``C`` the client, ``W`` the SDK worker, ``S`` the server; ``>`` a call begins, ``<``
it returns; ``#n`` the n-th of that stamp in one orchestration.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Stamps = list[tuple[str, float]]
STAMPS: Stamps = []


def stamp(label: str) -> None:
    STAMPS.append((label, time.perf_counter()))


def _stamped(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)
    if asyncio.iscoroutinefunction(original):

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            stamp(label + " >")
            try:
                return await original(*args, **kwargs)
            finally:
                stamp(label + " <")

        setattr(owner, name, timed_async)
        return

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        stamp(label + " >")
        try:
            return original(*args, **kwargs)
        finally:
            stamp(label + " <")

    setattr(owner, name, timed)


def _serve_stamped(out: str, cli_args: list[str]) -> None:
    """``duratask serve`` with its steps stamped; the stamps go to ``out`` at exit."""
    from duratask.backends.sqlite import _database, _store
    from duratask.cli.main import main
    from duratask.serve import server, work_items

    for rpc in (
        "StartInstance",
        "WaitForInstanceCompletion",
        "CompleteOrchestratorTask",
        "CompleteActivityTask",
    ):
        _stamped(server.Sidecar, rpc, f"S.{rpc}")
    items = server.Sidecar.GetWorkItems

    async def sent(self: Any, request: Any, context: Any) -> Any:
        async for item in items(self, request, context):
            stamp("S.stream sends " + str(item.WhichOneof("request")))
            yield item

    server.Sidecar.GetWorkItems = sent  # type: ignore[method-assign]
    store = _store.SqliteOrchestrationService
    _stamped(store, "create_and_lease_instance", "S.create and lease")
    _stamped(store, "commit_episode", "S.commit_episode")
    _stamped(store, "get_instance", "S.get_instance")
    _stamped(store, "get_history", "S.get_history")
    _stamped(_database.Database, "_commit_durably", "S.durable COMMIT")
    _stamped(work_items, "prepare", "S.plan (events for the worker)")
    _stamped(work_items, "finish", "S.plan (the commit)")
    atexit.register(lambda: Path(out).write_text(json.dumps(STAMPS)))
    main(cli_args)


def _worker_stamped() -> None:
    """Stamp the SDK worker: each work item it receives, its runs, its completion calls."""
    import durabletask.worker as sdk_worker
    from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc

    stub_init: Any = pb_grpc.TaskHubSidecarServiceStub.__init__

    def init(self: Any, channel: Any, *args: Any, **kwargs: Any) -> None:
        stub_init(self, channel, *args, **kwargs)
        if "aio" in type(channel).__module__:
            return  # the client's
        for name in ("CompleteOrchestratorTask", "CompleteActivityTask"):
            _stamped(self, name, f"W.{name}")
        get_items = self.GetWorkItems

        def received(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return _Received(get_items(*args, **kwargs))

        self.GetWorkItems = received

    pb_grpc.TaskHubSidecarServiceStub.__init__ = init  # type: ignore[method-assign]
    _stamped(sdk_worker.TaskHubGrpcWorker, "_execute_orchestrator", "W.runs orchestrator")
    _stamped(sdk_worker.TaskHubGrpcWorker, "_execute_activity", "W.runs activity")


class _Received:
    """The worker's stream of work items, stamped as each arrives."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> _Received:
        return self

    def __next__(self) -> Any:
        item = next(self._stream)
        stamp("W.receives " + str(item.WhichOneof("request")))
        return item

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _timeline(stamps: Stamps, starts: list[float]) -> list[tuple[float, str, int]]:
    """Per stamp (numbered within its orchestration): the median ms from the start, and in
    how many orchestrations it appeared."""
    offsets: dict[str, list[float]] = {}
    bounds = [*starts, float("inf")]
    j = 0
    for i, start in enumerate(starts):
        seen: dict[str, int] = {}
        while j < len(stamps) and stamps[j][1] < bounds[i + 1]:
            label, at = stamps[j]
            j += 1
            if at < start:
                continue
            seen[label] = seen.get(label, 0) + 1
            offsets.setdefault(f"{label} #{seen[label]}", []).append((at - start) * 1000)
    half = len(starts) / 2
    rows = [(statistics.median(v), k, len(v)) for k, v in offsets.items() if len(v) >= half]
    return sorted(rows)


def run(backend: str, orchestrations: int) -> None:
    from durabletask.client import AsyncTaskHubGrpcClient
    from durabletask.testing import create_test_backend
    from durabletask.worker import TaskHubGrpcWorker

    from benchmarks.peers import durabletask_sdk_workloads as sdk

    _worker_stamped()
    port = sdk.free_port()
    folder = Path(tempfile.mkdtemp(prefix="duratask-serve-budget-"))
    server_stamps = folder / "server.json"
    proc: subprocess.Popen[bytes] | None = None
    memory: Any = None
    if backend == "serve":
        argv = [sys.executable, "-m", "benchmarks.peers.serve_latency_budget", "--as-server"]
        argv += [str(server_stamps), "serve", "--store", f"sqlite:///{folder / 'hub.db'}"]
        argv += ["--port", str(port)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sdk.wait_listening(port, proc)
    else:
        memory = create_test_backend(port=port)
    address = f"localhost:{port}"
    worker = TaskHubGrpcWorker(
        host_address=address, logger=sdk.quiet_logger("worker"), emit_trace_spans=False
    )
    for orchestrator in sdk.ORCHESTRATORS:
        worker.add_orchestrator(orchestrator)
    for activity in sdk.ACTIVITIES:
        worker.add_activity(activity)
    worker.start()  # type: ignore[no-untyped-call]
    starts: list[float] = []
    took: list[float] = []

    async def w3() -> None:
        client = AsyncTaskHubGrpcClient(
            host_address=address, logger=sdk.quiet_logger("client"), emit_trace_spans=False
        )
        for _ in range(5):
            await sdk.warm_up(client)
        STAMPS.clear()
        for _ in range(orchestrations):
            started = time.perf_counter()
            starts.append(started)
            stamp("C.start >")
            iid = await sdk.start(client, sdk.sequence, 1)
            stamp("C.start <")
            await client.wait_for_orchestration_completion(iid, timeout=60)
            stamp("C.wait <")
            took.append((time.perf_counter() - started) * 1000)
        await client.close()

    try:
        asyncio.run(w3())
    finally:
        worker.stop()  # type: ignore[no-untyped-call]
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if memory is not None:
            memory.stop()
    stamps = list(STAMPS)
    if proc is not None:
        stamps += [(label, at) for label, at in json.loads(server_stamps.read_text())]
    stamps.sort(key=lambda s: s[1])
    print(f"{backend}: {orchestrations} orchestrations, p50 {statistics.median(took):.2f} ms")
    for ms, label, count in _timeline(stamps, starts):
        print(f"{ms:8.2f} ms  {label}" + ("" if count == orchestrations else f"  ({count})"))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--as-server"]:
        _serve_stamped(args[1], args[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["serve", "memory"], default="serve")
    parser.add_argument("--orchestrations", type=int, default=200)
    options = parser.parse_args(args)
    run(options.backend, options.orchestrations)


if __name__ == "__main__":
    main()
