"""The order workflow of "Coming from other frameworks", in duratask."""

from __future__ import annotations

from datetime import timedelta

import duratask as dt
from duratask.testing import SyncTimeSkippingHub


# --8<-- [start:workflow]
def charge(ctx: dt.ActivityContext, order: dict) -> str:
    return f"payment-{order['id']}"


def ship(ctx: dt.ActivityContext, item: str) -> str:
    if item == "fragile vase":
        raise RuntimeError(f"cannot ship {item}")
    return f"shipped {item}"


def refund(ctx: dt.ActivityContext, payment: str) -> None:
    print(f"refunded {payment}")


RETRY = dt.RetryPolicy(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=3)


async def process_order(ctx: dt.OrchestrationContext, order: dict) -> str:
    try:
        approved = await ctx.wait_for_external_event("approval", timeout=timedelta(days=1))
    except dt.EventTimeoutError:
        return "cancelled: not approved in time"
    if not approved:
        return "cancelled: rejected"

    payment = await ctx.call_activity(charge, input=order, retry_policy=RETRY)
    try:
        # Every item ships in parallel; the first failure is raised here.
        await dt.when_all([ctx.call_activity(ship, input=item) for item in order["items"]])
    except dt.TaskFailedError:
        await ctx.call_activity(refund, input=payment, retry_policy=RETRY)  # compensate
        return "refunded"
    return "completed"


# --8<-- [end:workflow]


# --8<-- [start:main]
def main() -> dict:
    orders = {
        "order-1": ({"id": 1, "items": ["teapot", "cups"]}, True),
        "order-2": ({"id": 2, "items": ["teapot"]}, None),  # nobody approves it
        "order-3": ({"id": 3, "items": ["cups", "fragile vase"]}, True),
    }
    # On the test hub the day-long approval timeout passes at once; in production, use a
    # TaskHubWorker and a TaskHubClient on your store instead.
    with SyncTimeSkippingHub() as hub:
        hub.register(process_order, activities=(charge, ship, refund))
        for iid, (order, approval) in orders.items():
            hub.client.schedule_new_orchestration(process_order, input=order, instance_id=iid)
            if approval is not None:
                hub.client.raise_orchestration_event(iid, "approval", data=approval)
        return {iid: hub.client.wait_for_orchestration_completion(iid).output for iid in orders}


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
