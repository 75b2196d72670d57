"""An SDK worker process for crash tests: ``python sdk_worker_proc.py ADDRESS MARKER_DIR``.

Registers the crash test's functions; ``slow`` writes ``MARKER_DIR/<input>.started`` and
then hangs, so a test can kill this process in the middle of an activity.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from durabletask import task, worker

MARKERS: Path | None = None  # set when run as the worker process


def slow(ctx: task.ActivityContext, name: str) -> str:
    if MARKERS is not None:
        (MARKERS / f"{name}.started").write_text("")
        threading.Event().wait()  # hang until killed
    return f"done {name}"


def step(ctx: task.ActivityContext, n: int) -> int:
    threading.Event().wait(0.05)
    return n + 1


def slow_flow(ctx: task.OrchestrationContext, name: str) -> Any:
    return (yield ctx.call_activity(slow, input=name))


def counting(ctx: task.OrchestrationContext, steps: int) -> Any:
    n = 0
    for _ in range(steps):
        n = yield ctx.call_activity(step, input=n)
    return n


def register(w: worker.TaskHubGrpcWorker) -> None:
    for orchestrator in (slow_flow, counting):
        w.add_orchestrator(orchestrator)
    for activity in (slow, step):
        w.add_activity(activity)


if __name__ == "__main__":
    MARKERS = Path(sys.argv[2])
    w = worker.TaskHubGrpcWorker(host_address=sys.argv[1])
    register(w)
    w.start()  # type: ignore[no-untyped-call]
    print("ready", flush=True)
    threading.Event().wait()
