"""The quick-start demo: an order process run end to end on a local SQLite task hub.

Run with ``make demo``. It starts a worker in the background, schedules an orchestration,
approves it with an external event, waits for the result and prints the history as a timeline.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duratask as dt


@dataclass
class Order:
    order_id: str
    items: list[str]
    amount: float


@dataclass
class Receipt:
    order_id: str
    charged: float


def charge(ctx: dt.ActivityContext, order: Order) -> Receipt:
    """An activity: the real work (here, pretend to charge a card)."""
    return Receipt(order_id=order.order_id, charged=order.amount)


async def ship(ctx: dt.ActivityContext, item: str) -> str:
    """Activities may be async too."""
    await asyncio.sleep(0)
    return f"shipped {item}"


async def notify(ctx: dt.OrchestrationContext, receipt: Receipt) -> str:
    """A sub-orchestration."""
    emailed: str = await ctx.call_activity(send_email, input=f"receipt for {receipt.order_id}")
    return emailed


def send_email(ctx: dt.ActivityContext, text: str) -> str:
    return f"emailed: {text}"


async def process_order(ctx: dt.OrchestrationContext, order: Order) -> dict[str, object]:
    """The orchestration: it only coordinates, every step is recorded durably."""
    retry = dt.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=3)
    receipt: Receipt = await ctx.call_activity(charge, input=order, retry_policy=retry)
    ctx.set_custom_status({"stage": "awaiting approval"})
    approved = await ctx.wait_for_external_event("approval", timeout=timedelta(days=3))
    shipped = await dt.when_all([ctx.call_activity(ship, input=item) for item in order.items])
    await ctx.create_timer(timedelta(milliseconds=200))
    note = await ctx.call_sub_orchestrator(
        notify, input=receipt, instance_id=f"{ctx.instance_id}:notify"
    )
    ctx.set_custom_status({"stage": "done"})
    return {"approved_by": approved, "shipped": shipped, "notification": note}


def main() -> None:
    # The hub lives in a temporary folder that goes when the demo ends, also on an error.
    with tempfile.TemporaryDirectory(prefix="duratask-demo-") as folder:
        run(Path(folder) / "hub.db")


def run(hub: Path) -> None:
    """The demo on a SQLite task hub at ``hub``."""
    store = f"sqlite:///{hub}"
    worker = dt.TaskHubWorker(store)
    worker.add_orchestration(process_order)
    worker.add_orchestration(notify)
    for activity in (charge, ship, send_email):
        worker.add_activity(activity)

    with worker, dt.TaskHubClient(store) as client:
        order = Order("order-42", ["book", "lamp"], 42.5)
        iid = client.schedule_new_orchestration(process_order, input=order, instance_id="order-42")
        print(f"started {iid} on {hub}")
        client.wait_for_orchestration_start(iid, timeout=30)
        client.raise_orchestration_event(iid, "approval", data="alice")
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        state.raise_if_failed()
        print(f"status: {state.runtime_status.name}")
        print(f"output: {state.output}")
        print(f"custom status: {state.custom_status}")
        print("history:")
        print(dt.format_timeline(client.get_orchestration_history(iid)))


if __name__ == "__main__":
    main()
