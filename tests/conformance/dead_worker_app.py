"""An app for the dead-worker tests: run as ``python -m tests.conformance.dead_worker_app URL
WORKDIR WORKER_ID`` it is a worker whose activity records its run and then hangs (until the
test kills the process); imported, the same activity records its run and returns."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import duratask as dt

RUNS = "runs.jsonl"
DEAD_LEASE = timedelta(minutes=2)  # what the killed worker's leases would make others wait
_hang = False
_workdir: list[Path] = []


def configure(workdir: Path) -> None:
    _workdir[:] = [workdir]


def record_then_hang(ctx: dt.ActivityContext, value: str) -> str:
    line = {"pid": os.getpid(), "attempt": ctx.attempt, "delivery": ctx.delivery_count}
    fd = os.open(_workdir[0] / RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)
    if _hang:
        threading.Event().wait()
    return value


async def ships(ctx: dt.OrchestrationContext, order: str) -> str:
    shipped: str = await ctx.call_activity(
        record_then_hang,
        input=order,
        retry_policy=dt.RetryPolicy(
            max_number_of_attempts=3, first_retry_interval=timedelta(seconds=1)
        ),
    )
    return shipped


def runs() -> list[dict[str, int]]:
    path = _workdir[0] / RUNS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def worker(url: str, **options: Any) -> dt.TaskHubWorker:
    made = dt.TaskHubWorker(url, **options)
    made.add_orchestration(ships)
    made.add_activity(record_then_hang)
    return made


if __name__ == "__main__":
    store_url, workdir, worker_id = sys.argv[1:4]
    configure(Path(workdir))
    _hang = True
    asyncio.run(worker(store_url, worker_id=worker_id, lease_duration=DEAD_LEASE).run())
