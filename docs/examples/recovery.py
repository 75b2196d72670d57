"""A worker process dies in the middle of an activity; another worker takes its work over."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duratask as dt

STARTED_MARKER: Path | None = None  # set in the worker process that will be killed


# --8<-- [start:workflow]
async def charge(ctx: dt.ActivityContext, order_id: str) -> str:
    if ctx.delivery_count == 1:  # the first delivery: its worker process is killed meanwhile
        say_started()
        await asyncio.sleep(3600)
    return f"charged {order_id} (delivery {ctx.delivery_count})"


async def checkout(ctx: dt.OrchestrationContext, order_id: str) -> str:
    try:
        return await ctx.call_activity(charge, input=order_id)
    except dt.TaskFailedError as failure:
        return f"gave up: {failure.details.error_type}"


# --8<-- [end:workflow]


def say_started() -> None:
    if STARTED_MARKER is not None:
        STARTED_MARKER.touch()


def new_worker(store: str, max_deliveries: int = 10) -> dt.TaskHubWorker:
    worker = dt.TaskHubWorker(store, max_deliveries=max_deliveries)
    worker.add_orchestration(checkout)
    worker.add_activity(charge)
    return worker


# --8<-- [start:crash]
def crash_then_recover(store: str, max_deliveries: int) -> str:
    with dt.TaskHubClient(store) as client, tempfile.TemporaryDirectory() as scratch:
        iid = client.schedule_new_orchestration(checkout, input="order-9")
        started = Path(scratch) / "started"
        doomed = subprocess.Popen([sys.executable, __file__, store, str(started)])
        wait_for(started)
        doomed.kill()  # SIGKILL: the worker dies holding the activity's lease (30 s)
        doomed.wait()

        # A worker starting on the same host sees that the process holding the lease is
        # gone and takes its work over at once; a worker elsewhere would wait for the
        # lease to expire. Either way the activity is delivered again.
        with new_worker(store, max_deliveries):
            return client.wait_for_orchestration_completion(iid, timeout=30).output


def main(store: str) -> dict:
    recovered = crash_then_recover(store, max_deliveries=10)  # the default
    poisoned = crash_then_recover(store, max_deliveries=1)
    return {"recovered": recovered, "poisoned": poisoned}


# --8<-- [end:crash]


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker process did not start the activity in {timeout}s")
        time.sleep(0.05)


if __name__ == "__main__":  # the worker process that is killed mid-activity
    STARTED_MARKER = Path(sys.argv[2])
    with new_worker(sys.argv[1]):
        time.sleep(3600)
