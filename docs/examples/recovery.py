"""A worker dies in the middle of an activity; another worker takes its lease over."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import duratask as dt

STARTED = threading.Event()
ATTEMPTS: list[int] = []


# --8<-- [start:workflow]
async def charge(ctx: dt.ActivityContext, order_id: str) -> str:
    ATTEMPTS.append(ctx.attempt)  # 1 the first time, 2 after a worker died running it
    if ctx.attempt == 1:
        STARTED.set()
        await asyncio.sleep(3600)  # the first worker dies during this call
    return f"charged {order_id}"


async def checkout(ctx: dt.OrchestrationContext, order_id: str) -> str:
    try:
        return await ctx.call_activity(charge, input=order_id)
    except dt.TaskFailedError as failure:
        return f"gave up: {failure.details.error_type}"


# --8<-- [end:workflow]


# --8<-- [start:crash]
def crash_then_recover(store: str, max_deliveries: int) -> str:
    STARTED.clear()

    def new_worker() -> dt.TaskHubWorker:
        worker = dt.TaskHubWorker(
            store,
            lease_duration=timedelta(seconds=0.2),  # 30 s by default
            shutdown_grace=timedelta(0),  # stop() abandons running work, as a crash does
            max_deliveries=max_deliveries,
        )
        worker.add_orchestration(checkout)
        worker.add_activity(charge)
        return worker

    with dt.TaskHubClient(store) as client:
        iid = client.schedule_new_orchestration(checkout, input="order-9")
        first = new_worker()
        first.start()
        STARTED.wait(timeout=30)
        first.stop()  # the charge is abandoned mid-call; its lease is still held

        # Another worker (in real life another process or machine) finds the work once the
        # dead worker's lease has expired, and runs the activity again.
        with new_worker():
            return client.wait_for_orchestration_completion(iid, timeout=30).output


def main(store: str = "memory://recovery") -> dict:
    ATTEMPTS.clear()
    recovered = crash_then_recover(store, max_deliveries=10)  # the default
    poisoned = crash_then_recover(store, max_deliveries=1)
    return {"recovered": recovered, "poisoned": poisoned, "attempts": ATTEMPTS}


# --8<-- [end:crash]

if __name__ == "__main__":
    print(main())
