"""Changing an orchestration while instances of the old code are still running."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import duratask as dt
from duratask.testing import HistoryMismatchError, replay


# --8<-- [start:versions]
def send_mail(ctx: dt.ActivityContext, text: str) -> None:
    print("mail:", text)


def check_fraud(ctx: dt.ActivityContext, order_id: str) -> bool:
    return True


def ship(ctx: dt.ActivityContext, order_id: str) -> str:
    return f"shipped {order_id}"


async def approve_order_v1(ctx: dt.OrchestrationContext, order_id: str) -> str:
    await ctx.call_activity(send_mail, input=f"please approve {order_id}")
    ctx.set_custom_status("waiting for approval")
    await ctx.wait_for_external_event("approval")
    return await ctx.call_activity(ship, input=order_id)


async def approve_order_v2(ctx: dt.OrchestrationContext, order_id: str) -> str:
    # New in version 2: a fraud check before anything else. Instances that version 1
    # started have no such step in their history, so they must keep running version 1.
    if not await ctx.call_activity(check_fraud, input=order_id):
        return "refused"
    await ctx.call_activity(send_mail, input=f"please approve {order_id}")
    ctx.set_custom_status("waiting for approval")
    await ctx.wait_for_external_event("approval")
    return await ctx.call_activity(ship, input=order_id)


# --8<-- [end:versions]


# --8<-- [start:deploy]
@contextmanager
def deployment(store: str, versions: dict[str, Callable[..., Any]]) -> Iterator[None]:
    """A worker running the given versions of approve_order (one deployment of the app)."""
    worker = dt.TaskHubWorker(store)
    for version, orchestration in versions.items():
        worker.add_orchestration(orchestration, name="approve_order", version=version)
    for activity in (send_mail, check_fraud, ship):
        worker.add_activity(activity)
    with worker:
        yield


def wait_for_custom_status(client: dt.TaskHubClient, instance_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while (state := client.get_orchestration_state(instance_id)) is None or (
        state.custom_status != status
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{instance_id} never reported {status!r}")
        time.sleep(0.01)


def main(store: str = "memory://versioning") -> dict:
    with dt.TaskHubClient(store) as client:
        with deployment(store, {"1": approve_order_v1}):
            client.schedule_new_orchestration(
                "approve_order", input="order-1", instance_id="order-1", version="1"
            )
            wait_for_custom_status(client, "order-1", "waiting for approval")
        # The next deployment runs version 2 for new instances and keeps version 1 until
        # the instances pinned to it have finished.
        with deployment(store, {"1": approve_order_v1, "2": approve_order_v2}):
            client.schedule_new_orchestration(
                "approve_order", input="order-2", instance_id="order-2", version="2"
            )
            results = {}
            for iid in ("order-1", "order-2"):
                client.raise_orchestration_event(iid, "approval")
                state = client.wait_for_orchestration_completion(iid, timeout=30)
                results[iid] = f"{state.output} (version {state.version})"

        # Why version 1 had to stay: the new code does not replay the old history.
        try:
            replay(approve_order_v2, client.get_orchestration_history("order-1"))
        except HistoryMismatchError as mismatch:
            results["replaying order-1 with version 2"] = mismatch.detail
    return results


# --8<-- [end:deploy]

if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key}: {value}")
