"""An SDK worker process for crash tests: ``python sdk_worker_proc.py ADDRESS MARKER_DIR``.

Registers the crash test's functions; ``slow`` writes ``MARKER_DIR/<input>.started`` and
then hangs, so a test can kill this process in the middle of an activity; ``kills`` notes
its run in ``MARKER_DIR/kills.runs`` and ends the process.
"""

from __future__ import annotations

import os
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


def kills(ctx: task.ActivityContext, name: str) -> str:
    """Poison: takes the worker process down, every time it runs."""
    if MARKERS is not None:
        with (MARKERS / "kills.runs").open("a") as runs:
            runs.write(f"{name}\n")
        os._exit(3)
    return "survived"


def calls_a_killer(ctx: task.OrchestrationContext, name: str) -> Any:
    try:
        return (yield ctx.call_activity(kills, input=name))
    except task.TaskFailedError as failure:
        return f"gave up: {failure.details.error_type}: {failure.details.message}"


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
    for orchestrator in (slow_flow, counting, calls_a_killer):
        w.add_orchestrator(orchestrator)
    for activity in (slow, step, kills):
        w.add_activity(activity)


if __name__ == "__main__":
    MARKERS = Path(sys.argv[2])
    w = worker.TaskHubGrpcWorker(host_address=sys.argv[1])
    register(w)
    w.start()  # type: ignore[no-untyped-call]
    print("ready", flush=True)
    threading.Event().wait()
